"""One training run, wherever it runs: `python -m training train` and `retrain`, the retrain Lambda (its schedule
and POST /retrain) and any engine that runs this package. The one entry point:

    record = run_training(TrainingRun(store=..., data_uri=..., config=...), trigger="cli", by="...")

A run takes the model's run lock (a lease: a run that dies lets it expire), then goes through the stages below,
each a function of this module, each timed into the run record's `stages`:

    load → validate → prepare → fit → evaluate → convert → gate → publish → self-test → promote

and ends with its record (promoted / passed / rejected / skipped / failed, with reasons: sklambda.runs.RunRecord,
the run's one result type) written to the store, the lock handed back and `notify` told. The gate's checks live in
training.gate, the champion's scoring in training.champion, lineage in training.lineage.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import joblib
import numpy as np
import pandas as pd

from sklambda.contract import DataContract, Task
from sklambda.contract_derivation import derive_contract, encode_frame, frame_to_instances
from sklambda.errors import AliasConflict, ConfigError, DataError, DataRejected, NotFound, RunSkipped, SklambdaError
from sklambda.manifest import (
    Comparison,
    DataFingerprint,
    GoldenSample,
    HeldOutEvaluation,
    Manifest,
    Metric,
    RuntimeSupport,
    StatusRecord,
    utc_now,
)
from sklambda.monitoring import BASELINE_FILE, training_baseline
from sklambda.registry import ServingCheck
from sklambda.runs import DataSummary, GateCheck, Lease, RunLock, RunLog, RunRecord, RunStatus, new_run_id
from sklambda.runtimes import Prediction
from sklambda.serving import labels_to_json, local_self_test, remote_self_test
from sklambda.settings import DEFAULT_RETRAIN_LOCK_SECONDS, RetrainSettings
from sklambda.store import ModelStore
from training import gate
from training.budget import Estimate, RunLimits, check_fits, check_time_left, estimate
from training.champion import Champion, Outputs
from training.config import TrainingConfig, load_config
from training.convert import to_onnx
from training.dataset import DEFAULT_READ_LIMITS, CleanReport, LoadedTable, ReadLimits, clean, load_table
from training.evaluate import evaluate, held_out_evaluation, primary_metric, runtime_parity, servable_by
from training.features import FeatureSet, infer_task, select_features
from training.lineage import library_versions
from training.model import Split, build_model, final_estimator, fit, predict_with_probabilities, split
from training.progress import Progress, Step, describe_rows, size
from training.validation import validate_table

logger = logging.getLogger(__name__)

# How long a run's lock lasts if the run dies without handing it back: the retrain function's setting's default.
DEFAULT_LOCK_SECONDS: float = DEFAULT_RETRAIN_LOCK_SECONDS

# Runs nobody asked for by hand: when their data, configuration and code are the champion's own, they publish
# nothing (status "skipped"). `python -m training train` and `retrain` (trigger "cli") always train.
UNATTENDED_TRIGGERS = frozenset({"schedule", "api"})

Notifier = Callable[[RunRecord], None]


@dataclass(frozen=True)
class TrainingRun:
    """What a run trains and where (the same fields for the command line, the Lambda and an engine)."""

    store: ModelStore
    data_uri: str
    # The model section is final: build it with `model_config` (the name, target and task the run trains).
    config: TrainingConfig
    alias: str = "champion"
    # Asks the serving runtime to load and self-test the published version (raises VersionRefused).
    serving_check: ServingCheck | None = None
    limits: RunLimits = field(default_factory=RunLimits)
    lock_seconds: float = DEFAULT_LOCK_SECONDS
    code_version: str | None = None
    notify: Notifier | None = None
    # False: publish, gate, and leave the alias alone (`train --no-promote`).
    promote: bool = True
    # Validate the data against the champion's contract (drift, label collapse). `train` is a person's explicit
    # request and may change the model's inputs; the gate still decides whether it replaces the champion.
    validate_against_champion: bool = True
    # Runs just before the alias moves (after the gate passed); tests use it to crash a run there.
    before_promotion: Callable[[Manifest], None] | None = None
    # Log lines per stage (Lambda, pipes); the command line passes live progress on a terminal.
    progress: Progress = field(default_factory=Progress)

    @property
    def name(self) -> str:
        return self.config.model.name

    def run_log(self) -> RunLog:
        return RunLog(self.store.objects, self.name)

    def run_lock(self) -> RunLock:
        return RunLock(self.store.objects, self.name, ttl_seconds=self.lock_seconds)


def deployed_run(settings: RetrainSettings, store: ModelStore, **fields: Any) -> TrainingRun:
    """A run as a deployed engine carries it out (the retrain function, a SageMaker job): the model, training
    configuration, alias, lock and serving self-test its settings name; `fields` are the engine's own (data,
    limits, code version, notification, progress)."""
    config = model_config(
        load_config(settings.training_config), store, name=settings.model_name, alias=settings.model_alias
    )
    serving_check = (
        remote_self_test(settings.predict_function_name)
        if settings.predict_function_name
        else local_self_test(store, settings.serving_runtime)
    )
    return TrainingRun(
        store=store,
        config=config,
        alias=settings.model_alias,
        serving_check=serving_check,
        lock_seconds=settings.retrain_lock_seconds,
        **fields,
    )


def model_config(
    config: TrainingConfig,
    store: ModelStore,
    *,
    name: str | None = None,
    target: str | None = None,
    task: str | None = None,
    alias: str = "champion",
) -> TrainingConfig:
    """The configuration a run of model `name` trains with. The name: `name` (--name or $MODEL_NAME, resolved by
    the caller), else [model].name. A model the configuration names takes its target from [model]; an explicit
    `target` that differs is refused rather than guessed at. Another model takes `target` and `task` as given, else
    from its champion in the store (the model a retrain continues), else from [model]."""
    own = config.model
    name = name or own.name
    if name == own.name:
        if target and target != own.target:
            raise ConfigError(
                f"--target {target!r} contradicts the configuration: its model {own.name!r} predicts "
                f"{own.target!r}. To train a model of your own on this table, give it its own name (--name NAME or "
                f"$MODEL_NAME; the configuration's must-hold cases then do not apply to it), or change "
                f"[model].target"
            )
        return config.with_overrides(task=task)
    champion = Champion.of(store, name, alias)
    if champion is not None:
        target = target or champion.manifest.target
        task = task or champion.manifest.task
    return config.with_overrides(name=name, target=target, task=task)


# ------------------------------------------------------------------------------------------------- the run


def reserve_run(run: TrainingRun, *, trigger: str, by: str) -> RunRecord:
    """Take the lock for a run that another invocation will carry out (POST /retrain answers 202 with it) and
    record it as queued. Raises RunInProgress when a run holds the lock."""
    run_id = new_run_id()
    run.run_lock().acquire(run_id, by, started=False)
    record = RunRecord(run_id=run_id, name=run.name, trigger=trigger, status="queued", by=by)
    run.run_log().save(record)
    return record


def release_reservation(run: TrainingRun, record: RunRecord, reason: str) -> RunRecord:
    """The run could not be handed over (the invocation failed): free the lock, record the run as failed."""
    with contextlib.suppress(SklambdaError):
        run.run_lock().adopt(record.run_id, record.by).release()
    failed = record.model_copy(update={"status": "failed", "reason": reason, "finished_at": utc_now()})
    run.run_log().save(failed)
    return failed


def run_training(run: TrainingRun, *, trigger: str, by: str, run_id: str | None = None) -> RunRecord:
    """Carry out one training run and return its record. With `run_id`, the run that `reserve_run` queued.

    Raises RunSkipped (RunInProgress when another run holds the lock) before anything is recorded. Every other
    failure ends in a record with status "failed"; an unexpected exception is re-raised after the record is
    written, so the invocation fails too (in the cloud, its event then goes to the dead-letter queue)."""
    lease, record = _start(run, trigger=trigger, by=by, run_id=run_id)
    started = time.perf_counter()
    # The champion is read (alias, manifest, then its artifact) while the run is recorded and its table loads.
    champion = _in_background(lambda: Champion.of(run.store, run.name, run.alias, prefetch=True))
    record = record.model_copy(update={"status": "running", "started_at": utc_now()})
    log = run.run_log()
    # Recorded as running while the table loads: a copy (the run fills `record` in meanwhile), waited for once the
    # table is loaded (its error then fails the run) and always before the final record is written.
    running = record.model_copy(deep=True)
    recorded = _in_background(lambda: log.save(running))
    unexpected: BaseException | None = None
    try:
        _carry_out(run, record, _RunSteps(run.progress, record, lease, run.lock_seconds), recorded, champion)
    except DataRejected as error:
        _fail(record, "the training data failed validation", error.problems)
    except DataError as error:
        _fail(record, "the training data cannot be used", [str(error)])
    except SklambdaError as error:
        _fail(record, str(error), [])
    except Exception as error:  # a bug or an outage: recorded, then re-raised so the invocation fails
        _fail(record, f"internal error: {type(error).__name__}: {error}", [])
        unexpected = error
    finally:
        with contextlib.suppress(Exception):  # its error, if any, has failed the run already
            recorded()
        if record.status == "failed" and record.version is not None:
            _reject_unpromoted(run, record)
        record.finished_at = utc_now()
        record.duration_seconds = round(time.perf_counter() - started, 3)
        log.save(record)
        if not lease.release():
            logger.warning("run %s: the lock had expired and was taken over before the run ended", record.run_id)
        _notify(run, record)
    if unexpected is not None:
        raise unexpected
    return record


def _start(run: TrainingRun, *, trigger: str, by: str, run_id: str | None) -> tuple[Lease, RunRecord]:
    lock = run.run_lock()
    if run_id is None:
        lease = lock.acquire(new_run_id(), by)
        return lease, RunRecord(run_id=lease.run_id, name=run.name, trigger=trigger, status="queued", by=by)
    lease = lock.adopt(run_id, by)
    try:
        record = run.run_log().get(run_id)
    except NotFound:
        record = RunRecord(run_id=run_id, name=run.name, trigger=trigger, status="queued", by=by)
    if record.status != "queued":
        # A second delivery of the same asynchronous event (Lambda delivers at least once) after the first
        # finished and handed the lock back: that run is done, nothing to train.
        lease.release()
        raise RunSkipped(f"run {run_id} was already carried out ({record.status})", run_id)
    return lease, record


class _RunSteps(Progress):
    """The run's progress: each stage reported as given, its seconds kept in the record, and the lease renewed
    once a quarter of it has passed (a write to the store each time: not after every short stage)."""

    def __init__(self, progress: Progress, record: RunRecord, lease: Lease, lease_seconds: float) -> None:
        super().__init__(progress.log)
        self.progress = progress
        self.record = record
        self.lease = lease
        self.renew_every = lease_seconds / 4
        self.renewed = time.monotonic()

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        with self.progress.step(name, detail) as step:
            yield step
        self.record.stages[name] = round(step.seconds, 3)
        if time.monotonic() - self.renewed >= self.renew_every:
            self.renew()

    def renew(self) -> None:
        """Raises RunInProgress if the lease was lost (it expired and another run took it)."""
        self.lease.renew()
        self.renewed = time.monotonic()


def _carry_out(
    run: TrainingRun,
    record: RunRecord,
    steps: _RunSteps,
    recorded: Callable[[], None],
    reading: Callable[[], Champion | None],
) -> None:
    """`recorded` and `reading` wait for the running record's write and for the champion, both in the background."""
    config = run.config
    champion, table = _champion_and_table(run, steps, recorded, reading)
    frame = table.frame
    record.data = DataSummary(
        uri=table.uri, sha256=table.sha256, files=len(table.files), rows=len(frame), columns=len(frame.columns)
    )
    needed = budget_check(table, run)
    record.estimate = needed.as_dict()
    if champion is not None:
        record.champion_version = champion.version
        unchanged = nothing_new(champion.manifest, table, config, run.code_version)
        if unchanged and record.trigger in UNATTENDED_TRIGGERS:
            record.status = "skipped"
            record.reason = unchanged
            logger.info("run %s skipped: %s", record.run_id, unchanged)
            return
    frame, report = validate(table, config, champion if run.validate_against_champion else None, run.alias, steps)
    trained = train(table, config, code_version=run.code_version, progress=steps, cleaned=(frame, report))
    check_time_left(needed, run.limits, config.budget, "training", run.data_uri)
    comparison, checks = gate_stage(trained, champion, steps)
    record.metric = trained.manifest.metric.name
    record.metrics = trained.manifest.metrics
    record.champion_metrics = comparison.metrics if comparison else None
    record.gate = checks
    stored = publish(run.store, trained.manifest.model_copy(update={"compared_with": comparison}), trained.files, steps)
    record.version = stored.version
    by = f"{record.by} (run {record.run_id})"
    if run.serving_check is not None and not gate.failures(checks):
        checks.append(serving_self_test(run.serving_check, stored, steps))
    refused = gate.failures(checks)
    if refused:
        run.store.set_status(run.name, stored.version, StatusRecord(status="rejected", reason=refused, by=by))
        logger.warning("%s v%s rejected: %s", run.name, stored.version, refused)
        record.status, record.reason = "rejected", refused
        return
    reason = gate.passed_reason(checks)
    # A run that lost its lease must not promote (another run may be promoting): renewed before the promotion,
    # while the verdict is written (another object: the two round trips overlap).
    renewed = _in_background(steps.renew) if run.promote else None
    run.store.record_gate_passed(run.name, stored.version, by=by, reason=reason)  # promotable from here on, not before
    if renewed is None:
        record.status = "passed"
        record.reason = f"passed the gate ({reason}); left a candidate (promotion not requested)"
        return
    renewed()
    record.status, record.reason = promote(run, stored, champion, reason, by, steps)


