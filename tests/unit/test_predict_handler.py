"""The predict function in-process against a local store, driven by the events/ files: every route, every
request format, every bad input (status code and message), and the metrics it emits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from aws_lambda_powertools.metrics.provider import cold_start

from sklambda.contract_derivation import encode_frame
from sklambda.runtimes.sklearn import load_pipeline
from sklambda.store import ModelStore
from tests.conftest import LambdaContext, load_event

pytestmark = pytest.mark.unit

REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"  # requestContext.requestId in events/predict.json


@pytest.fixture
def predict_app(fresh_handler: Callable[..., ModuleType], local_store_copy: Path) -> ModuleType:
    return fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(local_store_copy),
        MODEL_NAME="penguins",
        ALIAS_REFRESH_SECONDS="0",
        MAX_ROWS="50",
        MAX_BODY_BYTES="20000",
        MAX_JSON_DEPTH="6",
    )


def call(app: ModuleType, event: dict[str, Any], context: LambdaContext) -> tuple[int, dict[str, Any]]:
    response = app.lambda_handler(event, context)
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def with_body(body: str | None, **headers: str) -> dict[str, Any]:
    event = load_event("predict")
    event["body"] = body
    if headers:
        event["headers"] = headers
        event["multiValueHeaders"] = {key: [value] for key, value in headers.items()}
    return event


def instances() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(load_event("predict")["body"])["instances"]
    return rows


def metrics_of(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The metric values in the EMF lines the function printed (Powertools Metrics writes them to stdout)."""
    found: dict[str, Any] = {}
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' in line:
            blob = json.loads(line)
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    found[metric["Name"]] = blob[metric["Name"]]
    return found


# ------------------------------------------------------------------------------------------ predictions


