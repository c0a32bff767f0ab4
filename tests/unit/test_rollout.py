"""The pre-traffic check's judgement of a new predict version's answers (sklambda/rollout.py), with the new
version played by canned replies; tests/integration/test_pretraffic_hook.py runs it against the real handler."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sklambda.contract import Label
from sklambda.manifest import GoldenSample
from sklambda.rollout import api_event, check_new_version
from sklambda.store import ModelStore
from tests.conftest import load_event
from tests.unit.test_store import make_manifest

pytestmark = pytest.mark.unit


def regression_champion(store: ModelStore, predictions: list[Label]) -> None:
    manifest = make_manifest().model_copy(
        update={
            "task": "regression",
            "classes": None,
            "golden": GoldenSample(
                instances=[{"x": float(i)} for i in range(len(predictions))], predictions=predictions
            ),
        }
    )
    store.publish(manifest, {"model.bin": b"m"})
    store.promote("demo", 1, by="tester", reason="first")


def new_version(predictions: list[Any], *, health_status: int = 200) -> Any:
    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        if event["resource"] == "/health":
            body: dict[str, Any] = {
                "status": "ok",
                "model": {"name": "demo", "version": 1, "runtime": "onnx"},
                "problem": None,
            }
            return {"statusCode": health_status, "body": orjson.dumps(body).decode()}
        rows = orjson.loads(event["body"])["instances"]
        body = {"model": {"name": "demo", "version": 1}, "predictions": predictions[: len(rows)]}
        return {"statusCode": 200, "body": orjson.dumps(body).decode()}

    return invoke


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_regression_outputs_agree_within_the_serving_tolerance(store: ModelStore) -> None:
    # Given a regression champion whose golden outputs the new version gives back as float32 would
    regression_champion(store, [101.25, 0.1])
    served = [101.25000762939453, 0.10000000149011612]
    verdict = check_new_version(new_version(served), store, "demo", "champion", "r")
    assert verdict.passed, verdict
    # But an output off by more than the tolerance stops the rollout, naming the row
    verdict = check_new_version(new_version([101.25, 0.2]), store, "demo", "champion", "r")
    assert not verdict.passed
    assert verdict.reason == "POST /predict with v1's golden rows: row 1: predicted 0.2, trained pipeline 0.1"


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_a_failing_health_route_stops_the_rollout_with_its_answer(store: ModelStore) -> None:
    regression_champion(store, [1.0])
    verdict = check_new_version(new_version([1.0], health_status=502), store, "demo", "champion", "r")
    assert not verdict.passed
    assert verdict.reason.startswith("GET /health answered 502: ")


def test_the_events_have_the_shape_of_the_api_gateway_events_in_events() -> None:
    # The predict handler reads these fields; events/ holds what API Gateway really sends.
    for name, (method, path) in {"health": ("GET", "/health"), "predict": ("POST", "/predict")}.items():
        sample = load_event(name)
        event = api_event(method, path, {"instances": []} if method == "POST" else None, "id")
        assert set(event) <= set(sample), name
        assert (event["httpMethod"], event["resource"]) == (sample["httpMethod"], sample["resource"])
        assert set(event["requestContext"]) <= set(sample["requestContext"])