def _champion_and_table(
    run: TrainingRun, steps: _RunSteps, recorded: Callable[[], None], champion: Callable[[], Champion | None]
) -> tuple[Champion | None, LoadedTable]:
    """The champion (its alias, manifest, and the artifact it is scored with), read in the background while the
    running record is written, and the table, loaded meanwhile: none needs the others, and each is a few round
    trips to the store. Their errors come in the order the steps ran in before: the record's, the champion's,
    the table's."""
    try:
        table = load(run.data_uri, steps, read_limits(run.limits))
    except BaseException:
        recorded()
        champion()
        raise
    recorded()
    return champion(), table


def _in_background[T](function: Callable[[], T]) -> Callable[[], T]:
    """Start `function` in a thread of its own; the returned function waits for its result, or raises its error."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-run")
    future = executor.submit(function)
    executor.shutdown(wait=False)
    return future.result


# ------------------------------------------------------------------------------------------------ the stages


def read_limits(limits: RunLimits) -> ReadLimits:
    """What one load may read: fitted to the run's memory (a Lambda), else the laptop defaults."""
    return DEFAULT_READ_LIMITS if limits.memory_mb is None else ReadLimits.for_memory_mb(limits.memory_mb)


def load(data_uri: str, progress: Progress, limits: ReadLimits = DEFAULT_READ_LIMITS) -> LoadedTable:
    with progress.step("load", data_uri) as step:
        table = load_table(data_uri, limits)
        step.done(describe_rows(len(table.frame), len(table.frame.columns), len(table.files)))
    return table


