"""The whole flow, one code path for the command line and the retrain Lambda:

load → clean → features → split + fit → evaluate → convert → publish a candidate → gate → move the alias.
"""

from __future__ import annotations

import io
import logging
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from sklambda.contract import DataContract, derive_contract, encode_frame, frame_to_instances
from sklambda.errors import AliasConflict, VersionRefused
from sklambda.manifest import (
    Comparison,
    DataFingerprint,
    GoldenSample,
    Manifest,
    Metric,
    RuntimeSupport,
    StatusRecord,
)
from sklambda.monitoring import BASELINE_FILE, training_baseline
from sklambda.runs import GateCheck
from sklambda.runtimes.sklearn import load_pipeline
from sklambda.serving import labels_to_json
from sklambda.store import AliasState, ModelStore
from training.config import TrainingConfig
from training.convert import to_onnx
from training.dataset import CleanReport, LoadedTable, clean, load_table
from training.evaluate import evaluate, held_out_evaluation, primary_metric
from training.features import infer_task, select_features
from training.gate import case_checks, invariant_checks, metric_checks
from training.model import build_model, final_estimator, fit, split
from training.progress import Progress, describe_rows, size

logger = logging.getLogger(__name__)

LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "skl2onnx", "onnx", "onnxruntime", "joblib")

# Asks the deployed serving runtime to load a stored version and run its self-test; raises VersionRefused.
ServingCheck = Callable[[Manifest], None]


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


@dataclass
class Outcome:
    version: int
    promoted: bool
    reason: str
    metric: Metric
    metrics: dict[str, float]
    champion_version: int | None = None
    champion_metrics: dict[str, float] | None = None
    durations: dict[str, float] = field(default_factory=dict)
    checks: list[GateCheck] = field(default_factory=list)

    def describe(self) -> str:
        score = f"{self.metric.name}={self.metrics.get(self.metric.name)}"
        return f"v{self.version} ({score}): {'promoted' if self.promoted else 'not promoted'}: {self.reason}"


