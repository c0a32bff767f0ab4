"""The registry through the admin routes of the local HTTP API (template.yaml served by SAM CLI's API Gateway
emulation, handlers in-process), against a local folder and S3 (moto): publish v1, v2, v3; promote v3; serve;
roll back; serve v2 again.

Locally the routes are open: SAM's emulation does not check AWS_IAM (SigV4) auth; the template test checks that
the deployed routes require it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.local_api import LocalApi
from sklambda.store import ModelStore
from tests.conftest import REPO, load_event
from tests.e2e.test_local_http_api import request

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(three_versions: str) -> Iterator[LocalApi]:
    overrides = {
        "MODEL_STORE_URI": three_versions,
        "ALIAS_REFRESH_SECONDS": "0",
        # No Lambda service locally: promotion runs the serving self-test in-process.
        "PREDICT_FUNCTION_NAME": "",
    }
    with LocalApi(REPO / "template.yaml", port=0, env_overrides=overrides) as local_api:
        yield local_api


def call(api: LocalApi, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    return request(api, method, path, json.dumps(body) if body is not None else None)


def served_version(api: LocalApi) -> int:
    status, body = request(api, "POST", "/predict", load_event("predict")["body"])
    assert status == 200, body
    version: int = body["model"]["version"]
    return version


def test_the_admin_routes_are_served(api: LocalApi) -> None:
    assert {(method, path) for method, path, function in api.routes if function == "AdminFunction"} == {
        ("GET", "/admin/versions"),
        ("GET", "/admin/versions/{version}"),
        ("GET", "/admin/versions/{version}/diff/{other}"),
        ("GET", "/admin/aliases/{alias}"),
        ("POST", "/admin/aliases/{alias}/promote"),
        ("POST", "/admin/aliases/{alias}/rollback"),
    }


def test_promote_serve_roll_back_serve_again_over_the_admin_api(api: LocalApi, three_versions: str) -> None:
    # Given v1, v2 (champion) and v3 (candidate)
    status, listing = call(api, "GET", "/admin/versions")
    assert status == 200
    assert [(row["version"], row["status"], row["aliases"]) for row in listing["versions"]] == [
        (1, "promoted", []),
        (2, "promoted", ["champion"]),
        (3, "candidate", []),
    ]
    assert served_version(api) == 2

    # When v3 is promoted: it is served
    status, change = call(api, "POST", "/admin/aliases/champion/promote", {"version": 3, "reason": "canary ok"})
    assert (status, change["from_version"], change["version"]) == (200, 2, 3), change
    assert served_version(api) == 3

    # When the champion is rolled back (one call): v2 is served again
    status, change = call(api, "POST", "/admin/aliases/champion/rollback", {"reason": "latency alarm"})
    assert (status, change["from_version"], change["version"]) == (200, 3, 2), change
    assert served_version(api) == 2

    # Then the alias history shows both moves with their reasons, and v3 is retired
    status, alias = call(api, "GET", "/admin/aliases/champion")
    assert status == 200
    assert [(m["kind"], m["from_version"], m["to_version"], m["reason"]) for m in alias["history"][-2:]] == [
        ("promote", 2, 3, "canary ok"),
        ("rollback", 3, 2, "latency alarm"),
    ]
    # (no SigV4 locally: the caller is recorded as unauthenticated, with its address and the request id)
    by_pattern = r"unauthenticated caller at 127\.0\.0\.1 via admin API \(request [0-9a-f-]{36}\)"
    assert re.fullmatch(by_pattern, alias["history"][-1]["by"]), alias["history"][-1]["by"]
    status, described = call(api, "GET", "/admin/versions/3")
    assert (status, described["status"]["status"]) == (200, "retired")
    status, diff = call(api, "GET", "/admin/versions/2/diff/3")
    assert (status, diff["metrics"][0]["name"]) == (200, "accuracy")
    assert (
        ModelStore.from_uri(three_versions).status("penguins", 3).reason == "rolled back from champion: latency alarm"
    )


def test_refusals_over_http_are_clear_and_change_nothing(api: LocalApi, three_versions: str) -> None:
    store = ModelStore.from_uri(three_versions)
    before = store.alias("penguins", "champion")
    # A version that does not exist, a malformed body, and a version the serving runtime cannot load
    status, body = call(api, "POST", "/admin/aliases/champion/promote", {"version": 7, "reason": "typo"})
    assert (status, body["error"]) == (404, "model penguins has no version 7")
    assert body["request_id"]  # API Gateway's, as every error of every function carries
    status, body = call(api, "POST", "/admin/aliases/champion/promote", {"version": 3})
    assert (status, body["error"]) == (400, "invalid request: reason: Field required")
    store.objects.put("penguins/versions/000003/model.onnx", b"tampered")
    status, body = call(api, "POST", "/admin/aliases/champion/promote", {"version": 3, "reason": "try"})
    assert status == 422
    assert "penguins v3 model.onnx: sha256" in body["error"]
    assert store.alias("penguins", "champion") == before
    assert served_version(api) == 2