def budget_check(table: LoadedTable, run: TrainingRun) -> Estimate:
    """Refuse (BudgetExceeded, saying what to do) a table too big for the time and memory the run has."""
    needed = estimate(len(table.frame), len(table.frame.columns), run.config.budget)
    check_fits(needed, run.limits, run.config.budget, run.data_uri)
    return needed


def nothing_new(champion: Manifest, table: LoadedTable, config: TrainingConfig, code_version: str | None) -> str:
    """Why a run would train the champion again ("" when something is new). "New" is any of: a byte of the
    data (the fingerprint over every file), a value of the configuration, the code version. A code version that
    is unknown or "-dirty" (uncommitted edits) is never the same as another."""
    if not code_version or code_version.endswith("-dirty") or champion.code_version != code_version:
        return ""
    if champion.data.sha256 != table.sha256:
        return ""
    if champion.training.get("config") != config.model_dump(mode="json"):
        return ""
    return (
        f"nothing new since champion v{champion.version}: the same data (sha256 {table.sha256[:12]}), "
        f"configuration and code version ({code_version}); nothing published"
    )


def validate(
    table: LoadedTable, config: TrainingConfig, champion: Champion | None, alias: str, progress: Progress
) -> tuple[pd.DataFrame, CleanReport]:
    """Clean the table and check it (rows, classes, and against the champion's contract); raises DataRejected
    with every problem found."""
    target = config.model.target
    against = f"against the contract of {alias} v{champion.version}" if champion else "rows and classes"
    with progress.step("validate", against) as step:
        if target not in table.frame.columns:
            raise DataError(
                f"the target column {target!r} of model {config.model.name!r} is not in the data (its columns: "
                f"{', '.join(map(str, table.frame.columns))}): name the column to predict with --target"
            )
        frame, report = clean(table.frame, target)
        problems = validate_table(frame, config, champion)
        step.done(f"{len(problems)} problem(s)" if problems else "no problems")
    if problems:
        raise DataRejected(problems)
    return frame, report


