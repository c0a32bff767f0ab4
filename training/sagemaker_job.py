"""A retrain run inside a SageMaker Training job (AWS's scikit-learn container, script mode), and the one command
that runs a job's work on a laptop exactly as the container does.

In the container, training/jobs/entry.py calls `main()`: the settings come from SageMaker's SM_* variables (the
`train` channel copied to local disk, the model dir) and the Environment the retrain function put in the job
request (the run id, the store, the topic). The run is the same `run_training` the Lambda calls: it adopts the
run lock the function reserved (a lease that covers the job's maximum runtime), validates against the champion's
contract, trains, publishes, gates (the serving self-test in the deployed predict function), promotes with the
same compare-and-swap, records, and announces the outcome on the same topic and metrics.

Locally:

    PYTHONPATH=layers/shared:. python -m training.sagemaker_job --data training/data --store model-store

builds the sourcedir.tar.gz a job would get, unpacks it into a scratch folder, reserves a run as the retrain
function would, and runs the unpacked entry.py in a fresh Python with SM_CHANNEL_TRAIN / SM_MODEL_DIR pointing at
local folders (an s3:// --data is copied there first, as SageMaker's File mode does). Point AWS_ENDPOINT_URL at a
local S3 (moto server) to use an s3:// store.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from sklambda import metric_names
from sklambda.errors import RunSkipped, SklambdaError
from sklambda.locations import open_object_store
from sklambda.runs import EngineRecord, RunRecord, notification, run_reply, score_metrics
from sklambda.settings import EngineSettings, JobSettings
from sklambda.store import ModelStore
from training.budget import RunLimits
from training.config import load_config
from training.engines import ENTRY_POINT, build_sourcedir, reclaim_interrupted_attempt
from training.lineage import code_version
from training.pipeline import TrainingRun, deployed_run, model_config, reserve_run, run_training
from training.progress import Progress

logger = logging.getLogger("training.sagemaker_job")

# SageMaker stops a job (StopTrainingJob, MaxRuntime, a spot interruption) with SIGTERM, then SIGKILL. Whoever
# ended the job records it (the stop request, or the state machine's catch), so the process leaves at once
# instead of writing a half-finished record over theirs; a candidate it published stays unpromoted.
EXIT_ON_SIGTERM = 143


def main(environ: Mapping[str, str] | None = None) -> int:
    """The container's work: 0 when the run ended with a record (promoted, rejected or failed with a reason),
    1 when it could not start or broke unexpectedly (the job then fails, and the state machine records that)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(EXIT_ON_SIGTERM))
    settings = JobSettings.from_env(environ)
    context = job_context(settings)
    reclaim_interrupted_attempt(context, settings.run_id)
    by = f"SageMaker training job {(environ or os.environ).get('SAGEMAKER_JOB_NAME', 'local')}"
    try:
        record = run_training(context, trigger="sagemaker", by=by, run_id=settings.run_id)
    except RunSkipped as error:
        logger.error("run %s not carried out: %s", settings.run_id, error)
        return 1
    except Exception:
        logger.exception("run %s broke", settings.run_id)
        return 1
    # The record beside SageMaker's output too (model.tar.gz): the job's own account of what it did.
    Path(settings.sm_model_dir).mkdir(parents=True, exist_ok=True)
    Path(settings.sm_model_dir, "run.json").write_text(record.model_dump_json(indent=2))
    logger.info("run %s %s: %s", record.run_id, record.status, record.reason)
    return 0


def job_context(settings: JobSettings) -> TrainingRun:
    store = ModelStore.from_settings(settings)  # signs what the job publishes with the stack's key
    deadline = time.monotonic() + settings.sagemaker_max_runtime_seconds
    return deployed_run(
        settings,
        store,
        data_uri=settings.sm_channel_train,
        limits=RunLimits(seconds_left=lambda: deadline - time.monotonic(), memory_mb=_memory_mb()),
        code_version=code_version(),
        notify=lambda record: _notify(settings, record),
        progress=Progress(logger),
    )


def _memory_mb() -> float | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError):
        return None


