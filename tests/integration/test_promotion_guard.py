"""A promotion followed by a (simulated) alarm rolls the alias back: the guard function in-process, S3 under moto,
driven by events/alarm-state-change.json; predict then serves the previous version again."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from types import ModuleType

import boto3
import pytest

from sklambda.guard import parse_time
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event

pytestmark = pytest.mark.integration


def test_alarm_after_promotion_rolls_back_and_predict_serves_the_previous_version(
    s3_bucket: str, fresh_handler: Callable[..., ModuleType], lambda_context: LambdaContext
) -> None:
    # Given v1 then v2 trained and promoted by the retrain function, and v2 being served
    boto3.client("s3").upload_file(str(PENGUINS_CSV), s3_bucket, "data/penguins.csv")
    environment = {
        "MODEL_STORE_URI": f"s3://{s3_bucket}/models",
        "MODEL_NAME": "penguins",
        "DATA_URI": f"s3://{s3_bucket}/data/",
        "ALIAS_REFRESH_SECONDS": "0",
        "PROMOTION_WATCH_SECONDS": "900",
    }
    retrain = fresh_handler("functions.retrain.app", **environment)
    predict = fresh_handler("functions.predict.app", **environment)
    guard = fresh_handler("functions.guard.app", **environment)
    for _ in range(2):
        retrain.lambda_handler(load_event("retrain-schedule"), lambda_context)
    assert json.loads(predict.lambda_handler(load_event("predict"), lambda_context)["body"])["model"]["version"] == 2

    # When the 5xx alarm goes to ALARM two minutes after the promotion
    store = ModelStore.from_uri(f"s3://{s3_bucket}/models")
    state = store.alias("penguins", "champion")
    assert state is not None
    fired = parse_time(state.record.history[-1].at) + timedelta(minutes=2)
    event = load_event("alarm-state-change")
    event["detail"]["state"]["timestamp"] = fired.isoformat()
    result = guard.lambda_handler(event, lambda_context)

    # Then the alias is back on v1, the move is recorded, and predict answers with v1
    assert (result["rolled_back"], result["from_version"], result["to_version"]) == (True, 2, 1)
    state = store.alias("penguins", "champion")
    assert state is not None
    assert state.record.version == 1
    assert state.record.history[-1].by == "promotion guard (alarm sklambda-Predict5xx)"
    assert json.loads(predict.lambda_handler(load_event("predict"), lambda_context)["body"])["model"]["version"] == 1


def test_an_alarm_returning_to_ok_is_ignored(
    s3_bucket: str, fresh_handler: Callable[..., ModuleType], lambda_context: LambdaContext
) -> None:
    guard = fresh_handler("functions.guard.app", MODEL_STORE_URI=f"s3://{s3_bucket}/models", MODEL_NAME="penguins")
    event = load_event("alarm-state-change")
    event["detail"]["state"]["value"] = "OK"
    assert guard.lambda_handler(event, lambda_context) == {
        "rolled_back": False,
        "reason": "ignored: not an alarm going to ALARM (OK)",
    }
