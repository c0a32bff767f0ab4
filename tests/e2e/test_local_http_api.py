"""End to end through the local HTTP API: template.yaml's routes served by SAM CLI's API Gateway emulation with
the real handlers in-process (what `make serve` runs), against a local model store."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.local_api import LocalApi
from tests.conftest import PENGUINS_CSV, REPO, load_event

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(local_store_copy: Path) -> Iterator[LocalApi]:
    new_upload = local_store_copy.parent / "penguins-next-month.csv"
    shutil.copyfile(PENGUINS_CSV, new_upload)
    overrides = {
        "MODEL_STORE_URI": str(local_store_copy),
        # New data for the retrain (a new file of the sample's rows: the data fingerprint covers names and bytes);
        # on the champion's own data, configuration and code an API run would publish nothing ("skipped").
        "DATA_URI": str(new_upload),
        "ALIAS_REFRESH_SECONDS": "0",
        # The retrain gate runs the serving self-test in-process: a synchronous function-to-function call would
        # wait on the runner's one-invocation-at-a-time lock that the calling function holds.
        "PREDICT_FUNCTION_NAME": "",
    }
    # lambda_port=0: the Lambda Invoke API on a free port; POST /retrain queues its run through it.
    with LocalApi(REPO / "template.yaml", port=0, lambda_port=0, env_overrides=overrides) as local_api:
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


def wait_for_run(api: LocalApi, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, run = request(api, "GET", f"/retrain/{run_id}")
        assert status == 200, run
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def test_retrain_over_http_runs_asynchronously_then_predict_serves_the_new_version(api: LocalApi) -> None:
    # When a retrain is requested over HTTP on new data
    status, queued = request(api, "POST", "/retrain", load_event("retrain-api")["body"])

    # Then it answers 202 at once with a run id; the function invoked itself (InvocationType=Event) through the
    # local Lambda Invoke API, and the run finishes in the background with v2 promoted
    assert status == 202, queued
    assert queued["status"] == "queued"
    assert queued["status_url"] == f"/retrain/{queued['run_id']}"
    run = wait_for_run(api, queued["run_id"])
    assert (run["status"], run["version"], run["trigger"]) == ("promoted", 2, "api"), run
    assert all(check["passed"] for check in run["gate"])
    status, body = request(api, "POST", "/predict", load_event("predict")["body"])
    assert (status, body["model"]["version"]) == (200, 2)

    status, history = request(api, "GET", "/retrain")
    assert status == 200
    # And the run history lists it, newest first, above the `python -m training train` run that made v1
    newest, *older = history["runs"]
    assert (newest["run_id"], newest["version"]) == (queued["run_id"], 2)
    assert [(item["trigger"], item["version"]) for item in older] == [("cli", 1)]


def test_unknown_run_over_http_is_404(api: LocalApi) -> None:
    status, body = request(api, "GET", "/retrain/20260101T000000000Z-00000000")
    assert status == 404
    assert "has no run" in body["error"]


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


def test_each_request_gets_its_own_request_id(api: LocalApi) -> None:
    # Given two identical predictions
    first = request(api, "POST", "/predict", load_event("predict")["body"])[1]
    second = request(api, "POST", "/predict", load_event("predict")["body"])[1]
    # Then each reply names a request id of its own, as API Gateway gives
    assert first["request_id"] != second["request_id"]
