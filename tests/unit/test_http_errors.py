"""One way to answer an error over HTTP (sklambda.http), checked on each API function: every error body is
{"error", "request_id", ...} with API Gateway's request id, an unexpected exception is a 500 that says nothing of
itself (the log has it, with the request id), numbers in paths and queries are ASCII digits or a 400."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sklambda.contract import ContractViolation, Problem
from sklambda.errors import (
    AliasConflict,
    HttpError,
    IntegrityError,
    ModelUnavailable,
    NotFound,
    RequestError,
    RunInProgress,
    StoreUnavailable,
    VersionRefused,
)
from sklambda.http import error_reply, status_of, whole_number
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event

pytestmark = pytest.mark.unit

SECRET = "s3://private-bucket/models/penguins/alias.json AccessDenied"


def with_request_id(event: dict[str, Any]) -> tuple[dict[str, Any], str]:
    request_id = str(uuid.uuid4())
    event["requestContext"]["requestId"] = request_id
    return event, request_id


def call(app: ModuleType, event: dict[str, Any], context: LambdaContext) -> tuple[int, dict[str, Any], str]:
    event, request_id = with_request_id(event)
    response = app.lambda_handler(event, context)
    return response["statusCode"], json.loads(response["body"]), request_id


def routed(name: str, *, path: str | None = None, body: Any = ..., **changes: Any) -> dict[str, Any]:
    event = load_event(name)
    if path is not None:
        event["path"] = path
    if body is not ...:
        event["body"] = body
    event.update(changes)
    return event


def assert_error(status: int, body: dict[str, Any], request_id: str, expected_status: int) -> None:
    assert status == expected_status, body
    assert body["request_id"] == request_id
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "s3://" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)


# ------------------------------------------------------------------------------------------ the shared layer


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RequestError(413, "too big", kind="BodyTooLarge"), 413),
        (HttpError(409, "running", kind="RunInProgress"), 409),
        (ContractViolation([Problem(row=0, field="x", message="bad")]), 422),
        (NotFound("no version 9"), 404),
        (AliasConflict("moved"), 409),
        (RunInProgress("run-1", "someone"), 409),
        (VersionRefused("self-test failed"), 422),
        (IntegrityError("checksum"), 422),
        (ModelUnavailable("no alias", public="no alias yet"), 503),
        (StoreUnavailable(SECRET), 503),
        (RuntimeError(SECRET), 500),
        (KeyError("x"), 500),
    ],
)
def test_one_status_per_error(error: Exception, status: int) -> None:
    reply = error_reply(error, "r-1")
    assert (status_of(error), reply.status) == (status, status)
    assert reply.body["request_id"] == "r-1"
    if status >= 500:  # a 5xx says what kind of failure, never its detail
        assert SECRET not in reply.text()
        assert "private-bucket" not in reply.text()


def test_a_4xx_message_loses_the_store_location(tmp_path: Path) -> None:
    store = ModelStore.from_uri(str(tmp_path / "store"))
    missing = NotFound(f"{store.uri}/penguins/versions/000009/manifest.json does not exist")
    assert error_reply(missing, "r").body["error"].endswith("penguins/versions/000009/manifest.json does not exist")
    assert str(tmp_path) not in error_reply(missing, "r", store=store).body["error"]
    in_s3 = NotFound("s3://bucket/models/penguins/alias.json does not exist")
    assert error_reply(in_s3, "r").body["error"] == "models/penguins/alias.json does not exist"


@pytest.mark.parametrize("text", ["²", "٣", "1²", "+1", "-1", "0", " 1", "1.0", "", None, "9" * 19, "1e3"])
def test_numbers_are_ascii_digits_within_bounds(text: str | None) -> None:
    with pytest.raises(HttpError) as refused:
        whole_number(text, "version")
    assert refused.value.status == 400
    assert str(refused.value).startswith("version must be a positive whole number, not ")


def test_numbers_within_their_bounds() -> None:
    assert whole_number("7", "version") == 7
    assert whole_number("100", "limit", maximum=100) == 100
    with pytest.raises(HttpError, match="limit must be a whole number from 1 to 100, not '101'"):
        whole_number("101", "limit", maximum=100)


# ------------------------------------------------------------------------------------------ predict


@pytest.fixture
def predict_app(fresh_handler: Callable[..., ModuleType], local_store_copy: Path) -> ModuleType:
    return fresh_handler("functions.predict.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins")


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (routed("predict", body='{"instances": [{"island": "Biscoe"}]}'), 422),
        (routed("predict", body="{not json"), 400),
        (routed("predict", body=None), 400),
        (routed("predict", headers={"Content-Type": "text/plain"}), 415),
        (routed("predict", body=json.dumps({"instances": [{}] * 6000})), 413),
        (routed("health", httpMethod="DELETE"), 405),
        (routed("health", resource="/nowhere", path="/nowhere"), 404),
    ],
)
def test_predict_errors_carry_the_request_id(
    predict_app: ModuleType, lambda_context: LambdaContext, event: dict[str, Any], status: int
) -> None:
    assert_error(*call(predict_app, event, lambda_context), status)


def test_predict_without_a_model_is_a_503_without_the_store_location(
    fresh_handler: Callable[..., ModuleType], lambda_context: LambdaContext, tmp_path: Path
) -> None:
    app = fresh_handler("functions.predict.app", MODEL_STORE_URI=str(tmp_path / "empty"), MODEL_NAME="penguins")
    status, body, request_id = call(app, load_event("predict"), lambda_context)
    assert_error(status, body, request_id, 503)
    assert str(tmp_path) not in body["error"]
    health = json.loads(app.lambda_handler(load_event("health"), lambda_context)["body"])
    assert health["problem"] == "model 'penguins' has no 'champion' alias yet: train one"


def test_predict_bug_is_a_500_that_says_nothing_of_itself(
    predict_app: ModuleType,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a bug deep inside serving (not a client's mistake, not a known failure)
    def broken() -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(predict_app.cache, "get", broken)
    # When a request reaches it
    status, body, request_id = call(predict_app, load_event("predict"), lambda_context)
    # Then the reply is a 500 with the request id and nothing of the error
    assert_error(status, body, request_id, 500)
    assert body == {"error": body["error"], "request_id": request_id}
    assert "RuntimeError" not in body["error"]
    # And the log has the detail and the stack, under the request id
    (error,) = [record for record in caplog.records if record.levelname == "ERROR"]
    assert error.correlation_id == request_id  # type: ignore[attr-defined]
    assert error.exc_info is not None
    assert "private-bucket" in str(error.exc_info[1])


# ------------------------------------------------------------------------------------------ admin


@pytest.fixture
def admin_app(fresh_handler: Callable[..., ModuleType], local_store_copy: Path) -> ModuleType:
    return fresh_handler(
        "functions.admin.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins", PREDICT_FUNCTION_NAME=""
    )


def admin_version(version: str) -> dict[str, Any]:
    event = load_event("admin-versions")
    event.update(resource="/admin/versions/{version}", path=f"/admin/versions/{version}")
    event["pathParameters"] = {"version": version}
    return event


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (admin_version("²"), 400),
        (admin_version("0"), 400),
        (admin_version("99"), 404),
        (routed("admin-promote", body='{"version": "two"}'), 400),
        (routed("admin-promote", body=None), 400),
        (routed("admin-versions", path="/admin/nowhere", resource="/admin/nowhere"), 404),
    ],
)
def test_admin_errors_carry_the_request_id(
    admin_app: ModuleType, lambda_context: LambdaContext, event: dict[str, Any], status: int
) -> None:
    assert_error(*call(admin_app, event, lambda_context), status)


def test_admin_bug_is_a_500_that_says_nothing_of_itself(
    admin_app: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(admin_app.registry, "list_versions", broken)
    status, body, request_id = call(admin_app, load_event("admin-versions"), lambda_context)
    assert_error(status, body, request_id, 500)
    assert set(body) == {"error", "request_id"}


# ------------------------------------------------------------------------------------------ retrain


@pytest.fixture
def retrain_app(fresh_handler: Callable[..., ModuleType], local_store_copy: Path) -> ModuleType:
    return fresh_handler(
        "functions.retrain.app",
        MODEL_STORE_URI=str(local_store_copy),
        MODEL_NAME="penguins",
        DATA_URI=str(PENGUINS_CSV),
        PREDICT_FUNCTION_NAME="",
    )


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (routed("retrain-runs", queryStringParameters={"limit": "²"}), 400),
        (routed("retrain-runs", queryStringParameters={"limit": "101"}), 400),
        (routed("retrain-run", pathParameters={"run_id": "not-a-run"}), 404),
        (routed("retrain-run"), 404),  # a well-formed id that no run has
        (routed("retrain-api", body='{"reason": 3}'), 400),
        (routed("retrain-api", body="not json"), 400),
        (routed("retrain-runs", httpMethod="DELETE"), 404),
    ],
)
def test_retrain_errors_carry_the_request_id(
    retrain_app: ModuleType, lambda_context: LambdaContext, event: dict[str, Any], status: int
) -> None:
    assert_error(*call(retrain_app, event, lambda_context), status)


def test_retrain_in_progress_is_a_409_with_the_running_run(
    retrain_app: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(*_: Any, **__: Any) -> None:
        raise RunInProgress("20261127T030000000Z-1a2b3c4d", "the schedule")

    monkeypatch.setattr(retrain_app, "reserve_run", busy)
    status, body, request_id = call(retrain_app, load_event("retrain-api"), lambda_context)
    assert_error(status, body, request_id, 409)
    assert body["run_id"] == "20261127T030000000Z-1a2b3c4d"
    assert body["status_url"] == "/retrain/20261127T030000000Z-1a2b3c4d"


def test_retrain_bug_is_a_500_that_says_nothing_of_itself(
    retrain_app: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(retrain_app, "_run_log", broken)
    status, body, request_id = call(retrain_app, load_event("retrain-runs"), lambda_context)
    assert_error(status, body, request_id, 500)
    assert set(body) == {"error", "request_id"}
