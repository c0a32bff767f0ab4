"""A retrain run, the one code path behind `python -m training retrain` and the retrain Lambda:

take the run lock → load the data → validate it (against the champion's contract) → check the time and memory
budget → train → publish → gate → promote → write the run record → notify.

Every run ends with a record (promoted / rejected / failed, with reasons); the lock is handed back in all
cases, and a run that dies without handing it back (killed, out of memory) leaves a lease that expires.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sklambda.errors import DataError, DataRejected, NotFound, RunSkipped, SklambdaError
from sklambda.manifest import Manifest, StatusRecord, utc_now
from sklambda.runs import DataSummary, Lease, RunLock, RunLog, RunRecord, new_run_id
from sklambda.runtimes.sklearn import load_pipeline
from sklambda.store import ModelStore
from training.budget import Limits, check_fits, check_time_left, estimate
from training.config import TrainingConfig
from training.dataset import clean
from training.flow import ServingCheck, load, publish_and_gate, train
from training.progress import Progress
from training.validation import validate_table

logger = logging.getLogger(__name__)

# Longer than the Lambda's 15-minute maximum: a live run never loses its lease; a dead one frees it soon after.
DEFAULT_LOCK_SECONDS = 960.0

Notifier = Callable[[RunRecord], None]


@dataclass(frozen=True)
class RunContext:
    """Where and how a run happens (the same for the command line and the Lambda, with different values)."""

    store: ModelStore
    data_uri: str
    config: TrainingConfig
    alias: str = "champion"
    serving_check: ServingCheck | None = None
    limits: Limits = field(default_factory=Limits)
    lock_seconds: float = DEFAULT_LOCK_SECONDS
    code_version: str | None = None
    notify: Notifier | None = None
    # Runs just before the alias moves (after the gate passed); tests use it to crash a run there.
    before_promotion: Callable[[Manifest], None] | None = None
    # Log lines per step (Lambda, pipes); the command line passes live progress on a terminal.
    progress: Progress = field(default_factory=Progress)

    @property
    def name(self) -> str:
        return self.config.model.name

    def run_log(self) -> RunLog:
        return RunLog(self.store.objects, self.name)

    def run_lock(self) -> RunLock:
        return RunLock(self.store.objects, self.name, ttl_seconds=self.lock_seconds)


def reserve_run(context: RunContext, *, trigger: str, by: str) -> RunRecord:
    """Take the lock for a run that another invocation will carry out (POST /retrain answers 202 with it) and
    record it as queued. Raises RunInProgress when a run holds the lock."""
    run_id = new_run_id()
    context.run_lock().acquire(run_id, by, started=False)
    record = RunRecord(run_id=run_id, name=context.name, trigger=trigger, status="queued", by=by)
    context.run_log().save(record)
    return record


def release_reservation(context: RunContext, record: RunRecord, reason: str) -> RunRecord:
    """The run could not be handed over (the invocation failed): free the lock, record the run as failed."""
    lock = context.run_lock()
    with contextlib.suppress(SklambdaError):
        lock.adopt(record.run_id, record.by).release()
    failed = record.model_copy(update={"status": "failed", "reason": reason, "finished_at": utc_now()})
    context.run_log().save(failed)
    return failed


def run_retrain(context: RunContext, *, trigger: str, by: str, run_id: str | None = None) -> RunRecord:
    """Carry out one run. With `run_id`, continue the run that `reserve_run` queued; otherwise take the lock now.

    Raises RunSkipped (RunInProgress when another run holds the lock) before anything is recorded. Every other failure
    ends in a record with status "failed"; an unexpected exception is re-raised after the record is written,
    so the invocation fails too (and, in the cloud, its event goes to the dead-letter queue)."""
    lock = context.run_lock()
    log = context.run_log()
    if run_id is not None:
        lease = lock.adopt(run_id, by)
        try:
            record = log.get(run_id)
        except NotFound:
            record = RunRecord(run_id=run_id, name=context.name, trigger=trigger, status="queued", by=by)
        if record.status != "queued":
            # A second delivery of the same asynchronous event (Lambda delivers at least once) after the first
            # finished and handed the lock back: that run is done, nothing to train.
            lease.release()
            raise RunSkipped(f"run {run_id} was already carried out ({record.status})", run_id)
    else:
        lease = lock.acquire(new_run_id(), by)
        record = RunRecord(run_id=lease.run_id, name=context.name, trigger=trigger, status="queued", by=by)
    started = time.perf_counter()
    record = record.model_copy(update={"status": "running", "started_at": utc_now()})
    log.save(record)
    unexpected: BaseException | None = None
    try:
        _carry_out(context, record, lease)
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
        if record.status == "failed" and record.version is not None:
            _reject_unpromoted(context, record)
        record.finished_at = utc_now()
        record.duration_seconds = round(time.perf_counter() - started, 3)
        log.save(record)
        if not lease.release():
            logger.warning("run %s: the lock had expired and was taken over before the run ended", record.run_id)
        _notify(context, record)
    if unexpected is not None:
        raise unexpected
    return record


def _carry_out(context: RunContext, record: RunRecord, lease: Lease) -> None:
    config = context.config
    stage_started = time.perf_counter()

    def stage_done(stage: str) -> None:
        nonlocal stage_started
        now = time.perf_counter()
        record.stages[stage] = round(now - stage_started, 3)
        stage_started = now
        lease.renew()

    progress = context.progress
    table = load(context.data_uri, progress)
    record.data = DataSummary(
        uri=table.uri,
        sha256=table.sha256,
        files=len(table.files),
        rows=len(table.frame),
        columns=len(table.frame.columns),
    )
    stage_done("load")

    needed = estimate(len(table.frame), len(table.frame.columns), config.budget)
    record.estimate = needed.as_dict()
    check_fits(needed, context.limits, config.budget, context.data_uri)

    champion_state = context.store.alias(context.name, context.alias)
    champion = context.store.manifest(context.name, champion_state.record.version) if champion_state else None

    def load_champion() -> object:
        assert champion is not None
        return load_pipeline(context.store.artifact(champion, "model.joblib"))

    against = f"against the contract of {context.alias} v{champion.version}" if champion else f"no {context.alias} yet"
    with progress.step("validate", against) as step:
        frame, report = clean(table.frame, config.model.target)
        problems, _champion_on_new_rows = validate_table(frame, config, champion, load_champion)
        step.done(f"{len(problems)} problem(s)" if problems else "no problems")
    if problems:
        raise DataRejected(problems)
    stage_done("validate")

    trained = train(table, config, code_version=context.code_version, progress=progress, cleaned=(frame, report))
    stage_done("train")
    check_time_left(needed, context.limits, config.budget, "training", context.data_uri)

    def before_promotion(manifest: Manifest) -> None:
        lease.renew()  # raises if the lease was lost: then another run may be promoting, and this one must not
        if context.before_promotion is not None:
            context.before_promotion(manifest)

    def remember_version(manifest: Manifest) -> None:
        record.version = manifest.version

    outcome = publish_and_gate(
        context.store,
        trained,
        alias=context.alias,
        by=f"{record.by} (run {record.run_id})",
        serving_check=_chained(remember_version, context.serving_check) if context.serving_check else None,
        before_promotion=_chained(remember_version, before_promotion),
        progress=progress,
    )
    stage_done("publish_and_gate")
    record.version = outcome.version
    record.metric = outcome.metric.name
    record.metrics = outcome.metrics
    record.champion_version = outcome.champion_version
    record.champion_metrics = outcome.champion_metrics
    record.gate = outcome.checks
    record.status = "promoted" if outcome.promoted else "rejected"
    record.reason = outcome.reason


def _chained(first: Callable[[Manifest], None], then: Callable[[Manifest], None] | None) -> Callable[[Manifest], None]:
    def both(manifest: Manifest) -> None:
        first(manifest)
        if then is not None:
            then(manifest)

    return both


def _fail(record: RunRecord, reason: str, problems: list[str]) -> None:
    record.status = "failed"
    record.reason = reason
    record.data_problems = problems
    logger.error("run %s failed: %s", record.run_id, reason + "".join(f"\n  - {p}" for p in problems))


def _reject_unpromoted(context: RunContext, record: RunRecord) -> None:
    """A run that failed after publishing leaves its version rejected, so nobody promotes it by mistake."""
    assert record.version is not None
    name = context.name
    try:
        if context.store.status(name, record.version).status == "candidate":
            context.store.set_status(
                name,
                record.version,
                StatusRecord(status="rejected", reason=f"run {record.run_id} failed: {record.reason}", by=record.by),
            )
    except SklambdaError as error:
        logger.warning("could not mark %s v%s rejected: %s", name, record.version, error)


def _notify(context: RunContext, record: RunRecord) -> None:
    if context.notify is None:
        return
    try:
        context.notify(record)
    except SklambdaError as error:  # a lost notification must not turn a finished run into a failed one
        logger.warning("run %s: notification failed: %s", record.run_id, error)