def test_predict_answers_with_the_model_version_and_matches_the_pipeline(
    predict_app: ModuleType, lambda_context: LambdaContext, local_store_copy: Path
) -> None:
    # Given the sample event
    event = load_event("predict")

    # When it is sent
    status, body = call(predict_app, event, lambda_context)

    # Then the reply names the version and the request, and equals the trained pipeline's own predictions
    assert status == 200
    assert body["model"] == {"name": "penguins", "version": 1}
    assert body["request_id"] == REQUEST_ID
    store = ModelStore.from_uri(str(local_store_copy))
    manifest = store.manifest("penguins", 1)
    pipeline = load_pipeline(store.artifact(manifest, "model.joblib"))
    rows = encode_frame(pd.DataFrame(instances()), manifest.contract)
    assert body["predictions"] == pipeline.predict(rows).tolist() == ["Gentoo", "Adelie"]  # type: ignore[attr-defined]
    assert body["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    expected = pipeline.predict_proba(rows)  # type: ignore[attr-defined]
    assert abs(pd.DataFrame(body["probabilities"]) - expected).max().max() < 1e-4


def test_the_three_request_formats_give_the_same_answer(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    # Given the same two rows as native instances, MLflow records and MLflow split (columns in another order)
    rows = instances()
    columns = list(reversed(rows[0]))
    split = {"columns": columns, "data": [[row[name] for name in columns] for row in rows], "index": [10, 11]}
    bodies = [{"instances": rows}, {"dataframe_records": rows}, {"dataframe_split": split}]

    # When each is sent
    replies = [call(predict_app, with_body(json.dumps(document)), lambda_context) for document in bodies]

    # Then all are answered alike
    assert {status for status, _ in replies} == {200}
    assert all(reply == replies[0][1] for _, reply in replies)


def test_probabilities_are_returned_unless_declined(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    declined = json.dumps({"instances": instances(), "params": {"probabilities": False}})
    status, body = call(predict_app, with_body(declined), lambda_context)
    assert status == 200
    assert set(body) == {"model", "predictions", "classes", "request_id"}
    status, body = call(predict_app, with_body(json.dumps({"instances": instances(), "params": {}})), lambda_context)
    assert len(body["probabilities"]) == 2


def test_lambda_request_id_when_api_gateway_gives_none(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    event = load_event("predict")
    del event["requestContext"]
    assert call(predict_app, event, lambda_context)[1]["request_id"] == lambda_context.aws_request_id


# ------------------------------------------------------------------------------------------ bad input

TOO_DEEP = '{"instances": [{"island": [[[[[["Biscoe"]]]]]]}]}'


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        ('{"instances": [', None, 400, "the body is not valid JSON: "),
        ("", None, 400, 'the request has no body; send JSON like {"instances": [{...}]}'),
        (None, None, 400, "the request has no body"),
        ('{"instances": [{"bill_length_mm": NaN}]}', None, 400, "the body is not valid JSON: "),
        ('{"instances": [{"bill_length_mm": Infinity}]}', None, 400, "the body is not valid JSON: "),
        ("[1, 2]", None, 400, 'expected a JSON object with exactly one of "instances", "dataframe_split"'),
        ('{"rows": []}', None, 400, 'expected a JSON object with exactly one of "instances"'),
        ('{"instances": [], "dataframe_records": []}', None, 400, "expected a JSON object with exactly one of"),
        ('{"instances": [], "params": {"top_k": 1}}', None, 400, "unknown parameter 'top_k'; known: probabilities"),
        (TOO_DEEP, None, 400, "the JSON is nested deeper than 6 levels"),
        ('{"instances": []}', {"Content-Type": "text/plain"}, 415, "unsupported Content-Type 'text/plain'"),
        ('{"instances": []}', {"Accept": "application/json"}, 415, "missing Content-Type: send application/json"),
        ('{"instances": []}', {"content-type": "application/json; charset=utf-16"}, 415, "unsupported charset"),
        ('{"instances": [' + "{}, " * 50 + "{}]}", None, 413, "51 rows is more than the 50 allowed per request"),
        ('{"instances": ["' + "x" * 20_000 + '"]}', None, 413, "the body is larger than 20000 bytes"),
        ('{"instances": []}', None, 422, "expected a non-empty list of objects (one per row)"),
        ('{"dataframe_records": {}}', None, 422, "expected a non-empty list of objects (one per row)"),
        (
            '{"instances": [{"island": "Biscoe"}]}',
            None,
            422,
            "row 0 field 'bill_length_mm': missing field (and 5 more problems)",
        ),
        (
            '{"dataframe_split": {"columns": ["island"], "data": [["Biscoe"]]}}',
            None,
            422,
            "field 'bill_length_mm': missing column (and 5 more problems)",
        ),
        ('{"dataframe_split": {"columns": [1], "data": [[1]]}}', None, 422, "field 'columns': expected a list of col"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    predict_app: ModuleType,
    lambda_context: LambdaContext,
    body: str | None,
    headers: dict[str, str] | None,
    status: int,
    message: str,
) -> None:
    # Given a request that is wrong in one way
    event = with_body(body, **(headers or {"Content-Type": "application/json"}))
    # When it is sent
    got_status, reply = call(predict_app, event, lambda_context)
    # Then the status and the message say what is wrong, and the request is named
    assert (got_status, reply["error"][: len(message)]) == (status, message)
    assert reply["request_id"] == REQUEST_ID


def test_every_problem_by_row_and_field(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    # Given rows that break the contract in several ways
    rows = instances()
    rows[0]["island"] = "Atlantis"
    rows[0]["year"] = "2009"
    rows[1]["body_mass_g"] = True
    rows[1]["sex"] = 3
    rows[1]["colour"] = "red"
    # When sent
    status, reply = call(predict_app, with_body(json.dumps({"instances": rows})), lambda_context)
    # Then each problem is listed by row, then field in the contract's order (numbers first, then categories)
    assert status == 422
    assert [(p["row"], p["field"], p["message"]) for p in reply["problems"]] == [
        (0, "year", "expected a number, got string '2009'"),
        (0, "island", "unknown category 'Atlantis'; allowed: 'Biscoe', 'Dream', 'Torgersen'"),
        (1, "'colour'", "unknown field"),
        (1, "body_mass_g", "expected a number, got boolean True"),
        (1, "sex", "expected a string, got number 3"),
    ]
    assert reply["problem_count"] == 5
    assert reply["error"].startswith("row 0 field 'year': expected a number, got string '2009'")
    assert reply["error"].endswith("(and 4 more problems)")


def test_unknown_fields_are_refused_unless_the_deployment_allows_them(
    fresh_handler: Callable[..., ModuleType], local_store_copy: Path, lambda_context: LambdaContext
) -> None:
    rows = instances()
    rows[0]["colour"] = "red"
    event = with_body(json.dumps({"instances": rows}))
    strict = fresh_handler("functions.predict.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins")
    status, reply = call(strict, event, lambda_context)
    assert (status, reply["problems"]) == (422, [{"row": 0, "field": "'colour'", "message": "unknown field"}])
    relaxed = fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(local_store_copy),
        MODEL_NAME="penguins",
        ALLOW_UNKNOWN_FIELDS="true",
    )
    assert call(relaxed, event, lambda_context)[0] == 200


def test_error_bodies_echo_only_a_bounded_slice(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    # Given requests full of long client values (a long category, a long unknown field name, many bad rows)
    long_value = "A" * 2000
    rows = [dict(row, island=long_value, **{"B" * 2000: 1}) for row in instances()]
    for body in (json.dumps({"instances": rows}), json.dumps({"instances": [{"x": long_value[:400]}] * 40})):
        # When they are refused
        status, reply = call(predict_app, with_body(body), lambda_context)
        # Then the reply is small and quotes at most a short slice of any value
        assert status == 422
        text = json.dumps(reply)
        assert len(text) < 12_000
        assert "A" * 41 not in text
        assert "B" * 41 not in text


# ------------------------------------------------------------------------------------------ other routes


def test_health_names_the_loaded_version(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    status, body = call(predict_app, load_event("health"), lambda_context)
    assert status == 200
    assert body == {"status": "ok", "model": {"name": "penguins", "version": 1, "runtime": "onnx"}, "problem": None}


def test_model_describes_the_served_version(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    event = load_event("model")
    status, body = call(predict_app, event, lambda_context)
    assert status == 200
    assert (body["name"], body["version"], body["runtime"], body["task"]) == ("penguins", 1, "onnx", "classification")
    assert body["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert body["metric"]["name"] == "accuracy"
    assert set(body["metrics"]) >= {"accuracy", "log_loss"}
    assert [feature["name"] for feature in body["contract"]["features"]][:2] == ["bill_length_mm", "bill_depth_mm"]
    assert body["contract"]["allow_unknown_fields"] is False
    assert body["limits"] == {"max_body_bytes": 20000, "max_json_depth": 6, "max_rows": 50}


def test_an_open_api_describes_the_contract_only(
    fresh_handler: Callable[..., ModuleType], local_store_copy: Path, lambda_context: LambdaContext
) -> None:
    # Given a deployment whose prediction routes need no API key (the template sets MODEL_DETAILS=contract)
    app = fresh_handler(
        "functions.predict.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins", MODEL_DETAILS="contract"
    )
    # When anyone asks for the model and its schema
    status, body = call(app, load_event("model"), lambda_context)
    _, spec = call(app, load_event("openapi"), lambda_context)
    # Then they learn how to call it (features, types, categories, classes, limits) and nothing about its training
    assert status == 200
    assert {"name", "version", "task", "classes", "contract", "limits"} <= set(body)
    assert not {"metrics", "metric", "libraries", "code_version", "training_rows", "estimator"} & set(body)
    features = body["contract"]["features"]
    assert {"minimum", "maximum"}.isdisjoint(key for feature in features for key in feature)
    assert next(f for f in features if f["name"] == "island")["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert "seen in training" not in json.dumps(spec)
    assert set(spec["components"]["schemas"]["ModelDescription"]["required"]) <= set(body)


def test_openapi_describes_this_model(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    event = load_event("openapi")
    status, spec = call(predict_app, event, lambda_context)
    assert status == 200
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["version"] == "1"
    island = spec["components"]["schemas"]["Instance"]["properties"]["island"]
    assert island == {"type": "string", "enum": ["Biscoe", "Dream", "Torgersen"]}
    assert set(spec["paths"]["/predict"]["post"]["responses"]) == {"200", "400", "413", "415", "422", "503"}


def test_unknown_routes_and_methods(predict_app: ModuleType, lambda_context: LambdaContext) -> None:
    wrong_method = load_event("predict") | {"httpMethod": "GET"}
    response = predict_app.lambda_handler(wrong_method, lambda_context)
    assert (response["statusCode"], response["headers"]["Allow"]) == (405, "POST")
    nowhere = load_event("health") | {"resource": "/nowhere", "path": "/nowhere"}
    assert call(predict_app, nowhere, lambda_context) == (404, {"error": "no such route", "request_id": REQUEST_ID})


def test_no_model_yet_is_503(
    fresh_handler: Callable[..., ModuleType], lambda_context: LambdaContext, tmp_path: Path
) -> None:
    app = fresh_handler("functions.predict.app", MODEL_STORE_URI=str(tmp_path / "empty"), MODEL_NAME="penguins")
    status, reply = call(app, load_event("predict"), lambda_context)
    assert status == 503
    assert reply["error"].startswith("no model available: model 'penguins' has no 'champion' alias yet")
    status, health = call(app, load_event("health"), lambda_context)
    assert (status, health["status"], health["model"]) == (200, "unavailable", None)
    assert "has no 'champion' alias yet" in health["problem"]
    model_event = load_event("model")
    assert call(app, model_event, lambda_context)[0] == 503
    spec_event = load_event("openapi")
    status, spec = call(app, spec_event, lambda_context)
    assert (status, spec["info"]["version"]) == (200, "0")


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_for_a_prediction(
    predict_app: ModuleType, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a warm function
    call(predict_app, load_event("health"), lambda_context)
    capsys.readouterr()
    # When two rows are predicted
    call(predict_app, load_event("predict"), lambda_context)
    # Then latency, rows, the version and one count per predicted class are emitted (EMF)
    found = metrics_of(capsys)
    assert found["RowsPredicted"] == [2.0]
    assert found["ModelVersion"] == [1.0]
    assert found["Predicted_Gentoo"] == [1.0]
    assert found["Predicted_Adelie"] == [1.0]
    assert 0 < found["Latency"][0] < 10_000


def test_a_single_row_counts_its_predicted_class(
    predict_app: ModuleType, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a warm function
    call(predict_app, load_event("health"), lambda_context)
    capsys.readouterr()
    # When each row of the sample request is predicted alone
    rows = json.loads(load_event("predict")["body"])["instances"]
    for one in rows:
        status, reply = call(predict_app, with_body(json.dumps({"instances": [one]})), lambda_context)
        assert status == 200
        # Then the one class counted is the label answered
        counted = {name: value for name, value in metrics_of(capsys).items() if name.startswith("Predicted_")}
        assert counted == {f"Predicted_{reply['predictions'][0]}": [1.0]}


def test_metrics_for_errors_by_kind_and_cold_start(
    fresh_handler: Callable[..., ModuleType],
    local_store_copy: Path,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a cold start (Powertools keeps the cold-start flag per process; tests share one process)
    cold_start.reset_cold_start_flag()  # type: ignore[no-untyped-call]
    app = fresh_handler("functions.predict.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins")
    # When a malformed request comes first, then one with the wrong content type
    call(app, with_body("{"), lambda_context)
    first = metrics_of(capsys)
    # Then the cold start, the load at init and each error's kind are counted
    assert first["ColdStart"] == [1.0]
    assert first["ModelLoaded"] == [1.0]  # loaded at init, reported with the first invocation
    assert (first["Errors"], first["ErrorInvalidJson"]) == ([1.0], [1.0])
    call(app, with_body('{"instances": [{}]}', **{"Content-Type": "text/csv"}), lambda_context)
    second = metrics_of(capsys)
    assert "ColdStart" not in second
    assert second["ErrorUnsupportedMediaType"] == [1.0]


# ------------------------------------------------------------------------------------------ self-test


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
