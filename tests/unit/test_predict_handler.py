"""The predict function in-process against a local store, driven by the events/ files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sklambda.runtimes.sklearn import load_pipeline
from sklambda.store import ModelStore
from tests.conftest import LambdaContext, load_event

pytestmark = pytest.mark.unit


@pytest.fixture
def predict_app(fresh_handler: Callable[..., ModuleType], local_store_copy: Path) -> ModuleType:
    return fresh_handler(
        "functions.predict.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins", ALIAS_REFRESH_SECONDS="0"
    )


def call(app: ModuleType, event: dict[str, Any], context: LambdaContext) -> tuple[int, dict[str, Any]]:
    response = app.lambda_handler(event, context)
    return response["statusCode"], json.loads(response["body"])


def with_body(body: str | None) -> dict[str, Any]:
    event = load_event("predict")
    event["body"] = body
    return event


def test_predict_answers_with_the_model_version_and_matches_the_pipeline(
    predict_app: ModuleType, lambda_context: LambdaContext, local_store_copy: Path
) -> None:
    # Given the sample event
    event = load_event("predict")

    # When it is sent
    status, body = call(predict_app, event, lambda_context)

    # Then the reply names the version and equals the trained pipeline's own predictions
    assert status == 200
    assert body["model"] == {"name": "penguins", "version": 1}
    store = ModelStore.from_uri(str(local_store_copy))
    manifest = store.manifest("penguins", 1)
    pipeline = load_pipeline(store.artifact(manifest, "model.joblib"))
    import pandas as pd

    from sklambda.contract import encode_frame

    rows = pd.DataFrame(json.loads(event["body"])["instances"])
    expected = pipeline.predict(encode_frame(rows, manifest.contract)).tolist()  # type: ignore[attr-defined]
    assert body["predictions"] == expected == ["Gentoo", "Adelie"]
    assert body["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert all(abs(sum(row) - 1) < 1e-5 for row in body["probabilities"])


def test_health_names_the_loaded_version(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    status, body = call(predict_app, load_event("health"), lambda_context)
    assert status == 200
    assert body == {"status": "ok", "model": {"name": "penguins", "version": 1, "runtime": "onnx"}}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ('{"instances": [', 400, "the body is not valid JSON"),
        ("", 400, "the request has no body"),
        ('{"instances": [{"bill_length_mm": NaN}]}', 400, "the body is not valid JSON"),
        ("[1, 2]", 400, 'expected a JSON object with "instances"'),
        ('{"rows": []}', 400, 'expected a JSON object with "instances"'),
        ('{"instances": []}', 422, "expected a non-empty list of objects"),
        ('{"instances": [{"island": "Biscoe"}]}', 422, "row 0 field 'bill_length_mm': missing field (and 5 more)"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    predict_app: ModuleType, lambda_context: LambdaContext, body: str, status: int, message: str
) -> None:
    got_status, reply = call(predict_app, with_body(body), lambda_context)
    assert got_status == status
    assert reply["error"].startswith(message)


def test_contract_violation_lists_every_problem(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    instances = json.loads(load_event("predict")["body"])["instances"]
    instances[0]["island"] = "Atlantis"
    instances[1]["body_mass_g"] = "heavy"
    status, reply = call(predict_app, with_body(json.dumps({"instances": instances})), lambda_context)
    assert status == 422
    assert [(p["row"], p["field"]) for p in reply["problems"]] == [(0, "island"), (1, "body_mass_g")]
    assert reply["problem_count"] == 2


def test_no_model_yet_is_503(
    fresh_handler: Callable[..., ModuleType], lambda_context: LambdaContext, tmp_path: Path
) -> None:
    app = fresh_handler("functions.predict.app", MODEL_STORE_URI=str(tmp_path / "empty"), MODEL_NAME="penguins")
    status, reply = call(app, load_event("predict"), lambda_context)
    assert status == 503
    assert "has no 'champion' alias yet" in reply["error"]


def test_self_test_invocation_loads_and_checks_a_version(
    predict_app: ModuleType, lambda_context: LambdaContext
) -> None:
    result = predict_app.lambda_handler(load_event("self-test"), lambda_context)
    assert result["ok"] is True
    assert result["version"] == 1
    assert result["runtime"] == "onnx"
    missing = predict_app.lambda_handler({"self_test": {"version": 9}}, lambda_context)
    assert missing["ok"] is False
    assert "no version 9" in missing["detail"]
