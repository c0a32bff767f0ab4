"""Request bodies are never logged: feature values may be personal data. The predict function's log lines (and the
shared code's) name what happened, never what the client sent, even at DEBUG level; and Powertools never logs the
incoming event (no POWERTOOLS_LOGGER_LOG_EVENT in the template: tests/template/test_production.py)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO, LambdaContext, load_event

pytestmark = pytest.mark.unit

# Values that only a request carries: none may appear in any log line.
SENTINELS = ("48.61234567", "ZQ_UNKNOWN_FIELD", "ZQ_FIELD_VALUE", "ZQ_ISLAND", "ZQ_NOT_JSON")


def predict_event(body: str) -> dict[str, Any]:
    event = load_event("predict")
    event["body"] = body
    return event


def bodies() -> list[tuple[str, int]]:
    """(body, expected status): a good request, and the refusals whose replies quote the request."""
    row = json.loads(load_event("predict")["body"])["instances"][0]
    return [
        (json.dumps({"instances": [{**row, "bill_length_mm": 48.61234567}]}), 200),
        (json.dumps({"instances": [{**row, "ZQ_UNKNOWN_FIELD": "ZQ_FIELD_VALUE"}]}), 422),
        (json.dumps({"instances": [{**row, "island": "ZQ_ISLAND"}]}), 422),
        ('{"instances": [ZQ_NOT_JSON', 400),
    ]


def test_predict_never_logs_what_the_client_sent(
    fresh_handler: Callable[..., ModuleType],
    local_store_copy: Path,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given the predict function logging everything it can (DEBUG), Powertools' and the shared code's loggers
    caplog.set_level(logging.DEBUG)
    app = fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(local_store_copy),
        MODEL_NAME="penguins",
        POWERTOOLS_LOG_LEVEL="DEBUG",
    )
    # (Powertools configures a service's logger once per process, writing to the stdout of that moment: set the
    # level again and read its lines, formatted as in Lambda, from a buffer of our own.)
    app.logger.setLevel(logging.DEBUG)
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(app.logger.registered_formatter)
    app.logger.addHandler(handler)
    try:
        # When it answers good and bad requests that carry the sentinels
        for body, status in bodies():
            assert app.lambda_handler(predict_event(body), lambda_context)["statusCode"] == status, body
    finally:
        app.logger.removeHandler(handler)
    # Then it did log (the refusals, at DEBUG), but no line holds anything the client sent
    output = capsys.readouterr()
    logged = lines.getvalue() + output.out + output.err + caplog.text
    assert '"message":"request refused"' in lines.getvalue()
    assert [sentinel for sentinel in SENTINELS if sentinel in logged] == []


def test_no_handler_asks_powertools_to_log_events() -> None:
    # inject_lambda_context(log_event=True) would log every event, bodies included
    for handler in (REPO / "functions").glob("*/app.py"):
        assert "log_event" not in handler.read_text(), handler
