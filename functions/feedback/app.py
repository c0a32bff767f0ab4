"""Feedback function: POST /feedback takes ground truth for earlier predictions (sklambda/feedback.py says what a
request looks like and how it is checked) and stores it beside the captures, where the monitor joins it.

A function of its own rather than a route of predict: it writes to S3 (predict's role only reads), it reads the
champion's manifest per call rather than holding a loaded model, and its traffic must not share predict's
concurrency, canary or latency alarms. Labels are never logged (they may be personal data, like the features).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda import metric_names
from sklambda.api import RequestLimits, check_content_type, dumps, request_bytes
from sklambda.contract import ContractViolation
from sklambda.errors import NotFound, RequestError, SklambdaError
from sklambda.feedback import FeedbackLimits, check_labels, feedback_object, parse_feedback
from sklambda.locations import open_object_store
from sklambda.manifest import Manifest
from sklambda.settings import FeedbackSettings
from sklambda.store import ModelStore

logger = Logger()
metrics = Metrics()
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = FeedbackSettings.from_env()
store = ModelStore.from_uri(settings.model_store_uri)
limits = FeedbackLimits(
    max_labels=settings.max_feedback_labels, max_rows=settings.max_rows, max_body_bytes=settings.max_body_bytes
)
# The champion's manifest (classes, task) is re-read at most this often.
MANIFEST_SECONDS = 30.0
_champion: dict[str, Any] = {"manifest": None, "until": 0.0}


def _serving_manifest() -> Manifest:
    now = time.monotonic()
    if _champion["manifest"] is None or now >= _champion["until"]:
        name = settings.model_name or ""
        state = store.alias(name, settings.model_alias)
        if state is None:
            raise NotFound(f"model {name} has no {settings.model_alias} yet: nothing was predicted to give labels for")
        _champion.update(manifest=store.manifest(name, state.record.version), until=now + MANIFEST_SECONDS)
    manifest: Manifest = _champion["manifest"]
    return manifest


def _reply(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": dumps(body)}


def record_feedback(event: dict[str, Any], request_id: str) -> dict[str, Any]:
    model: dict[str, Any] | None = None
    try:
        if settings.capture_uri is None:
            raise RequestError(409, "capture is off in this deployment: labels could never be joined to predictions")
        headers = {key.lower(): value for key, value in (event.get("headers") or {}).items()}
        check_content_type(headers.get("content-type"))
        raw = request_bytes(
            event.get("body"),
            base64_encoded=bool(event.get("isBase64Encoded")),
            limits=RequestLimits(limits.max_body_bytes, max_json_depth=10, max_rows=limits.max_rows),
        )
        items = parse_feedback(raw, limits)
        manifest = _serving_manifest()
        model = {"name": manifest.name, "version": manifest.version}
        records = check_labels(items, manifest.task, manifest.classes, limits)
        key, data = feedback_object(records, manifest.name, manifest.version, request_id)
        open_object_store(settings.capture_uri).put(key, data, if_none_match=True)
    except ContractViolation as error:
        metrics.add_metric(name=metric_names.FEEDBACK_REFUSED, unit=MetricUnit.Count, value=1)
        problems = [problem.as_json() for problem in error.problems]
        return _reply(
            422,
            {
                "error": str(error),
                "problems": problems,
                "problem_count": error.total,
                "model": model,
                "request_id": request_id,
            },
        )
    except RequestError as error:
        metrics.add_metric(name=metric_names.FEEDBACK_REFUSED, unit=MetricUnit.Count, value=1)
        return _reply(error.status, {"error": str(error), "model": model, "request_id": request_id})
    except NotFound as error:
        return _reply(503, {"error": str(error), "model": model, "request_id": request_id})
    except SklambdaError as error:  # the store: an outage, not the client's mistake
        logger.warning("feedback not stored", extra={"kind": type(error).__name__, "correlation_id": request_id})
        return _reply(
            503, {"error": f"the labels could not be stored: {error}", "model": model, "request_id": request_id}
        )
    metrics.add_metric(name=metric_names.FEEDBACK_LABELS, unit=MetricUnit.Count, value=len(records))
    return _reply(
        202,
        {
            "accepted": len(records),
            "model": model,
            "request_id": request_id,
            "note": "labels are joined to the captured predictions by the next monitor run",
        },
    )


@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request_id = (event.get("requestContext") or {}).get("requestId") or context.aws_request_id
    if (event.get("httpMethod"), event.get("resource")) != ("POST", "/feedback"):
        return _reply(404, {"error": "no such route", "request_id": request_id})
    return record_feedback(event, request_id)