def train(
    table: LoadedTable,
    config: TrainingConfig,
    *,
    code_version: str | None = None,
    progress: Progress | None = None,
    cleaned: tuple[pd.DataFrame, CleanReport] | None = None,
) -> TrainedModel:
    """Stages 2-5 plus conversion, on a loaded table. Pure computation: no store, no AWS. `cleaned` is
    `clean(table.frame, target)` when the caller has it already (a retrain run validates the cleaned table first)."""
    progress = progress or Progress()
    started = time.perf_counter()
    target = config.model.target
    with progress.step("prepare", "clean, task, features, held-out split") as step:
        frame, report = cleaned if cleaned is not None else clean(table.frame, target)
        task = infer_task(frame[target], config.model.task)
        if task == "classification" and pd.api.types.is_float_dtype(frame[target]):
            frame[target] = frame[target].astype("int64")  # 0.0/1.0 read from a CSV with gaps
        features = select_features(frame, config)
        parts = split(frame, features, target, task, config)
        metric = primary_metric(config, task)
        pipeline = build_model(config, task, features)
        step.done(
            f"{task}, {len(features.names)} features, {len(parts.x_train):,} rows to fit, "
            f"{len(parts.x_test):,} held out"
        )
    estimator = final_estimator(pipeline)
    classes = sorted(parts.y_train.unique().tolist()) if task == "classification" else None
    contract = derive_contract(
        parts.x_train,
        numeric=features.numeric,
        categorical=features.categorical,
        target=target,
        task=task,
        classes=classes,
    )
    with progress.step("fit", f"{type(estimator).__name__} on {len(parts.x_train):,} rows"):
        fit_seconds = fit(pipeline, encode_frame(parts.x_train, contract), parts.y_train)
    if classes is not None:
        classes = labels_to_json(pipeline.classes_)
        contract = contract.model_copy(update={"classes": classes})
    with progress.step("evaluate", f"{len(parts.x_test):,} held-out rows, feature importance") as step:
        x_test = encode_frame(parts.x_test, contract)
        predictions = pipeline.predict(x_test)  # once, for the metrics and the report's summaries
        metrics = evaluate(pipeline, x_test, parts.y_test, task, predictions)
        held_out = held_out_evaluation(pipeline, x_test, parts.y_test, task, metric, config.evaluation, predictions)
        golden = golden_sample(pipeline, parts.x_test, contract, config.evaluation.golden_rows)
        step.done(f"{metric.name}={metrics.get(metric.name)} on {len(parts.x_test):,} held-out rows")
    with progress.step("convert", "to ONNX (skl2onnx)") as step:
        onnx_bytes, onnx_support = to_onnx(pipeline, contract, config.onnx.converters)
        step.done(
            f"ONNX, {size(onnx_bytes)}" if onnx_bytes is not None else "no ONNX: scikit-learn serving runtime only"
        )
    files = {"model.joblib": _joblib_bytes(pipeline)}
    # What the monitor compares live traffic with (sklambda/monitoring.py), checksummed with the version.
    files[BASELINE_FILE] = training_baseline(parts.x_train, contract, predictions).to_bytes()
    if onnx_bytes is not None:
        files["model.onnx"] = onnx_bytes
    manifest = Manifest(
        name=config.model.name,
        version=0,  # the store assigns the number at publish
        task=task,
        target=target,
        estimator=_describe_estimator(estimator),
        data=DataFingerprint(
            uri=table.uri, sha256=table.sha256, rows=len(frame), columns=list(map(str, table.frame.columns))
        ),
        contract=contract,
        metric=metric,
        metrics=metrics,
        classes=classes,
        golden=golden,
        runtimes={"onnx": onnx_support, "sklearn": RuntimeSupport(supported=True, artifact="model.joblib")},
        libraries=library_versions(),
        code_version=code_version,
        training={
            "config": config.model_dump(mode="json"),
            "pipeline": _describe_pipeline(pipeline, config, task),
            "rows": {"train": len(parts.x_train), "test": len(parts.x_test), "cleaning": report.describe()},
            "features_left_out": features.left_out,
            "fit_seconds": round(fit_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
        },
        held_out=held_out,
    )
    logger.info("trained %s: %s", config.model.name, ", ".join(f"{k}={v}" for k, v in metrics.items()))
    target_range = None
    if task == "regression":
        target_range = (float(parts.y_train.min()), float(parts.y_train.max()))
    return TrainedModel(
        pipeline=pipeline,
        manifest=manifest,
        files=files,
        x_test=parts.x_test,
        y_test=parts.y_test,
        config=config,
        target_range=target_range,
    )


def golden_sample(pipeline: Any, x_test: pd.DataFrame, contract: DataContract, rows: int) -> GoldenSample:
    sample = x_test.head(rows)
    encoded = encode_frame(sample, contract)
    predictions = labels_to_json(pipeline.predict(encoded))
    probabilities = None
    if contract.task == "classification" and hasattr(pipeline, "predict_proba"):
        probabilities = pipeline.predict_proba(encoded).tolist()
    else:
        predictions = [float(value) for value in predictions]
    return GoldenSample(
        instances=frame_to_instances(sample, contract.names), predictions=predictions, probabilities=probabilities
    )


def publish_and_gate(
    store: ModelStore,
    trained: TrainedModel,
    *,
    alias: str = "champion",
    by: str,
    serving_check: ServingCheck | None = None,
    promote: bool = True,
    before_promotion: Callable[[Manifest], None] | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Publish the trained model as a new version, then move `alias` to it only if every gate check passes:
    the metric rule against the current holder on the same held-out rows ([gate]), the must-hold cases, the
    output invariants, and the serving runtime's load + parity self-test. A failed gate stores the version as
    rejected with the reasons. `before_promotion` runs after the gate, just before the alias moves."""
    progress = progress or Progress()
    name = trained.manifest.name
    # The alias moves only if it still holds this state when we are done (compare-and-swap).
    champion = store.alias(name, alias)
    against = f"vs {alias} v{champion.record.version}" if champion else f"no {alias} yet"
    with progress.step("gate", f"{against}: metric rule, cases, invariants") as step:
        comparison, checks = gate_checks(store, trained, champion)
        step.done(f"{against}: {sum(check.passed for check in checks)} of {len(checks)} checks passed")
    total = sum(len(data) for data in trained.files.values())
    with progress.step("publish", f"{len(trained.files) + 1} files, {size(total)}") as step:
        stored = store.publish(trained.manifest.model_copy(update={"compared_with": comparison}), trained.files)
        step.done(f"v{stored.version}: {len(trained.files) + 1} files, {size(total)}")
    outcome = Outcome(
        version=stored.version,
        promoted=False,
        reason="",
        metric=stored.metric,
        metrics=stored.metrics,
        champion_version=comparison.version if comparison else None,
        champion_metrics=comparison.metrics if comparison else None,
        checks=checks,
    )
    if serving_check is not None and all(check.passed for check in checks):
        with progress.step("self-test", f"the serving runtime loads v{stored.version}") as step:
            try:
                serving_check(stored)
                checks.append(
                    GateCheck(name="serving self-test", passed=True, detail="loaded and reproduced its outputs")
                )
                step.done("reproduced its golden outputs")
            except VersionRefused as error:
                checks.append(
                    GateCheck(name="serving self-test", passed=False, detail=f"the serving runtime refused it: {error}")
                )
                step.done("refused")
    failed = [check for check in checks if not check.passed]
    if failed:
        outcome.reason = "; ".join(f"{check.name}: {check.detail}" for check in failed)
        store.set_status(name, stored.version, StatusRecord(status="rejected", reason=outcome.reason, by=by))
        logger.warning("%s v%s rejected: %s", name, stored.version, outcome.reason)
        return outcome
    reason = _passed_reason(checks)
    if not promote:
        outcome.reason = f"passed the gate ({reason}); left a candidate (promotion not requested)"
        return outcome
    if before_promotion is not None:
        before_promotion(stored)
    try:
        store.promote(name, stored.version, alias=alias, by=by, reason=reason, expected=champion)
    except AliasConflict as error:
        outcome.reason = f"passed the gate, but {error}"
        return outcome
    store.set_status(name, stored.version, StatusRecord(status="promoted", reason=reason, by=by))
    outcome.promoted = True
    outcome.reason = reason
    logger.info("%s v%s promoted to %s: %s", name, stored.version, alias, reason)
    return outcome


def _passed_reason(checks: list[GateCheck]) -> str:
    """The reason recorded with a promotion: how it compares with the champion (every check is in the run record)."""
    for check in checks:
        if check.name == "first version":
            return f"first version: {check.detail}"
        if check.name == "beats champion":
            return check.detail
    return f"{len(checks)} gate checks passed"


def gate_checks(
    store: ModelStore, trained: TrainedModel, champion: AliasState | None
) -> tuple[Comparison | None, list[GateCheck]]:
    """Every gate check that needs no published version: metric rule, must-hold cases, invariants."""
    challenger = trained.manifest
    config = trained.config
    comparison, checks = compare_with_champion(store, trained, champion)
    checks.extend(case_checks(trained.pipeline, challenger.contract, config.cases_for(challenger.name)))
    checks.extend(
        invariant_checks(
            trained.pipeline,
            challenger.contract,
            trained.x_test,
            challenger.task,
            target_range=trained.target_range,
            margin=config.gate.regression_range_margin,
        )
    )
    return comparison, checks


def compare_with_champion(
    store: ModelStore, trained: TrainedModel, champion: AliasState | None
) -> tuple[Comparison | None, list[GateCheck]]:
    """Score the champion on the challenger's held-out rows and apply the [gate] metric rule."""
    challenger = trained.manifest
    metric = challenger.metric
    gate = trained.config.gate
    score = challenger.metrics[metric.name]
    if champion is None:
        checks = metric_checks(score, None, metric, gate, champion_label="", rows=len(trained.y_test))
        return None, [GateCheck(name="first version", passed=True, detail="no champion to compare with"), *checks]
    champion_manifest = store.manifest(challenger.name, champion.record.version)
    where = f"champion v{champion_manifest.version}"
    if champion_manifest.task != challenger.task or champion_manifest.target != challenger.target:
        detail = (
            f"not comparable with {where}: it predicts {champion_manifest.target} ({champion_manifest.task}), "
            f"this predicts {challenger.target} ({challenger.task})"
        )
        return None, [GateCheck(name="comparable", passed=False, detail=detail)]
    missing = sorted(set(champion_manifest.contract.names) - set(trained.x_test.columns))
    if missing:
        detail = f"not comparable with {where}: its features {missing} are not in the new data"
        return None, [GateCheck(name="comparable", passed=False, detail=detail)]
    champion_pipeline = load_pipeline(store.artifact(champion_manifest, "model.joblib"))
    champion_metrics = evaluate(
        champion_pipeline, encode_frame(trained.x_test, champion_manifest.contract), trained.y_test, challenger.task
    )
    comparison = Comparison(version=champion_manifest.version, metrics=champion_metrics)
    champion_score = champion_metrics.get(metric.name)
    if champion_score is None:
        return comparison, [
            GateCheck(name="comparable", passed=False, detail=f"{where} has no {metric.name} on these rows")
        ]
    return comparison, metric_checks(
        score, champion_score, metric, gate, champion_label=where, rows=len(trained.y_test)
    )


def train_and_publish(
    store: ModelStore,
    data_uri: str,
    config: TrainingConfig,
    *,
    by: str,
    alias: str = "champion",
    serving_check: ServingCheck | None = None,
    promote: bool = True,
    code_version: str | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """The one flow behind `python -m training train` and the retrain function."""
    progress = progress or Progress()
    started = time.perf_counter()
    table = load(data_uri, progress)
    loaded = time.perf_counter()
    trained = train(table, config, code_version=code_version, progress=progress)
    trained_at = time.perf_counter()
    outcome = publish_and_gate(
        store, trained, alias=alias, by=by, serving_check=serving_check, promote=promote, progress=progress
    )
    outcome.durations = {
        "load": round(loaded - started, 3),
        "train": round(trained_at - loaded, 3),
        "publish_and_gate": round(time.perf_counter() - trained_at, 3),
    }
    return outcome


def load(data_uri: str, progress: Progress) -> LoadedTable:
    with progress.step("load", data_uri) as step:
        table = load_table(data_uri)
        step.done(describe_rows(len(table.frame), len(table.frame.columns), len(table.files)))
    return table


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


PACKAGE_DIR = Path(__file__).parent
# Written by training/Makefile when `sam build` packs the TrainingCodeLayer: the retrain Lambda has no checkout.
STAMPED_VERSION_FILE = PACKAGE_DIR / "CODE_VERSION"


def code_version() -> str | None:
    """The commit this training code comes from: the version `sam build` stamped, else git in a checkout."""
    if STAMPED_VERSION_FILE.is_file():
        return STAMPED_VERSION_FILE.read_text().strip() or None
    return git_version(PACKAGE_DIR)


def git_version(path: Path) -> str | None:
    """The commit the training code comes from, when it runs from a git checkout (training/Makefile stamps the
    same string into the built layer)."""
    try:
        result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(  # noqa: S603
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


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
