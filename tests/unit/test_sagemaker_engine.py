"""The SageMaker engine without AWS: where a run goes, the CreateTrainingJob request built from a run, the code
tarball a job runs, and the versions a job trains with (the image table against requirements.txt)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from packaging.requirements import Requirement

from sklambda.errors import ConfigError
from sklambda.objects import LocalObjects
from sklambda.settings import EngineSettings
from tests.conftest import PENGUINS_CSV
from tests.template.conftest import load_sam_template
from training import engines
from training.budget import RunLimits
from training.config import load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "20261203T030000123Z-1a2b3c4d"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.9-0-cpu-py3"
ROLE = "arn:aws:iam::123456789012:role/sklambda-SageMakerTrainingRole"
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:sklambda-retrain-jobs"


def engine_settings(**overrides: str) -> EngineSettings:
    values = {
        "RETRAIN_STATE_MACHINE_ARN": MACHINE,
        "SAGEMAKER_ROLE_ARN": ROLE,
        "SAGEMAKER_IMAGE_URI": IMAGE,
        "SAGEMAKER_JOB_PREFIX": "Sklambda",
        "SAGEMAKER_INSTANCE_TYPE": "ml.r5.4xlarge",
        "SAGEMAKER_VOLUME_GB": "100",
        "SAGEMAKER_MAX_RUNTIME_SECONDS": "7200",
        "SAGEMAKER_REGION": "us-east-1",
        **overrides,
    }
    return EngineSettings.from_env(values)


def job_inputs() -> engines.JobInputs:
    return engines.JobInputs(
        run_id=RUN_ID,
        model_store_uri="s3://bucket/models",
        model_name="penguins",
        alias="champion",
        data_uri="s3://bucket/data/",
        code_uri="s3://bucket/models/penguins/jobs/code/abc-123/sourcedir.tar.gz",
        output_uri="s3://bucket/models/penguins/jobs/output/",
        environment={"RETRAIN_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:outcomes", "TRAINING_CONFIG": ""},
    )


# ---------------------------------------------------------------- the job request from a run
def test_job_request_runs_our_code_in_the_image_on_the_data_with_the_limits() -> None:
    # Given a run handed over with on-demand capacity
    request = engines.training_job_request(job_inputs(), engine_settings())
    # Then the job is named by the stack and the run (lower case, as SageMaker's ARNs are)
    assert request["TrainingJobName"] == f"sklambda-{RUN_ID.lower()}"
    # And it runs AWS's scikit-learn image in script mode, our tarball's entry.py, as the job role
    assert request["AlgorithmSpecification"] == {"TrainingImage": IMAGE, "TrainingInputMode": "File"}
    assert request["RoleArn"] == ROLE
    assert request["HyperParameters"] == {
        "sagemaker_program": '"entry.py"',
        "sagemaker_submit_directory": '"s3://bucket/models/penguins/jobs/code/abc-123/sourcedir.tar.gz"',
        "sagemaker_container_log_level": "20",
        "sagemaker_region": '"us-east-1"',
    }
    # And the data prefix is its one channel, `train`; SageMaker's output goes under the model's jobs/ prefix
    assert request["InputDataConfig"] == [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://bucket/data/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
    ]
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://bucket/models/penguins/jobs/output/"}
    # And one instance of the configured size (scale up, not out), stopped after the maximum runtime, no spot
    assert request["ResourceConfig"] == {"InstanceType": "ml.r5.4xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert request["EnableManagedSpotTraining"] is False
    # And the container learns the run, the store and the lease from its environment; empty values are left out
    environment = request["Environment"]
    assert environment["RUN_ID"] == RUN_ID
    assert environment["MODEL_STORE_URI"] == "s3://bucket/models"
    assert environment["MODEL_NAME"] == "penguins"
    assert environment["AWS_DEFAULT_REGION"] == "us-east-1"
    assert environment["RETRAIN_TOPIC_ARN"].endswith(":outcomes")
    assert "TRAINING_CONFIG" not in environment
    assert int(environment["RETRAIN_LOCK_SECONDS"]) == 7200 + engines.JOB_START_MARGIN_SECONDS
    # And the request stays within SageMaker's limits (100 hyperparameters / environment entries, 63-char names)
    assert len(request["Environment"]) <= 100
    assert len(request["HyperParameters"]) <= 100
    assert len(request["TrainingJobName"]) <= 63


def test_spot_jobs_may_wait_for_capacity_and_the_lease_covers_the_wait() -> None:
    request = engines.training_job_request(job_inputs(), engine_settings(SAGEMAKER_SPOT="true"))
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert int(request["Environment"]["RETRAIN_LOCK_SECONDS"]) == 14400 + engines.JOB_START_MARGIN_SECONDS


def test_a_prefix_too_long_for_a_job_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="longer than 63"):
        engines.job_name("x" * 40, RUN_ID)


# ---------------------------------------------------------------- where a run goes
def test_forced_engines_and_auto_without_a_configured_engine() -> None:
    budget = load_config().budget
    data = str(PENGUINS_CSV)
    assert engines.decide("lambda", engine_settings(), data, budget, RunLimits()).engine == "lambda"
    assert engines.decide("sagemaker", engine_settings(), data, budget, RunLimits()).engine == "sagemaker"
    unconfigured = EngineSettings.from_env({})
    assert engines.decide("auto", unconfigured, data, budget, RunLimits()).engine == "lambda"
    with pytest.raises(ConfigError, match="RETRAIN_STATE_MACHINE_ARN"):
        engines.decide("sagemaker", unconfigured, data, budget, RunLimits())


def test_auto_moves_exactly_the_runs_the_budget_would_refuse() -> None:
    # Given the sample table (344 rows x 8 columns) and the [budget] model
    budget = load_config().budget
    data = str(PENGUINS_CSV)
    # When the function has the template's 3008 MB and 15 minutes, the run stays there
    roomy = RunLimits(seconds_left=lambda: 900.0, memory_mb=3008)
    stays = engines.decide("auto", engine_settings(), data, budget, roomy)
    assert (stays.engine, stays.why) == ("lambda", "344 rows x 8 columns fit in the function")
    # When the function has less memory than the estimate (base 250 MB x safety 1.5), it goes to SageMaker
    small = RunLimits(seconds_left=lambda: 900.0, memory_mb=300)
    moved = engines.decide("auto", engine_settings(), data, budget, small)
    assert moved.engine == "sagemaker"
    assert moved.why.startswith("344 rows x 8 columns do not fit in the function: about ")
    assert "MB available" in moved.why
    assert moved.estimate is not None
    assert moved.estimate.rows == 344


def test_measure_counts_rows_and_columns_of_csv_and_parquet_without_loading(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": range(1000), "b": ["x"] * 1000, "c": [1.5] * 1000})
    frame.iloc[:600].to_csv(tmp_path / "part1.csv", index=False)
    frame.iloc[600:].to_parquet(tmp_path / "part2.parquet", engine="fastparquet", index=False)
    assert engines.measure(str(tmp_path)) == (1000, 3)
    assert engines.measure(str(PENGUINS_CSV)) == (344, 8)


# ---------------------------------------------------------------- the code a job runs
def test_sourcedir_holds_the_entry_point_requirements_and_our_packages_only() -> None:
    data = engines.build_sourcedir("abc123def456")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = set(tar.getnames())
        assert tar.extractfile("training/CODE_VERSION").read() == b"abc123def456\n"  # type: ignore[union-attr]
    assert {"entry.py", "requirements.txt", "training/pipeline.py", "sklambda/store.py"} <= names
    assert "training/sagemaker_job.py" in names
    assert "training/config.toml" in names
    # Not the data, the build file or caches (as the training layer)
    assert not any(name.startswith("training/data/") or "__pycache__" in name for name in names)
    assert "training/Makefile" not in names
    # The same code gives the same bytes (no timestamps): an upload under its name is create-only and idempotent
    assert engines.build_sourcedir("abc123def456") == data
    assert engines.build_sourcedir("other") != data


def test_upload_is_named_by_version_and_content_and_never_overwrites(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    uri = engines.upload_sourcedir(objects, "penguins", "abc123def456")
    digest = hashlib.sha256(engines.build_sourcedir("abc123def456")).hexdigest()[:12]
    assert uri.endswith(f"penguins/jobs/code/abc123def456-{digest}/sourcedir.tar.gz")
    # A second run of the same code finds it there (create-only write refused, same bytes by its name)
    assert engines.upload_sourcedir(objects, "penguins", "abc123def456") == uri


# ---------------------------------------------------------------- the same versions
def pins(path: Path) -> dict[str, str]:
    result = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            result[requirement.name.lower().replace("_", "-")] = str(requirement.specifier).removeprefix("==")
    return result


def configured_image_tags() -> set[str]:
    """Every image tag the template can configure: the default URI it builds from the mapping."""
    template = load_sam_template()
    variables = template["Resources"]["RetrainFunction"]["Properties"]["Environment"]["Variables"]
    default_uri: Any = variables["SAGEMAKER_IMAGE_URI"]["Fn::If"][2]["Fn::Sub"][0]
    return {engines.image_tag(default_uri)}


def test_the_job_installs_the_projects_pins() -> None:
    # Given the project's pins and the job's requirements.txt (installed over the image before the entry point)
    project, job = pins(ROOT / "requirements.txt"), pins(engines.JOB_REQUIREMENTS)
    # Then every pin the job installs is the project's
    assert {name: version for name, version in job.items() if project.get(name) != version} == {}
    # And the job installs everything the retrain Lambda's layer ships (bar the SDK's jmespath, the image's)
    layer = pins(ROOT / "layers" / "training" / "requirements.txt")
    assert set(layer) - set(job) == {"jmespath"}


@pytest.mark.parametrize("tag", sorted(configured_image_tags()))
def test_the_configured_image_and_requirements_agree(tag: str) -> None:
    # Given what the configured image holds (the repository's table; unknown tags fail here)
    image = engines.image_versions(tag)
    project, job = pins(ROOT / "requirements.txt"), pins(engines.JOB_REQUIREMENTS)
    # Then its Python is ours (the pinned wheels are built for CPython 3.12)
    assert image["python"] == "3.12"
    # And every library it holds at another version than ours is replaced by our pin in the job
    differing = {name for name, version in image.items() if name != "python" and project.get(name) != version}
    assert {name: job.get(name) for name in differing} == {name: project[name] for name in differing}
    # And what the job trains with loads where the project loads it: scikit-learn and the ONNX converter
    for library in ("scikit-learn", "skl2onnx", "onnx"):
        assert job[library] == project[library]


def test_an_unknown_image_tag_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"not in images\.toml"):
        engines.image_versions("0.23-1-cpu-py3")


def test_entry_point_file_is_the_jobs_program() -> None:
    assert (engines.JOB_FILES / engines.ENTRY_POINT).read_text().count("from training.sagemaker_job import main") == 1
    assert (
        json.loads(
            engines.training_job_request(job_inputs(), engine_settings())["HyperParameters"]["sagemaker_program"]
        )
        == engines.ENTRY_POINT
    )


# ---------------------------------------------------------------- a restarted (spot-interrupted) job
def test_a_restarted_job_takes_its_own_run_back_and_carries_it_out(tmp_path: Path) -> None:
    from sklambda.runs import RunLock, RunLog
    from sklambda.store import ModelStore
    from training.pipeline import TrainingRun, reserve_run, run_training

    # Given a run the retrain function reserved, which a first attempt of its job adopted before it was interrupted
    context = TrainingRun(store=ModelStore.from_uri(str(tmp_path / "store")), data_uri=str(PENGUINS_CSV),
                         config=load_config(), lock_seconds=600)  # fmt: skip
    queued = reserve_run(context, trigger="schedule", by="retrain function")
    context.run_lock().adopt(queued.run_id, "first attempt")
    log = RunLog(context.store.objects, "penguins")
    log.save(queued.model_copy(update={"status": "running"}))
    # When the restarted job's entry point starts
    engines.reclaim_interrupted_attempt(context, queued.run_id)
    # Then the run is a reservation again, and the same run is carried out by the second attempt
    held = RunLock(context.store.objects, "penguins", ttl_seconds=1).current()
    assert held is not None
    assert (held.run_id, held.started) == (queued.run_id, False)
    assert log.get(queued.run_id).reason == "restarted after an interruption"
    record = run_training(context, trigger="schedule", by="second attempt", run_id=queued.run_id)
    assert (record.run_id, record.status) == (queued.run_id, "promoted")


def test_reclaiming_leaves_another_runs_lock_alone(tmp_path: Path) -> None:
    from sklambda.store import ModelStore
    from training.pipeline import TrainingRun, reserve_run

    context = TrainingRun(store=ModelStore.from_uri(str(tmp_path / "store")), data_uri=str(PENGUINS_CSV),
                         config=load_config())  # fmt: skip
    other = reserve_run(context, trigger="api", by="someone")
    context.run_lock().adopt(other.run_id, "its worker")
    engines.reclaim_interrupted_attempt(context, RUN_ID)
    held = context.run_lock().current()
    assert held is not None
    assert (held.run_id, held.started) == (other.run_id, True)
