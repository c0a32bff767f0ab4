"""End to end through the local HTTP API: template.yaml's routes served by SAM CLI's API Gateway emulation with
the real handlers in-process (what `make serve` runs), against a local model store."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.local_api import LocalApi
from tests.conftest import PENGUINS_CSV, REPO, load_event

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(local_store_copy: Path) -> Iterator[LocalApi]:
    overrides = {
        "MODEL_STORE_URI": str(local_store_copy),
        "DATA_URI": str(PENGUINS_CSV),
        "ALIAS_REFRESH_SECONDS": "0",
        # No Lambda service locally: the retrain gate runs the serving self-test in-process.
        "PREDICT_FUNCTION_NAME": "",
    }
    with LocalApi(REPO / "template.yaml", port=0, env_overrides=overrides) as local_api:
        yield local_api


def request(api: LocalApi, method: str, path: str, body: str | None = None) -> tuple[int, dict[str, Any]]:
    data = body.encode() if body is not None else None
    outgoing = urllib.request.Request(
        api.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(outgoing, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_template_routes_are_served(api: LocalApi) -> None:
    assert {(method, path) for method, path, _ in api.routes} >= {
        ("POST", "/predict"),
        ("GET", "/health"),
        ("POST", "/retrain"),
    }


def test_predict_over_http_names_the_version(api: LocalApi) -> None:
    status, body = request(api, "POST", "/predict", load_event("predict")["body"])
    assert status == 200
    assert body["model"] == {"name": "penguins", "version": 1}
    assert body["predictions"] == ["Gentoo", "Adelie"]


def test_malformed_json_over_http_is_400(api: LocalApi) -> None:
    status, body = request(api, "POST", "/predict", '{"instances": [}')
    assert status == 400
    assert body["error"].startswith("the body is not valid JSON")


def test_retrain_over_http_then_predict_serves_the_new_version(api: LocalApi) -> None:
    # When a retrain is requested over HTTP on the same data
    status, run = request(api, "POST", "/retrain", load_event("retrain-api")["body"])

    # Then v2 is promoted and the next prediction names it
    assert status == 200, run
    assert (run["model"]["version"], run["promoted"]) == (2, True)
    status, body = request(api, "POST", "/predict", load_event("predict")["body"])
    assert (status, body["model"]["version"]) == (200, 2)


def test_a_body_that_is_not_utf8_is_a_400_not_a_gateway_error(api: LocalApi) -> None:
    # Given a body with bytes that are not UTF-8 (API Gateway passes such text on with U+FFFD in their place)
    body = b'{"instances": [\xff\xfe]}'
    headers = {"Content-Type": "application/json"}
    outgoing = urllib.request.Request(api.url + "/predict", data=body, method="POST", headers=headers)
    # When it is sent
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(outgoing, timeout=60)
    # Then the function answers 400 (SAM CLI's emulation alone would answer 502)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"].startswith("the body is not valid JSON")
