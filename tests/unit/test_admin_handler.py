"""The admin function in-process against a local store, driven by the events/ files (IAM-signed requests as API
Gateway delivers them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sklambda.manifest import StatusRecord
from sklambda.store import ModelStore
from tests.conftest import LambdaContext, load_event

pytestmark = pytest.mark.unit

ALICE = "arn:aws:sts::123456789012:assumed-role/ModelOperators/alice"


@pytest.fixture
def two_versions(local_store_copy: Path) -> ModelStore:
    """The trained store (v1 champion) plus v2, a published copy of v1 (not promoted)."""
    store = ModelStore.from_uri(str(local_store_copy))
    manifest = store.manifest("penguins", 1)
    files = {file: store.artifact(manifest, file) for file in manifest.artifacts}
    store.publish(manifest.model_copy(update={"artifacts": {}, "manifest_sha256": None}), files)
    return store


@pytest.fixture
def admin_app(fresh_handler: Callable[..., ModuleType], two_versions: ModelStore) -> ModuleType:
    return fresh_handler(
        "functions.admin.app", MODEL_STORE_URI=two_versions.uri, MODEL_NAME="penguins", PREDICT_FUNCTION_NAME=""
    )


def call(app: ModuleType, event: dict[str, Any], context: LambdaContext) -> tuple[int, dict[str, Any]]:
    response = app.lambda_handler(event, context)
    return response["statusCode"], json.loads(response["body"])


def event(name: str, *, body: Any = ..., path: str | None = None, **path_parameters: str) -> dict[str, Any]:
    loaded = load_event(name)
    if body is not ...:
        loaded["body"] = body if isinstance(body, str) or body is None else json.dumps(body)
    if path is not None:
        loaded["path"] = path
        loaded["requestContext"]["path"] = "/v1" + path
    if path_parameters:
        loaded["pathParameters"] = path_parameters
    return loaded


def test_list_versions(admin_app: ModuleType, lambda_context: LambdaContext) -> None:
    status, body = call(admin_app, load_event("admin-versions"), lambda_context)
    assert status == 200
    assert body["model"] == "penguins"
    assert [(row["version"], row["status"], row["aliases"]) for row in body["versions"]] == [
        (1, "promoted", ["champion"]),
        (2, "candidate", []),
    ]
    assert body["versions"][0]["metric"] == "accuracy"


def test_promote_then_rollback_records_the_signed_caller(
    admin_app: ModuleType, lambda_context: LambdaContext, two_versions: ModelStore
) -> None:
    # When an IAM-signed operator promotes v2, then rolls back
    status, promoted = call(admin_app, load_event("admin-promote"), lambda_context)
    assert status == 200, promoted
    assert (promoted["from_version"], promoted["version"], promoted["moved"]) == (1, 2, True)
    status, rolled = call(admin_app, load_event("admin-rollback"), lambda_context)
    assert status == 200, rolled
    assert (rolled["from_version"], rolled["version"], rolled["previous"]) == (2, 1, [])

    # Then the history names the caller API Gateway verified, the request, and the reasons
    state = two_versions.alias("penguins", "champion")
    assert state is not None
    last_two = [(m.kind, m.from_version, m.to_version, m.by, m.reason) for m in state.record.history[-2:]]
    via = f"{ALICE} via admin API (request c6af9ac6-7b61-11e6-9a41-93e8deadbeef)"
    assert last_two == [
        ("promote", 1, 2, via, "canary on 10% looked fine for an hour"),
        ("rollback", 2, 1, via, "error-rate alarm fired after the promotion"),
    ]
    # And the alias route shows the same
    status, alias = call(admin_app, event("admin-versions", path="/admin/aliases/champion"), lambda_context)
    assert (status, alias["version"], len(alias["history"])) == (200, 1, 3)


def test_describe_and_diff(admin_app: ModuleType, lambda_context: LambdaContext) -> None:
    status, body = call(admin_app, event("admin-versions", path="/admin/versions/2"), lambda_context)
    assert status == 200
    assert (body["manifest"]["version"], body["status"]["status"]) == (2, "candidate")
    assert set(body["manifest"]["artifacts"]) == {"model.joblib", "model.onnx", "model.baseline.json"}
    status, body = call(admin_app, event("admin-versions", path="/admin/versions/1/diff/2"), lambda_context)
    assert status == 200
    assert (body["base"], body["other"], body["features_changed"], body["data"]) == (1, 2, [], [])


@pytest.mark.parametrize(
    ("request_event", "status", "message"),
    [
        (event("admin-promote", body="{"), 400, "invalid request: body: Invalid JSON"),
        (event("admin-promote", body=None), 400, "the request has no body; send JSON with version, reason"),
        (event("admin-promote", body={"version": 2}), 400, "invalid request: reason: Field required"),
        (
            event("admin-promote", body={"version": "2", "reason": "x"}),
            400,
            "invalid request: version: Input should be a valid integer",
        ),
        (
            event("admin-promote", body={"version": 2, "reason": "x", "force": True}),
            400,
            "invalid request: force: Extra inputs",
        ),
        (event("admin-promote", body={"version": 9, "reason": "x"}), 404, "model penguins has no version 9"),
        (
            event("admin-versions", path="/admin/versions/abc"),
            400,
            "version must be a positive whole number, not 'abc'",
        ),
        (event("admin-versions", path="/admin/versions/0"), 400, "version must be a positive whole number"),
        (event("admin-versions", path="/admin/aliases/staging"), 404, "model penguins has no alias 'staging'"),
        (event("admin-versions", path="/admin/aliases/-x"), 400, "invalid alias '-x'"),
        (
            event("admin-rollback", path="/admin/aliases/staging/rollback"),
            404,
            "alias 'staging' of penguins does not exist",
        ),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_change_nothing(
    admin_app: ModuleType,
    lambda_context: LambdaContext,
    two_versions: ModelStore,
    request_event: dict[str, Any],
    status: int,
    message: str,
) -> None:
    before = two_versions.alias("penguins", "champion")
    got, body = call(admin_app, request_event, lambda_context)
    assert (got, body["error"][: len(message)]) == (status, message)
    assert two_versions.alias("penguins", "champion") == before


def test_promoting_a_rejected_version_or_rolling_back_too_far_is_422(
    admin_app: ModuleType, lambda_context: LambdaContext, two_versions: ModelStore
) -> None:
    two_versions.set_status("penguins", 2, StatusRecord(status="rejected", reason="worse than the champion"))
    before = two_versions.alias("penguins", "champion")
    status, body = call(admin_app, load_event("admin-promote"), lambda_context)
    assert (status, body["error"]) == (422, "penguins v2 was rejected (worse than the champion); it cannot be promoted")
    status, body = call(admin_app, load_event("admin-rollback"), lambda_context)
    assert (status, body["error"]) == (422, "alias 'champion' of penguins has no previous version to roll back to")
    assert two_versions.alias("penguins", "champion") == before


def test_promotion_asks_the_deployed_predict_function_and_obeys_its_refusal(
    fresh_handler: Callable[..., ModuleType],
    two_versions: ModelStore,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an admin function deployed next to a predict function whose runtime refuses v2
    calls: list[tuple[str, dict[str, Any]]] = []

    def invoke_json(function_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append((function_name, payload))
        return {
            "ok": False,
            "detail": "VersionRefused: penguins v2 failed its self-test: 3 of 20 golden classes differ",
        }

    monkeypatch.setattr("sklambda.aws.invoke_json", invoke_json)
    app = fresh_handler(
        "functions.admin.app",
        MODEL_STORE_URI=two_versions.uri,
        MODEL_NAME="penguins",
        PREDICT_FUNCTION_NAME="sklambda-PredictFunction-abc",
    )
    before = two_versions.alias("penguins", "champion")

    # When promoting v2
    status, body = call(app, load_event("admin-promote"), lambda_context)

    # Then the predict function was asked to self-test exactly v2, its refusal is the answer, and nothing moved
    assert calls == [("sklambda-PredictFunction-abc", {"self_test": {"name": "penguins", "version": 2}})]
    assert (status, body["error"]) == (
        422,
        "VersionRefused: penguins v2 failed its self-test: 3 of 20 golden classes differ",
    )
    assert two_versions.alias("penguins", "champion") == before
    assert two_versions.status("penguins", 2).status == "candidate"