@dataclass
class TrainedModel:
    """A fitted pipeline with everything needed to publish it (not yet in any store)."""

    pipeline: Any
    manifest: Manifest
    files: dict[str, bytes]
    x_test: pd.DataFrame
    y_test: pd.Series
    config: TrainingConfig
    # Regression: the training targets' min and max (the plausible-range invariant widens it).
    target_range: tuple[float, float] | None = None
    # The pipeline's outputs on x_test, computed once by the evaluate stage (the gate's invariants reuse them).
    held_out_outputs: Outputs | None = None


@dataclass
class Prepared:
    """The cleaned table made ready to fit: task, features, held-out split, metric, the unfitted pipeline."""

    frame: pd.DataFrame
    report: CleanReport
    task: Task
    features: FeatureSet
    parts: Split
    metric: Metric
    pipeline: Any
    contract: DataContract
    # The training rows as the model takes them (encode_frame), once fitted: the baseline counts them again.
    x_train: pd.DataFrame | None = None


@dataclass
class Evaluation:
    metrics: dict[str, float]
    held_out: HeldOutEvaluation | None
    golden: GoldenSample
    outputs: Outputs
    # The held-out rows as the model takes them (encode_frame), which `outputs` are the pipeline's outputs on.
    x_test: pd.DataFrame