def _notify(settings: JobSettings, record: RunRecord) -> None:
    """As the retrain function's: the outcome's metrics (service = the stack) and a message on the run topic."""
    from sklambda.aws import publish_message, put_metrics

    values: dict[str, tuple[float, str]] = {metric_names.retrain_outcome(record.status): (1.0, "Count")}
    if record.duration_seconds is not None:
        values[metric_names.RETRAIN_SECONDS] = (record.duration_seconds, "Seconds")
    values[metric_names.RETRAIN_JOB_RUNS] = (1.0, "Count")
    values.update({name: (score, "None") for name, score in score_metrics(record).items()})
    try:
        put_metrics(settings.powertools_metrics_namespace, {"service": settings.powertools_service_name}, values)
    except SklambdaError as error:
        logger.warning("run %s: metrics not put: %s", record.run_id, error)
    if settings.retrain_topic_arn:
        subject, message, attributes = notification(record)
        publish_message(settings.retrain_topic_arn, subject, message, attributes)


# ---------------------------------------------------------------- the same work on a laptop
def run_locally(
    data_uri: str,
    store_uri: str,
    *,
    model_name: str | None = None,
    training_config: str | None = None,
    workdir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, RunRecord]:
    """Reserve a run as the retrain function does, then run the job's entry point from its unpacked sourcedir in a
    fresh Python with SM_* variables pointing at local folders. Returns the exit code and the run's record."""
    base_env = dict(os.environ if environ is None else environ)
    config = load_config(training_config)
    name = model_name or config.model.name
    store = ModelStore.from_uri(store_uri)
    settings = EngineSettings.from_env(base_env)
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sagemaker-job-"))
    code_dir, channel, model_dir = scratch / "code", scratch / "input" / "data" / "train", scratch / "model"
    for folder in (code_dir, channel, model_dir):
        folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(build_sourcedir(code_version())), mode="r:gz") as tar:
        tar.extractall(code_dir, filter="data")
    _copy_channel(data_uri, channel)
    context = TrainingRun(store=store, data_uri=data_uri, config=model_config(config, store, name=name))
    record = reserve_run(context, trigger="local", by=f"python -m training.sagemaker_job on {os.uname().nodename}")
    record.engine = EngineRecord(engine="sagemaker", why="python -m training.sagemaker_job: a job's work, run here")
    context.run_log().save(record)
    env = {
        **{key: value for key, value in base_env.items() if key != "PYTHONPATH"},
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(model_dir),
        "RUN_ID": record.run_id,
        "MODEL_STORE_URI": store_uri,
        "MODEL_NAME": name,
        "DATA_URI": data_uri,
        "SAGEMAKER_MAX_RUNTIME_SECONDS": str(settings.sagemaker_max_runtime_seconds),
        "RETRAIN_LOCK_SECONDS": str(settings.sagemaker_max_runtime_seconds + 60),
    }
    if training_config:
        env["TRAINING_CONFIG"] = str(Path(training_config).resolve())
    # As the container starts it: `python entry.py` in the unpacked source directory, nothing else on the path.
    completed = subprocess.run([sys.executable, ENTRY_POINT], cwd=code_dir, env=env, check=False)  # noqa: S603
    return completed.returncode, context.run_log().get(record.run_id)


def _copy_channel(data_uri: str, channel: Path) -> None:
    """SageMaker's File mode: every object under the channel's S3 prefix copied to local disk before the start."""
    if not data_uri.startswith("s3://") and Path(data_uri).is_dir():
        shutil.copytree(data_uri, channel, dirs_exist_ok=True)
        return
    if not data_uri.startswith("s3://"):
        shutil.copy(data_uri, channel)
        return
    source = open_object_store(data_uri)
    for key in source.list(""):
        target = channel / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.get(key).data)


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.sagemaker_job",
        description="Run a SageMaker Training job's work here, exactly as the container does (its entry point, "
        "SM_* variables pointing at local folders).",
    )
    parser.add_argument("--data", required=True, help="the training data: a folder, a file or an s3:// prefix")
    parser.add_argument("--store", required=True, help="the model store: a folder or s3://bucket/prefix")
    parser.add_argument("--name", help="the model's name (default: the training configuration's)")
    parser.add_argument("--config", help="a training configuration file (default: training/config.toml)")
    parser.add_argument("--workdir", type=Path, help="where to unpack the job (default: a new temporary folder)")
    args = parser.parse_args(argv)
    code, record = run_locally(
        args.data, args.store, model_name=args.name, training_config=args.config, workdir=args.workdir
    )
    reply = run_reply(record)
    print(f"run {record.run_id}: {record.status} (v{reply['model']['version']}): {record.reason}")
    return code


if __name__ == "__main__":
    sys.exit(_cli())
