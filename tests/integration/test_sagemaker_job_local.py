"""The SageMaker job's entry point run as the container runs it: `python entry.py` from the unpacked
sourcedir.tar.gz, in a fresh Python 3.12 with the pinned packages (this virtualenv), SM_CHANNEL_TRAIN and
SM_MODEL_DIR pointing at local folders, against a local S3 server (moto) holding the data and the store.

What this proves: the tarball the retrain function uploads is complete (the entry point imports and runs from it
alone: PYTHONPATH is dropped), the job adopts the run the function reserved, validates against the champion's
contract, trains, publishes, gates and promotes with the same compare-and-swap, records the run with engine
`sagemaker`, and frees the lock; the predict handler then serves the promoted version; a run that fails leaves the
champion in place and the lock free.

What it cannot prove: the image itself (Amazon Linux, its Python, pip installing requirements.txt over the image's
scikit-learn), SageMaker copying the channel and starting the script, the remote self-test in the deployed predict
function (here the serving runtime self-tests in the job's process, as with PREDICT_FUNCTION_NAME unset).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import boto3
import pandas as pd
import pytest

from sklambda import aws
from sklambda.runs import RunLock
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from training.sagemaker_job import run_locally

pytestmark = pytest.mark.integration

BUCKET = "sagemaker-job-local"


@pytest.fixture
def local_s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    environment = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    aws.s3_client.cache_clear()
    aws.cloudwatch_client.cache_clear()
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(PENGUINS_CSV), BUCKET, "data/penguins.csv")
    return environment


def store() -> ModelStore:
    return ModelStore.from_uri(f"s3://{BUCKET}/models")


def test_the_entry_point_trains_publishes_and_promotes_what_predict_then_serves(
    local_s3: dict[str, str], tmp_path: Path, fresh_handler: Callable[..., ModuleType]
) -> None:
    # When the job's work runs as the container runs it (its own process, its own copy of the code)
    code, record = run_locally(f"s3://{BUCKET}/data/", f"s3://{BUCKET}/models", workdir=tmp_path / "job")
    # Then it ended well, promoted the first version, and says where it ran
    assert code == 0
    assert (record.status, record.version, record.trigger) == ("promoted", 1, "local")
    assert record.engine is not None
    assert record.engine.engine == "sagemaker"
    assert record.by.startswith("python -m training.sagemaker_job")  # who queued it, as for a Lambda run
    assert record.data is not None
    assert (record.data.rows, record.data.columns) == (344, 8)
    assert [check.name for check in record.gate][-1] == "serving self-test"
    # And the code it ran came from the tarball only, stamped with the code version it records
    manifest = store().manifest("penguins", 1)
    stamped = (tmp_path / "job" / "code" / "training" / "CODE_VERSION").read_text().strip()
    assert manifest.code_version == stamped
    assert manifest.libraries["scikit-learn"] == "1.9.1"
    # And the run lock is free, and the job left its record in the model dir (SageMaker's model.tar.gz)
    assert RunLock(store().objects, "penguins", ttl_seconds=1).current() is None
    assert json.loads((tmp_path / "job" / "model" / "run.json").read_text())["run_id"] == record.run_id
    # And the predict handler serves the promoted version
    predict = fresh_handler("functions.predict.app", MODEL_STORE_URI=f"s3://{BUCKET}/models", MODEL_NAME="penguins")
    response = predict.lambda_handler(load_event("predict"), LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["model"]["version"] == 1


def test_a_failing_job_leaves_the_champion_and_frees_the_lock(local_s3: dict[str, str], tmp_path: Path) -> None:
    # Given a champion trained by a first job
    code, first = run_locally(f"s3://{BUCKET}/data/", f"s3://{BUCKET}/models", workdir=tmp_path / "first")
    assert (code, first.status) == (0, "promoted")
    # And new data that breaks the champion's contract (a feature column gone)
    frame = pd.read_csv(PENGUINS_CSV).drop(columns=["bill_length_mm"])
    s3 = boto3.client("s3", endpoint_url=local_s3["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.put_object(Bucket=BUCKET, Key="data/penguins.csv", Body=frame.to_csv(index=False).encode())
    # When the next job runs
    code, record = run_locally(f"s3://{BUCKET}/data/", f"s3://{BUCKET}/models", workdir=tmp_path / "second")
    # Then the run failed with the reason, published nothing, the champion stays, and the lock is free
    assert record.status == "failed"
    assert record.reason == "the training data failed validation"
    assert any("bill_length_mm" in problem for problem in record.data_problems)
    assert store().versions("penguins") == [1]
    alias = store().alias("penguins", "champion")
    assert alias is not None
    assert alias.record.version == 1
    assert RunLock(store().objects, "penguins", ttl_seconds=1).current() is None
    # (A failed run is still a finished job: exit 0; a job that dies is recorded by the state machine's catch.)
    assert code == 0


def test_the_sourcedir_unpacks_to_a_runnable_tree(tmp_path: Path) -> None:
    from training.engines import build_sourcedir

    with tarfile.open(fileobj=io.BytesIO(build_sourcedir("test")), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    assert (tmp_path / "entry.py").is_file()
    assert (tmp_path / "training" / "__init__.py").is_file()
    assert (tmp_path / "sklambda" / "__init__.py").is_file()