def train(
    table: LoadedTable,
    config: TrainingConfig,
    *,
    code_version: str | None = None,
    progress: Progress | None = None,
    cleaned: tuple[pd.DataFrame, CleanReport] | None = None,
) -> TrainedModel:
    """prepare → fit → evaluate → convert on a loaded table: pure computation, no store, no AWS. `cleaned` is
    `clean(table.frame, target)` when the caller has it already (the validate stage cleans)."""
    progress = progress or Progress()
    started = time.perf_counter()
    prepared = prepare(*(cleaned or clean(table.frame, config.model.target)), config, progress)
    fit_seconds = fit_model(prepared, progress)
    evaluation = evaluate_model(prepared, config, progress)
    onnx_bytes, onnx_support = convert(prepared, config, progress)
    files = {"model.joblib": _joblib_bytes(prepared.pipeline)}
    if onnx_bytes is not None:
        files["model.onnx"] = onnx_bytes
    parts = prepared.parts
    runtimes = {"onnx": onnx_support, "sklearn": RuntimeSupport(supported=True, artifact="model.joblib")}
    with progress.step("parity", "golden and held-out rows through each serving runtime") as step:
        runtimes, parity = runtime_parity(
            runtimes,
            files,
            prepared.pipeline,
            prepared.contract,
            evaluation.golden,
            parts.x_test,
            evaluation.outputs.prediction.labels,
            encoded=evaluation.x_test,
            probabilities=evaluation.outputs.prediction.probabilities,
        )
        step.done(servable_by(runtimes))
    # What the monitor compares live traffic with (sklambda/monitoring.py), checksummed with the version.
    # Counted on the encoded rows: the same numbers and categories as the raw ones give, without encoding again.
    encoded_train = parts.x_train if prepared.x_train is None else prepared.x_train
    baseline = training_baseline(encoded_train, prepared.contract, evaluation.outputs.prediction.labels)
    files[BASELINE_FILE] = baseline.to_bytes()
    manifest = Manifest(
        name=config.model.name,
        version=0,  # the store assigns the number at publish
        task=prepared.task,
        target=config.model.target,
        estimator=_describe_estimator(final_estimator(prepared.pipeline)),
        data=DataFingerprint(
            uri=table.uri, sha256=table.sha256, rows=len(prepared.frame), columns=list(map(str, table.frame.columns))
        ),
        contract=prepared.contract,
        metric=prepared.metric,
        metrics=evaluation.metrics,
        classes=prepared.contract.classes,
        golden=evaluation.golden,
        runtimes=runtimes,
        parity=parity,
        libraries=dict(library_versions()),
        code_version=code_version,
        training={
            "config": config.model_dump(mode="json"),
            "pipeline": _describe_pipeline(prepared.pipeline, config, prepared.task),
            "rows": {"train": len(parts.x_train), "test": len(parts.x_test), "cleaning": prepared.report.describe()},
            "features_left_out": prepared.features.left_out,
            "fit_seconds": round(fit_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
        },
        held_out=evaluation.held_out,
    )
    logger.info("trained %s: %s", config.model.name, ", ".join(f"{k}={v}" for k, v in evaluation.metrics.items()))
    target_range = None
    if prepared.task == "regression":
        target_range = (float(parts.y_train.min()), float(parts.y_train.max()))
    return TrainedModel(
        pipeline=prepared.pipeline,
        manifest=manifest,
        files=files,
        x_test=parts.x_test,
        y_test=parts.y_test,
        config=config,
        target_range=target_range,
        held_out_outputs=evaluation.outputs,
    )


def prepare(frame: pd.DataFrame, report: CleanReport, config: TrainingConfig, progress: Progress) -> Prepared:
    target = config.model.target
    with progress.step("prepare", "task, features, held-out split") as step:
        task = infer_task(frame[target], config.model.task)
        if task == "classification" and pd.api.types.is_float_dtype(frame[target]):
            frame[target] = frame[target].astype("int64")  # 0.0/1.0 read from a CSV with gaps
        features = select_features(frame, config)
        parts = split(frame, features, target, task, config)
        classes = sorted(parts.y_train.unique().tolist()) if task == "classification" else None
        contract = derive_contract(
            parts.x_train,
            numeric=features.numeric,
            categorical=features.categorical,
            target=target,
            task=task,
            classes=classes,
        )
        prepared = Prepared(
            frame=frame,
            report=report,
            task=task,
            features=features,
            parts=parts,
            metric=primary_metric(config, task),
            pipeline=build_model(config, task, features),
            contract=contract,
        )
        step.done(
            f"{task}, {len(features.names)} features, {len(parts.x_train):,} rows to fit, "
            f"{len(parts.x_test):,} held out"
        )
    return prepared


def fit_model(prepared: Prepared, progress: Progress) -> float:
    """Fit the pipeline; the contract then records the classes as the fitted model orders them."""
    parts = prepared.parts
    estimator = final_estimator(prepared.pipeline)
    with progress.step("fit", f"{type(estimator).__name__} on {len(parts.x_train):,} rows"):
        prepared.x_train = encode_frame(parts.x_train, prepared.contract)
        seconds = fit(prepared.pipeline, prepared.x_train, parts.y_train)
    if prepared.task == "classification":
        classes = labels_to_json(prepared.pipeline.classes_)
        prepared.contract = replace(prepared.contract, classes=classes)
    return seconds


def evaluate_model(prepared: Prepared, config: TrainingConfig, progress: Progress) -> Evaluation:
    parts, pipeline, metric = prepared.parts, prepared.pipeline, prepared.metric
    with progress.step("evaluate", f"{len(parts.x_test):,} held-out rows, feature importance") as step:
        x_test = encode_frame(parts.x_test, prepared.contract)
        # Once, for the metrics, the report's summaries and the gate's invariants.
        labels, probabilities = predict_with_probabilities(pipeline, x_test)
        outputs = Outputs(Prediction(labels=labels, probabilities=probabilities), getattr(pipeline, "classes_", None))
        predictions = outputs.prediction.labels
        metrics = evaluate(outputs, x_test, parts.y_test, prepared.task, predictions)
        held_out = held_out_evaluation(
            pipeline, x_test, parts.y_test, prepared.task, metric, config.evaluation, predictions
        )
        golden = golden_sample(outputs, parts.x_test, prepared.contract, config.evaluation.golden_rows)
        step.done(f"{metric.name}={metrics.get(metric.name)} on {len(parts.x_test):,} held-out rows")
    return Evaluation(metrics=metrics, held_out=held_out, golden=golden, outputs=outputs, x_test=x_test)


def convert(prepared: Prepared, config: TrainingConfig, progress: Progress) -> tuple[bytes | None, RuntimeSupport]:
    with progress.step("convert", "to ONNX (skl2onnx)") as step:
        onnx_bytes, support = to_onnx(prepared.pipeline, prepared.contract, config.onnx.converters)
        step.done(
            f"ONNX, {size(onnx_bytes)}" if onnx_bytes is not None else "no ONNX: scikit-learn serving runtime only"
        )
    return onnx_bytes, support


def golden_sample(outputs: Outputs, x_test: pd.DataFrame, contract: DataContract, rows: int) -> GoldenSample:
    """Held-out rows with the pipeline's outputs, stored with the version: serving must reproduce them. The first
    `rows` held-out rows, their outputs taken from `outputs` (the pipeline's on every held-out row, computed once by
    the evaluate stage: predicting them again alone gave the same floats, at ~10 ms a pipeline call)."""
    sample = x_test.head(rows)
    labels = outputs.prediction.labels[: len(sample)]
    scores = outputs.prediction.probabilities if contract.task == "classification" else None
    predictions = labels_to_json(np.asarray(labels))
    probabilities = None
    if scores is not None:
        probabilities = np.asarray(scores)[: len(sample)].tolist()
    else:
        predictions = [float(value) for value in predictions]
    return GoldenSample(
        instances=frame_to_instances(sample, contract.names), predictions=predictions, probabilities=probabilities
    )


def gate_stage(
    trained: TrainedModel, champion: Champion | None, progress: Progress
) -> tuple[Comparison | None, list[GateCheck]]:
    """Every gate check that needs no published version: the metric rule against the champion on the same
    held-out rows, the must-hold cases of this model, the output invariants."""
    challenger, config = trained.manifest, trained.config
    against = f"vs champion v{champion.version}" if champion else "no champion yet"
    with progress.step("gate", f"{against}: metric rule, cases, invariants") as step:
        comparison, checks = gate.champion_checks(challenger, trained.x_test, trained.y_test, champion, config.gate)
        cases = config.cases_for(challenger.name)
        case_outputs, probe_outputs = gate.predict_cases_and_probes(trained.pipeline, challenger.contract, cases)
        checks.extend(gate.case_checks(trained.pipeline, challenger.contract, cases, case_outputs))
        checks.extend(
            gate.invariant_checks(
                trained.pipeline,
                challenger.contract,
                trained.x_test,
                challenger.task,
                target_range=trained.target_range,
                margin=config.gate.regression_range_margin,
                known=trained.held_out_outputs,
                probe_outputs=probe_outputs,
            )
        )
        step.done(f"{against}: {sum(check.passed for check in checks)} of {len(checks)} checks passed")
    return comparison, checks


def publish(store: ModelStore, manifest: Manifest, files: dict[str, bytes], progress: Progress) -> Manifest:
    """Store a new immutable version (a candidate until the gate's verdict is recorded)."""
    total = sum(len(data) for data in files.values())
    with progress.step("publish", f"{len(files) + 1} files, {size(total)}") as step:
        stored = store.publish(manifest, files, awaiting_gate=True)
        step.done(f"v{stored.version}: {len(files) + 1} files, {size(total)}")
    return stored


def serving_self_test(serving_check: ServingCheck, stored: Manifest, progress: Progress) -> GateCheck:
    with progress.step("self-test", f"the serving runtime loads v{stored.version}") as step:
        check = gate.self_test_check(serving_check, stored)
        step.done("reproduced its golden outputs" if check.passed else "refused")
    return check


def promote(
    run: TrainingRun, stored: Manifest, champion: Champion | None, reason: str, by: str, progress: Progress
) -> tuple[RunStatus, str]:
    """Move the alias to the version by compare-and-swap on the state the run started from: (status, reason)."""
    name = run.name
    with progress.step("promote", f"{run.alias} → v{stored.version}") as step:
        if run.before_promotion is not None:
            run.before_promotion(stored)
        expected = champion.state if champion else None
        try:
            run.store.promote(name, stored.version, alias=run.alias, by=by, reason=reason, expected=expected)
        except AliasConflict as error:
            step.done("the alias moved meanwhile")
            return "rejected", f"passed the gate, but {error}"
        run.store.set_status(name, stored.version, StatusRecord(status="promoted", reason=reason, by=by))
        step.done("promoted")
    logger.info("%s v%s promoted to %s: %s", name, stored.version, run.alias, reason)
    return "promoted", reason


# ----------------------------------------------------------------------------------------------- the ending


def _fail(record: RunRecord, reason: str, problems: list[str]) -> None:
    record.status = "failed"
    record.reason = reason
    record.data_problems = problems
    logger.error("run %s failed: %s", record.run_id, reason + "".join(f"\n  - {p}" for p in problems))


def _reject_unpromoted(run: TrainingRun, record: RunRecord) -> None:
    """A run that failed after publishing leaves its version rejected, so nobody promotes it by mistake."""
    assert record.version is not None
    name = run.name
    try:
        if run.store.status(name, record.version).status == "candidate":
            run.store.set_status(
                name,
                record.version,
                StatusRecord(status="rejected", reason=f"run {record.run_id} failed: {record.reason}", by=record.by),
            )
    except SklambdaError as error:
        logger.warning("could not mark %s v%s rejected: %s", name, record.version, error)


def _notify(run: TrainingRun, record: RunRecord) -> None:
    if run.notify is None:
        return
    try:
        run.notify(record)
    except SklambdaError as error:  # a lost notification must not turn a finished run into a failed one
        logger.warning("run %s: notification failed: %s", record.run_id, error)


def _joblib_bytes(pipeline: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    return buffer.getvalue()


def _describe_estimator(estimator: Any) -> str:
    return f"{type(estimator).__module__}.{type(estimator).__name__}"


def _describe_pipeline(pipeline: Any, config: TrainingConfig, task: str) -> dict[str, Any]:
    """Where the pipeline came from, and its steps (the report shows them)."""
    source = (
        {"factory": config.pipeline.factory}
        if config.pipeline is not None
        else {"preprocessing": "standard", "estimator": getattr(config.estimator, task)}
    )
    return {**source, "steps": _step_names(pipeline)}


def _step_names(pipeline: Any, prefix: str = "") -> list[str]:
    """`features/numeric/ratios: RatioFeatures`-style paths of every step, nested ones included."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    names: list[str] = []
    if isinstance(pipeline, Pipeline):
        for name, step in pipeline.steps:
            names.extend(_step_names(step, f"{prefix}{name}/"))
    elif isinstance(pipeline, ColumnTransformer):
        for name, step, _columns in getattr(pipeline, "transformers_", pipeline.transformers):
            if not isinstance(step, str):
                names.extend(_step_names(step, f"{prefix}{name}/"))
    else:
        names.append(f"{prefix.rstrip('/')}: {type(pipeline).__name__}")
    return names
