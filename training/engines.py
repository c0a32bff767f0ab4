"""Where a retrain run is carried out: in the retrain Lambda, or handed to a SageMaker Training job.

The run's size estimate (the [budget] model that refuses a table too big for the function) decides when the
engine is `auto`; `lambda` and `sagemaker` force one (template Parameter RetrainEngine). A handed-over run is the
same run: the retrain function reserves the run lock with a lease that covers the job's whole maximum runtime,
records the run as queued with where it goes and why, uploads the code it runs itself (the training layer's own
files, named by the code version, create-only) and starts the state machine that creates the job and waits on
it. The job's entry point (training/sagemaker_job.py) adopts the reservation and runs `run_training`, exactly as
the Lambda's asynchronous worker does. Nothing here imports boto3: the AWS calls are passed in.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import tarfile
import tomllib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fastparquet

import sklambda
from sklambda.errors import (
    BudgetExceeded,
    ConfigError,
    DataError,
    NotFound,
    PreconditionFailed,
    RunSkipped,
    SklambdaError,
)
from sklambda.locations import open_object_store
from sklambda.manifest import utc_now
from sklambda.objects import ObjectStore
from sklambda.runs import EngineRecord, RunLock, RunRecord, new_run_id
from sklambda.settings import EngineSettings
from training.budget import Estimate, RunLimits, check_fits, estimate
from training.config import BudgetSection
from training.dataset import DATA_SUFFIXES, PARQUET_SUFFIXES, check_parquet_framing
from training.pipeline import TrainingRun

logger = logging.getLogger(__name__)

Engine = Literal["lambda", "sagemaker"]

PACKAGE_DIR = Path(__file__).parent
JOB_FILES = PACKAGE_DIR / "jobs"
# The script SageMaker's scikit-learn container runs (hyperparameter sagemaker_program), at the tarball's root.
ENTRY_POINT = "entry.py"
# What the container pip-installs before the entry point runs: the training layer's pins (the versions question:
# the image's scikit-learn is replaced by ours, so a model trained in the job loads wherever the project loads it).
JOB_REQUIREMENTS = JOB_FILES / "requirements.txt"
# What each prebuilt image holds (tag -> versions); tests/unit/test_sagemaker_engine.py holds it against the pins.
IMAGE_TABLE = JOB_FILES / "images.toml"

# Besides the job's maximum runtime, the lease covers the time before the clock starts (the state machine, the
# instance starting, the image pulled, our requirements installed): a live job never loses the run lock.
JOB_START_MARGIN_SECONDS = 1800
# With managed spot training the job may wait this multiple of its runtime for capacity (MaxWaitTimeInSeconds).
SPOT_WAIT_FACTOR = 2
JOB_NAME_MAX = 63


@dataclass(frozen=True)
class Decision:
    engine: Engine
    why: str
    estimate: Estimate | None = None


# ---------------------------------------------------------------- the decision
def measure(data_uri: str) -> tuple[int, int]:
    """Rows x columns of the training table without building it: Parquet footers hold the row count; CSV rows
    are counted as lines (one file in memory at a time, as bytes: a fraction of the DataFrame it would become).
    A quoted field with a line break counts twice: the estimate errs towards SageMaker."""
    rows = 0
    columns = 0
    for name, data in _data_files(data_uri):
        if name.endswith(PARQUET_SUFFIXES):
            check_parquet_framing(name, data)
            try:
                parquet = fastparquet.ParquetFile(io.BytesIO(data))
            except Exception as error:  # fastparquet raises many types for a malformed footer
                raise DataError(f"cannot read the Parquet footer of {name}: {error}") from None
            rows += int(parquet.count())
            columns = max(columns, len(parquet.columns))
        else:
            text = zlib.decompress(data, wbits=31) if name.endswith(".gz") else data
            header, _, body = text.partition(b"\n")
            rows += body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
            columns = max(columns, header.count(b",") + 1)
    return rows, columns


def _data_files(data_uri: str) -> Iterator[tuple[str, bytes]]:
    if data_uri.endswith(DATA_SUFFIXES):
        parent, _, name = data_uri.replace("\\", "/").rpartition("/")
        yield data_uri, open_object_store(parent or ".").get(name).data
        return
    store = open_object_store(data_uri)
    keys = [key for key in store.list("") if key.endswith(DATA_SUFFIXES)]
    if not keys:
        raise DataError(f"no CSV or Parquet files under {data_uri}")
    for key in keys:
        yield store.uri(key), store.get(key).data


def decide(choice: str, settings: EngineSettings, data_uri: str, budget: BudgetSection, limits: RunLimits) -> Decision:
    """Where this run goes. `auto` hands a run to SageMaker exactly when the [budget] estimate would make the
    function refuse it; a table that cannot even be measured stays here (the run then records why)."""
    if choice == "lambda":
        return Decision("lambda", "RetrainEngine is lambda")
    if not settings.hands_over:
        if choice == "sagemaker":
            raise ConfigError(
                "RetrainEngine is sagemaker, but RETRAIN_STATE_MACHINE_ARN, SAGEMAKER_ROLE_ARN or "
                "SAGEMAKER_IMAGE_URI is not set"
            )
        return Decision("lambda", "no SageMaker engine configured")
    if choice == "sagemaker":
        return Decision("sagemaker", "RetrainEngine is sagemaker")
    try:
        rows, columns = measure(data_uri)
    except (DataError, NotFound) as error:
        return Decision("lambda", f"the table could not be measured ({error}); the run reports it")
    needed = estimate(rows, columns, budget)
    try:
        check_fits(needed, limits, budget, data_uri)
    except BudgetExceeded as error:
        problems = str(error).split(": ", 1)[-1].split(" (estimated from", 1)[0]
        return Decision(
            "sagemaker", f"{rows:,} rows x {columns} columns do not fit in the function: {problems}", needed
        )
    return Decision("lambda", f"{rows:,} rows x {columns} columns fit in the function", needed)


# ---------------------------------------------------------------- the code a job runs
def _code_files() -> Iterator[tuple[str, Path]]:
    """(name in the tarball, file) for our own code: the training package and the shared packages next to
    sklambda (in the Lambda both are the layers' /opt/python/...; in a checkout training/ and layers/shared/)."""
    roots = [PACKAGE_DIR, Path(sklambda.__file__).parent]
    examples = Path(sklambda.__file__).parent.with_name("sklambda_examples")
    if examples.is_dir():
        roots.append(examples)
    for root in roots:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or _left_out(relative):
                continue
            yield f"{root.name}/{relative.as_posix()}", path


def _left_out(relative: Path) -> bool:
    # As training/Makefile leaves them out of the layer: data, the build file, caches.
    parts = relative.parts
    return (
        parts[0] in {"data", "Makefile", "CODE_VERSION"}
        or any(part in {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"} for part in parts)
        or relative.suffix in {".pyc", ".pyo"}
    )


def build_sourcedir(code_version: str | None) -> bytes:
    """sourcedir.tar.gz for SageMaker's script mode: entry.py and requirements.txt at the root, our packages
    beside them, and training/CODE_VERSION stamped so the job records the version it was built from. The bytes
    depend on the files only (sorted, no timestamps or owners): the same code gives the same tarball."""
    files: list[tuple[str, bytes]] = [
        (ENTRY_POINT, (JOB_FILES / ENTRY_POINT).read_bytes()),
        ("requirements.txt", JOB_REQUIREMENTS.read_bytes()),
    ]
    files += [(name, path.read_bytes()) for name, path in _code_files()]
    if code_version:
        files.append(("training/CODE_VERSION", f"{code_version}\n".encode()))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for name, data in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload_sourcedir(objects: ObjectStore, model_name: str, code_version: str | None) -> str:
    """Upload the tarball create-only under <model>/jobs/code/<version>-<sha256 prefix>/ and return its URI. The
    name carries the content's hash too: a key never holds other bytes than its name says (a `-dirty` or
    unknown version gets a key per content), and an existing key already holds these bytes."""
    data = build_sourcedir(code_version)
    digest = hashlib.sha256(data).hexdigest()[:12]
    key = f"{model_name}/jobs/code/{code_version or 'unknown'}-{digest}/sourcedir.tar.gz"
    with contextlib.suppress(PreconditionFailed):  # the same code, uploaded by an earlier run
        objects.put(key, data, if_none_match=True)
    return objects.uri(key)


def image_tag(image_uri: str) -> str:
    return image_uri.rsplit("/", 1)[-1].partition(":")[2]


def image_versions(tag: str) -> dict[str, str]:
    """The versions inside a prebuilt image, from the repository's table (ConfigError for an unknown tag)."""
    table = tomllib.loads(IMAGE_TABLE.read_text(encoding="utf-8"))
    if tag not in table:
        raise ConfigError(f"image tag {tag!r} is not in {IMAGE_TABLE.name}; known: {', '.join(sorted(table))}")
    return {name: str(version) for name, version in table[tag].items()}


# ---------------------------------------------------------------- the job request
def job_name(prefix: str, run_id: str) -> str:
    """<stack>-<run id>, lower case (SageMaker's ARNs for a job are lower case, and the state machine's role may
    only create jobs whose ARN starts with the stack's name: a stack name with capitals would match none)."""
    name = f"{prefix}-{run_id}".lower()
    if len(name) > JOB_NAME_MAX:
        raise ConfigError(f"training job name {name!r} is longer than {JOB_NAME_MAX} characters: shorten the prefix")
    return name


def lease_seconds(settings: EngineSettings) -> int:
    """How long the run lock lasts for a job: its whole possible life (spot: the wait for capacity too)."""
    runtime = settings.sagemaker_max_runtime_seconds
    return runtime * (SPOT_WAIT_FACTOR if settings.sagemaker_spot else 1) + JOB_START_MARGIN_SECONDS


@dataclass(frozen=True)
class JobInputs:
    """What a job needs to know about the run besides the engine settings (the retrain function's values)."""

    run_id: str
    model_store_uri: str
    model_name: str
    alias: str
    data_uri: str
    code_uri: str
    output_uri: str
    environment: dict[str, str]


def training_job_request(inputs: JobInputs, settings: EngineSettings) -> dict[str, Any]:
    """The CreateTrainingJob request for one run (the state machine passes it on unchanged): AWS's scikit-learn
    image in script mode, the data prefix as the `train` channel (File mode: copied to local disk before the
    entry point starts), SageMaker's output under the model's jobs/ prefix, the runtime limit, spot or not."""
    if settings.sagemaker_image_uri is None or settings.sagemaker_role_arn is None:
        raise ConfigError("SAGEMAKER_IMAGE_URI and SAGEMAKER_ROLE_ARN are needed to hand a run to SageMaker")
    name = job_name(settings.sagemaker_job_prefix, inputs.run_id)
    runtime = settings.sagemaker_max_runtime_seconds
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": runtime}
    if settings.sagemaker_spot:
        stopping["MaxWaitTimeInSeconds"] = runtime * SPOT_WAIT_FACTOR
    hyperparameters = {
        # The toolkit JSON-decodes every hyperparameter: strings go in JSON-encoded, as the SageMaker SDK does.
        "sagemaker_program": json.dumps(ENTRY_POINT),
        "sagemaker_submit_directory": json.dumps(inputs.code_uri),
        "sagemaker_container_log_level": "20",
    }
    region = {}
    if settings.sagemaker_region:
        hyperparameters["sagemaker_region"] = json.dumps(settings.sagemaker_region)
        region = {"AWS_DEFAULT_REGION": settings.sagemaker_region}  # our clients' region inside the job
    environment = {
        **{key: value for key, value in inputs.environment.items() if value},
        **region,
        "RUN_ID": inputs.run_id,
        "SAGEMAKER_JOB_NAME": name,
        "MODEL_STORE_URI": inputs.model_store_uri,
        "MODEL_NAME": inputs.model_name,
        "MODEL_ALIAS": inputs.alias,
        "DATA_URI": inputs.data_uri,
        "SAGEMAKER_MAX_RUNTIME_SECONDS": str(runtime),
        "RETRAIN_LOCK_SECONDS": str(lease_seconds(settings)),
    }
    return {
        "TrainingJobName": name,
        "RoleArn": settings.sagemaker_role_arn,
        "AlgorithmSpecification": {"TrainingImage": settings.sagemaker_image_uri, "TrainingInputMode": "File"},
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": inputs.data_uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": inputs.output_uri},
        # scikit-learn fits on one machine: scale up (InstanceType), never out.
        "ResourceConfig": {
            "InstanceType": settings.sagemaker_instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": settings.sagemaker_volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": settings.sagemaker_spot,
        "Environment": environment,
    }


# ---------------------------------------------------------------- handing a run over, and its endings
StartExecution = Callable[[str, str, dict[str, Any]], str]


def hand_over(
    context: TrainingRun,
    decision: Decision,
    settings: EngineSettings,
    *,
    trigger: str,
    by: str,
    run_id: str | None,
    environment: dict[str, str],
    start_execution: StartExecution,
) -> RunRecord:
    """Reserve the run lock for the job's whole life, record the run as queued for SageMaker, upload the code and
    start the state machine. With `run_id` (POST /retrain queued it), the reservation is extended to the job's
    lease; without, the lock is taken now (the schedule). Raises RunSkipped/RunInProgress as `run_training`
    does, before anything is recorded."""
    name = context.name
    lock = RunLock(context.store.objects, name, ttl_seconds=lease_seconds(settings))
    log = context.run_log()
    if run_id is None:
        run_id = new_run_id()
        lease = lock.acquire(run_id, by, started=False)
        record = RunRecord(run_id=run_id, name=name, trigger=trigger, status="queued", by=by)
    else:
        lease = lock.adopt(run_id, by)
        try:
            record = log.get(run_id)
        except NotFound:
            record = RunRecord(run_id=run_id, name=name, trigger=trigger, status="queued", by=by)
        if record.status != "queued":
            lease.release()
            raise RunSkipped(f"run {run_id} was already carried out ({record.status})", run_id)
        lease.hand_over()
    request: dict[str, Any] = {}
    try:
        jobs = f"{context.store.uri.rstrip('/')}/{name}/jobs"
        inputs = JobInputs(
            run_id=run_id,
            model_store_uri=context.store.uri,
            model_name=name,
            alias=context.alias,
            data_uri=context.data_uri,
            code_uri=upload_sourcedir(context.store.objects, name, context.code_version),
            output_uri=f"{jobs}/output/",
            environment=environment,
        )
        request = training_job_request(inputs, settings)
        record.engine = EngineRecord(
            engine="sagemaker",
            why=decision.why,
            job_name=request["TrainingJobName"],
            instance_type=settings.sagemaker_instance_type,
            spot=settings.sagemaker_spot,
            max_runtime_seconds=settings.sagemaker_max_runtime_seconds,
        )
        record.estimate = decision.estimate.as_dict() if decision.estimate else None
        log.save(record)
        assert settings.retrain_state_machine_arn is not None  # decide() handed over only when it is set
        record.engine.execution_arn = start_execution(
            settings.retrain_state_machine_arn, request["TrainingJobName"], {"run_id": run_id, "job": request}
        )
    except SklambdaError as error:
        lease.release()
        return _finish(context, record, "failed", f"the run could not be handed to SageMaker: {error}")
    log.save(record)
    logger.info("run %s handed to SageMaker: job %s (%s)", run_id, request["TrainingJobName"], decision.why)
    return record


def job_ended(context: TrainingRun, run_id: str, error: str, cause: str) -> RunRecord:
    """The state machine caught the job's end without a result (failed, timed out, spot capacity never came,
    the container died): a run the job did not finish is recorded failed with SageMaker's reason, and its lock
    is freed. A run the job recorded itself (even failed) keeps its record."""
    record = context.run_log().get(run_id)
    if not record.finished:
        record = _finish(context, record, "failed", f"the SageMaker job ended without a result: {error}: {cause}")
    if context.run_lock().release_run(run_id):
        logger.info("run %s: lock released after its job ended", run_id)
    return record


def reclaim_interrupted_attempt(context: TrainingRun, run_id: str) -> None:
    """A job restarted after a spot interruption runs its entry point again: the run's lock is still held by its
    first attempt and its record says running. Both belong to this job alone (the job name is the run id), so
    the second attempt takes them back as a fresh reservation; any other holder is left alone."""
    lock = context.run_lock()
    held = lock.current()
    if held is None or held.run_id != run_id or not held.started:
        return
    lease = lock.lease_of(run_id)
    if lease is not None:
        lease.hand_over()
    log = context.run_log()
    record = log.get(run_id)
    if record.status == "running":
        log.save(record.model_copy(update={"status": "queued", "reason": "restarted after an interruption"}))


def _finish(context: TrainingRun, record: RunRecord, status: Literal["failed", "stopped"], reason: str) -> RunRecord:
    finished = record.model_copy(update={"status": status, "reason": reason[:1000], "finished_at": utc_now()})
    context.run_log().save(finished)
    if context.notify is not None:
        try:
            context.notify(finished)
        except SklambdaError as error:
            logger.warning("run %s: notification failed: %s", record.run_id, error)
    return finished


def stop(
    context: TrainingRun,
    run_id: str,
    by: str,
    *,
    stop_execution: Callable[[str, str], None],
    stop_job: Callable[[str], None],
) -> RunRecord:
    """Stop a run handed to SageMaker: the execution (which stops its job), the job itself in case the execution
    was already past it, then record the run `stopped` and free its lock. A run in the Lambda cannot be stopped
    (it ends within the function's timeout): ConfigError."""
    record = context.run_log().get(run_id)
    if record.finished:
        raise RunSkipped(f"run {run_id} has already ended ({record.status})", run_id)
    engine = record.engine
    if engine is None or engine.engine != "sagemaker" or engine.job_name is None:
        raise ConfigError(f"run {run_id} runs in the retrain function, which cannot be stopped; it ends by itself")
    reason = f"stopped by {by}"
    if engine.execution_arn:
        with contextlib.suppress(NotFound):
            stop_execution(engine.execution_arn, reason)
    with contextlib.suppress(NotFound):  # not created yet, or already ended
        stop_job(engine.job_name)
    stopped = _finish(context, record, "stopped", reason)
    context.run_lock().release_run(run_id)
    return stopped
