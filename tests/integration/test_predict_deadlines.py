"""Issue 13's deadline faults: a store that answers each call only after 5 s, and one that sends its replies a
byte at a time. The predict function's store work runs against one deadline per request (Lambda's time left) and
one for its init, so a warm function answers with its last good model and a cold one with a 503, each inside
the function's timeout: never a Lambda timeout. Real HTTP (a proxy in front of a moto server), real sockets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sklambda.store import ModelStore
from tests.conftest import BUCKET, LambdaContext, load_event, upload_store
from tests.faults import Fault, S3FaultProxy

pytestmark = pytest.mark.integration

PREDICT_TIMEOUT_SECONDS = 10  # template.yaml: PredictFunction Timeout
INIT_LIMIT_SECONDS = 10  # Lambda's init phase (on demand)
ENVIRONMENT = {"MODEL_STORE_URI": f"s3://{BUCKET}/models", "MODEL_NAME": "penguins", "ALIAS_REFRESH_SECONDS": "0"}
FAULTS: list[Fault] = ["slow", "trickle"]


def timed_predict(app: ModuleType) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = app.lambda_handler(load_event("predict"), LambdaContext())
    return response["statusCode"], json.loads(response["body"]), time.monotonic() - started


@pytest.mark.parametrize("fault", FAULTS)
def test_a_warm_function_answers_with_its_last_good_model_inside_the_timeout(
    s3_proxy: S3FaultProxy, trained_store: Path, fresh_handler: Callable[..., ModuleType], fault: Fault
) -> None:
    # Given a warm function serving v1 from S3, and the alias since moved to v2 (a copy of v1)
    upload_store(trained_store, f"s3://{BUCKET}/models")
    app = fresh_handler("functions.predict.app", **ENVIRONMENT)
    assert timed_predict(app)[0] == 200
    store = ModelStore.from_uri(ENVIRONMENT["MODEL_STORE_URI"])
    v1 = store.manifest("penguins", 1)
    files = {file: store.artifact(v1, file) for file in v1.artifacts}
    v2 = store.publish(v1.model_copy(update={"manifest_sha256": None}), files)
    store.promote("penguins", v2.version, by="test", reason="a new version to fetch")
    # When every store call is slow (or trickles its body) while the request reads the alias, v2's manifest and
    # its artifact
    with s3_proxy.failing(fault):
        status, body, seconds = timed_predict(app)
    # Then v1 answers, inside the function's timeout, and the store was indeed asked
    assert (status, body["model"]["version"]) == (200, 1)
    assert seconds < PREDICT_TIMEOUT_SECONDS
    assert s3_proxy.failed_requests >= 1


@pytest.mark.parametrize("fault", FAULTS)
def test_a_cold_function_ends_its_init_and_answers_503_inside_the_limits(
    s3_proxy: S3FaultProxy, trained_store: Path, fresh_handler: Callable[..., ModuleType], fault: Fault
) -> None:
    # Given a champion in S3, and a store that is slow (or trickles) while a new container starts
    upload_store(trained_store, f"s3://{BUCKET}/models")
    with s3_proxy.failing(fault):
        # When the function initialises and its first request comes
        started = time.monotonic()
        app = fresh_handler("functions.predict.app", **ENVIRONMENT)
        init_seconds = time.monotonic() - started
        status, body, seconds = timed_predict(app)
    # Then the init ended inside Lambda's init limit and the request answered 503 with the reason in time
    assert init_seconds < INIT_LIMIT_SECONDS
    assert status == 503
    assert body["error"].startswith("no model available: the model store is unavailable")
    assert seconds < PREDICT_TIMEOUT_SECONDS
    # And once the store answers promptly again, the same container serves the champion
    assert timed_predict(app)[:2][0] == 200
