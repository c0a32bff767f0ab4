"""Scheduled and on-demand retraining through the real handlers, in-process, against S3 under moto, driven by
the events/ files: a retrain writes a new version, and predict then answers with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from training.config import DEFAULT_CONFIG

pytestmark = pytest.mark.integration


@pytest.fixture
def handlers(s3_bucket: str, fresh_handler: Callable[..., ModuleType]) -> tuple[ModuleType, ModuleType]:
    boto3.client("s3").upload_file(str(PENGUINS_CSV), s3_bucket, "data/penguins.csv")
    environment = {
        "MODEL_STORE_URI": f"s3://{s3_bucket}/models",
        "MODEL_NAME": "penguins",
        "DATA_URI": f"s3://{s3_bucket}/data/",
        "ALIAS_REFRESH_SECONDS": "0",
    }
    retrain = fresh_handler("functions.retrain.app", **environment)
    predict = fresh_handler("functions.predict.app", **environment)
    return retrain, predict


def predict_version(predict: ModuleType, context: LambdaContext) -> tuple[int, list[Any]]:
    response = predict.lambda_handler(load_event("predict"), context)
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    return body["model"]["version"], body["predictions"]


def test_scheduled_retrain_publishes_a_version_that_predict_then_serves(
    handlers: tuple[ModuleType, ModuleType], lambda_context: LambdaContext, s3_bucket: str
) -> None:
    retrain, predict = handlers

    # Given a first scheduled run: v1 becomes the champion and is served
    first = retrain.lambda_handler(load_event("retrain-schedule"), lambda_context)
    assert (first["model"]["version"], first["promoted"], first["trigger"]) == (1, True, "schedule")
    assert predict_version(predict, lambda_context)[0] == 1

    # When the schedule fires again on the same data
    second = retrain.lambda_handler(load_event("retrain-schedule"), lambda_context)

    # Then v2 is published and promoted (it scores at least as well on the same held-out rows) and served
    assert (second["model"]["version"], second["promoted"]) == (2, True)
    assert second["champion"]["version"] == 1
    assert second["champion"]["metrics"]["accuracy"] == second["metrics"]["accuracy"]
    version, predictions = predict_version(predict, lambda_context)
    assert (version, predictions) == (2, ["Gentoo", "Adelie"])
    store = ModelStore.from_uri(f"s3://{s3_bucket}/models")
    assert store.versions("penguins") == [1, 2]
    assert [store.status("penguins", v).status for v in (1, 2)] == ["promoted", "promoted"]


def test_a_worse_model_is_stored_as_rejected_and_not_served(
    handlers: tuple[ModuleType, ModuleType],
    lambda_context: LambdaContext,
    s3_bucket: str,
    fresh_handler: Callable[..., ModuleType],
    tmp_path: Path,
) -> None:
    retrain, predict = handlers
    retrain.lambda_handler(load_event("retrain-schedule"), lambda_context)

    # Given a training configuration changed to a far weaker estimator (regularised to near-constant output)
    weak = tmp_path / "weak.toml"
    weak.write_text(
        DEFAULT_CONFIG.read_text().replace(
            "[estimator.params.classification]\n", "[estimator.params.classification]\nC = 1e-6\n"
        )
    )
    weak_retrain = fresh_handler("functions.retrain.app", TRAINING_CONFIG=str(weak))

    # When the API triggers a retrain
    response = weak_retrain.lambda_handler(load_event("retrain-api"), lambda_context)

    # Then v2 exists but is rejected with the reason, and v1 keeps serving
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert (body["model"]["version"], body["promoted"], body["trigger"]) == (2, False, "api")
    assert body["reason"].startswith("worse than the champion: accuracy")
    store = ModelStore.from_uri(f"s3://{s3_bucket}/models")
    assert store.status("penguins", 2).status == "rejected"
    assert predict_version(predict, lambda_context)[0] == 1


def test_retrain_without_data_fails_with_a_clear_message(
    handlers: tuple[ModuleType, ModuleType], lambda_context: LambdaContext, s3_bucket: str
) -> None:
    retrain, _ = handlers
    boto3.client("s3").delete_object(Bucket=s3_bucket, Key="data/penguins.csv")
    response = retrain.lambda_handler(load_event("retrain-api"), lambda_context)
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"] == (
        f"retrain failed: no CSV or Parquet files under s3://{s3_bucket}/data/"
    )
