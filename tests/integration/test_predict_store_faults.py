"""The predict handler against S3 (moto) that fails: the warm container keeps serving its last good model, says
so in /health and in a metric, and picks up the new version once the store answers again."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from sklambda import aws
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from training.cli import main

pytestmark = pytest.mark.integration


class StoreFaults:
    """Makes S3 GetObject fail at the connection (before moto answers), for keys containing `match`."""

    def __init__(self) -> None:
        self.match: str | None = None
        self.failed = 0
        aws.s3_client().meta.events.register_first("before-send.s3.GetObject", self._maybe_fail)

    def _maybe_fail(self, request: Any, **_: Any) -> None:
        if self.match is not None and self.match in request.url:
            self.failed += 1
            raise EndpointConnectionError(endpoint_url=request.url)


@pytest.fixture
def faults(aws_mock: None, monkeypatch: pytest.MonkeyPatch) -> StoreFaults:
    # botocore waits between retries; the waits are not what is tested here
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, context: 0)
    return StoreFaults()


@pytest.fixture
def predict_app(s3_bucket: str, faults: StoreFaults, fresh_handler: Callable[..., ModuleType]) -> ModuleType:
    uri = f"s3://{s3_bucket}/models"
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", uri]) == 0
    return fresh_handler("functions.predict.app", MODEL_STORE_URI=uri, MODEL_NAME="penguins", ALIAS_REFRESH_SECONDS="0")


def call(app: ModuleType, route: str) -> tuple[int, dict[str, Any]]:
    event = load_event("predict") if route == "/predict" else load_event("health")
    response = app.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def emitted(capsys: pytest.CaptureFixture[str]) -> set[str]:
    names: set[str] = set()
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names.update(metric["Name"] for metric in directive["Metrics"])
    return names


def test_store_outage_keeps_the_last_good_model_serving(
    predict_app: ModuleType, faults: StoreFaults, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a warm function serving v1 from S3
    assert call(predict_app, "/predict")[1]["model"]["version"] == 1
    capsys.readouterr()

    # When S3 stops answering (every read of the store fails, the alias's conditional read included)
    faults.match = "/models/"
    status, reply = call(predict_app, "/predict")

    # Then v1 still answers, the failure is counted, and /health says what is wrong
    assert (status, reply["model"]["version"]) == (200, 1)
    assert faults.failed >= 1
    assert {"StoreUnavailable", "ServingLastGoodModel"} <= emitted(capsys)
    _, health = call(predict_app, "/health")
    assert health["status"] == "ok"
    assert health["model"]["version"] == 1
    assert health["problem"] == "the model store is unavailable; retrying"
    # (said without the bucket or the S3 error: the log has those)
    assert "s3://" not in json.dumps(health)

    # And when S3 answers again, the problem clears
    faults.match = None
    assert call(predict_app, "/health")[1]["problem"] is None


def test_a_new_version_is_loaded_once_its_files_can_be_read(
    predict_app: ModuleType, faults: StoreFaults, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a warm function serving v1, and v2 published and promoted
    assert call(predict_app, "/predict")[1]["model"]["version"] == 1
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", f"s3://{s3_bucket}/models"]) == 0
    capsys.readouterr()

    # When the new alias can be read but v2's files cannot
    faults.match = "/versions/000002/"
    status, reply = call(predict_app, "/predict")

    # Then v1 keeps answering (the failure is transient: the etag is not remembered)
    assert (status, reply["model"]["version"]) == (200, 1)
    assert "StoreUnavailable" in emitted(capsys)

    # And once v2's files can be read, the next request loads, self-tests and serves it
    faults.match = None
    status, reply = call(predict_app, "/predict")
    assert (status, reply["model"]["version"]) == (200, 2)
    assert "ModelLoaded" in emitted(capsys)


def test_cold_start_with_the_store_down_answers_503_then_recovers(
    s3_bucket: str, faults: StoreFaults, fresh_handler: Callable[..., ModuleType]
) -> None:
    # Given a trained model in S3, and S3 failing while a new container starts
    uri = f"s3://{s3_bucket}/models"
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", uri]) == 0
    faults.match = "/models/"
    app = fresh_handler("functions.predict.app", MODEL_STORE_URI=uri, MODEL_NAME="penguins", ALIAS_REFRESH_SECONDS="0")

    # When a request comes: no model could be loaded, so 503 with the reason (init did not crash)
    status, reply = call(app, "/predict")
    assert status == 503
    assert reply["error"].startswith("no model available: the model store is unavailable")

    # Then, once S3 answers, the same container loads the model and serves it
    faults.match = None
    assert ModelStore.from_uri(uri).alias("penguins", "champion") is not None
    status, reply = call(app, "/predict")
    assert (status, reply["model"]["version"]) == (200, 1)
