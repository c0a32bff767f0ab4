"""Predict function: POST /predict, GET /health, GET /model, GET /openapi.json, and the retrain gate's self-test
(direct invocation).

Thin on purpose: routes, the mapping to HTTP and metrics live here; the logic is in sklambda (shared layer).
Routing is a table rather than Powertools' APIGatewayRestResolver: measured on this code, the resolver costs
~60 µs per request and ~50 ms of cold start (it imports asyncio and the AppSync resolvers), against a budget of
100 µs of handler time over the bare model. Without the resolver there is no response validation either, so
Powertools' 422-for-a-bad-response trap (powertools #5888) cannot occur: our replies are built, not validated.
Logging and metrics (EMF) are Powertools'. No Tracer: importing it costs ~250 ms of cold start. No
`inject_lambda_context` either: it costs ~9 µs per request to tag log lines that the hot path never writes; the
few lines this function logs carry the request id themselves, under the key that correlation id has in the other
functions' logs (`correlation_id`). Tracing (the TracingMode parameter) is Lambda's own, without the X-Ray SDK.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda.api import (
    Limits,
    check_content_type,
    dumps,
    error_reply,
    model_description,
    parse_predict_request,
    predict_reply,
    request_bytes,
)
from sklambda.capture import open_capture
from sklambda.contract import ContractViolation
from sklambda.emf import fast_metrics
from sklambda.errors import ModelUnavailable, RequestError, SklambdaError
from sklambda.openapi import build_spec
from sklambda.serving import LoadedModel, ModelCache, load_version
from sklambda.settings import CaptureSettings, ServingSettings
from sklambda.store import ModelStore

logger = Logger()
# Powertools Metrics through a provider that costs ~15 us per request where Powertools' own costs ~45 (sklambda/emf.py).
metrics = fast_metrics()
# A request that records no metric of its own (e.g. GET /health) is normal here, not a mistake to warn about.
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = ServingSettings.from_env()
limits = Limits(
    max_body_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth, max_rows=settings.max_rows
)
store = ModelStore.from_uri(settings.model_store_uri)
# A sample of answered requests for the monitor (sklambda/capture.py); None when capture is off.
capture = open_capture(CaptureSettings.from_env())

Response = dict[str, Any]
Route = Callable[[dict[str, Any], str], Response]


def _record_event(name: str, **details: Any) -> None:
    """Model cache events (ModelLoaded, ModelLoadRefused, StoreUnavailable, ServingLastGoodModel) as metrics."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


cache = ModelCache(
    store=store,
    name=settings.model_name or "",
    alias=settings.model_alias,
    runtime=settings.serving_runtime,
    refresh_seconds=settings.alias_refresh_seconds,
    on_event=_record_event,
    allow_unknown_fields=settings.allow_unknown_fields,
)
# Load and self-test at init, so the first request finds the model ready (and provisioned concurrency or
# SnapStart start warm). A store that fails now leaves the cache empty; requests retry.
cache.prime()

try:  # Lambda's SnapStart runtime hooks (in its Python 3.12+ runtimes; absent on a laptop)
    from snapshot_restore_py import register_after_restore  # type: ignore[import-not-found]
except ImportError:
    pass
else:
    # With PredictWarmStart=snapstart, instances resume from a snapshot taken after cache.prime() at publish time:
    # re-read the alias on the first request after a restore rather than up to ALIAS_REFRESH_SECONDS later.
    register_after_restore(cache.recheck)


# ------------------------------------------------------------------------------------------ routes


def predict(event: dict[str, Any], request_id: str) -> Response:
    started = time.perf_counter()
    try:
        check_content_type(_header(event, "Content-Type"))
        raw = request_bytes(event.get("body"), base64_encoded=bool(event.get("isBase64Encoded")), limits=limits)
        request = parse_predict_request(raw, limits)
        model = cache.get()
        columns = request.columns(model.validator)
        prediction = model.predict(columns)
        body = predict_reply(model, prediction, request_id, probabilities=request.probabilities)
    except (RequestError, ContractViolation, ModelUnavailable) as error:
        return _error(error, request_id)
    if capture is not None and (dropped := capture.record(request_id, model.name, model.version, columns, prediction)):
        metrics.add_metric(name="CaptureDropped", unit=MetricUnit.Count, value=dropped)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000)
    metrics.add_metric(name="RowsPredicted", unit=MetricUnit.Count, value=request.rows)
    _record_version(model.version, started)
    if prediction.probabilities is not None:
        _record_classes(_documents(model).class_metrics, prediction.probabilities)
    return _response(200, body)


def health(event: dict[str, Any], request_id: str) -> Response:
    """Liveness (always 200 while the function runs) and the version being served, if any."""
    try:
        model: LoadedModel | None = cache.get()
    except ModelUnavailable:
        model = None
    served = None if model is None else {"name": model.name, "version": model.version, "runtime": model.runtime}
    problem = cache.problem if model is not None else cache.problem or "no model loaded yet"
    return _response(200, dumps({"status": "ok" if model else "unavailable", "model": served, "problem": problem}))


def describe(event: dict[str, Any], request_id: str) -> Response:
    try:
        model = cache.get()
    except ModelUnavailable as error:
        return _error(error, request_id)
    return _response(200, _documents(model).description)


def openapi(event: dict[str, Any], request_id: str) -> Response:
    try:
        model: LoadedModel | None = cache.get()
    except ModelUnavailable:
        model = None
    return _response(200, _documents(model).spec if model is not None else dumps(build_spec(None, limits)))


ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/predict"): predict,
    ("GET", "/health"): health,
    ("GET", "/model"): describe,
    ("GET", "/openapi.json"): openapi,
}


# ------------------------------------------------------------------------------------------ helpers


class _Documents:
    """What depends only on the served version, built once per version: GET /model, GET /openapi.json, and
    the metric name of each class."""

    def __init__(self, model: LoadedModel) -> None:
        self.version = model.version
        self.description = dumps(model_description(model, model.validator, limits))
        self.spec = dumps(build_spec(model, limits))
        self.class_metrics = [_class_metric(label) for label in model.manifest.classes or ()]


_documents_cache: dict[str, _Documents] = {}


def _documents(model: LoadedModel) -> _Documents:
    documents = _documents_cache.get("current")
    if documents is None or documents.version != model.version:
        documents = _documents_cache["current"] = _Documents(model)
    return documents


_version_recorded = {"version": 0, "until": float("-inf")}


def _record_version(version: int, now: float) -> None:
    """ModelVersion, a gauge: once a minute per container and whenever the version changes. CloudWatch keeps
    standard metrics per minute, so its minimum and maximum per minute are what every request would give, for
    ~5 µs less per request (Powertools' add_metric)."""
    if version != _version_recorded["version"] or now >= _version_recorded["until"]:
        metrics.add_metric(name="ModelVersion", unit=MetricUnit.NoUnit, value=version)
        _version_recorded.update(version=version, until=now + 60)


def _record_classes(metric_names: list[str], probabilities: np.ndarray) -> None:
    """One count per predicted class, from the probabilities: the label is the class of the highest one (exact
    ties aside). ~10 µs for 1000 rows, where counting the label strings costs 50-100 µs (hashing or comparing
    each new string)."""
    counts = np.bincount(np.argmax(probabilities, axis=1), minlength=len(metric_names))
    for name, count in zip(metric_names, counts.tolist(), strict=False):
        if count:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)


def _class_metric(label: Any) -> str:
    # CloudWatch metric names: keep them printable and short whatever the class labels are.
    return "Predicted_" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(label))[:200]


def _header(event: dict[str, Any], name: str) -> str | None:
    headers = event.get("headers") or {}
    value = headers.get(name)  # the usual spelling first; HTTP header names are case-insensitive
    if value is None:
        lowered = name.lower()
        value = next((candidate for key, candidate in headers.items() if key.lower() == lowered), None)
    return value if isinstance(value, str) else None


def _response(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})}, "body": body}


def _error(error: RequestError | ContractViolation | ModelUnavailable, request_id: str) -> Response:
    if isinstance(error, ModelUnavailable):
        status, kind = 503, "ModelUnavailable"
        body = dumps({"error": f"no model available: {error}", "request_id": request_id})
        logger.warning("no model available", extra={"detail": str(error), "correlation_id": request_id})
    else:
        if isinstance(error, ContractViolation):
            status, kind = 422, "ContractViolation"
        else:
            status, kind = error.status, error.kind
        body = error_reply(error, request_id)
        # The kind only: messages may quote client data.
        logger.debug("request refused", extra={"status": status, "kind": kind, "correlation_id": request_id})
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=f"Error{kind}", unit=MetricUnit.Count, value=1)
    return _response(status, body)


def _not_routed(event: dict[str, Any], request_id: str) -> Response:
    """API Gateway only sends the template's routes; this answers anything else sent straight to the function."""
    path, method = event.get("resource") or event.get("path"), event.get("httpMethod")
    allowed = sorted(route_method for route_method, route_path in ROUTES if route_path == path)
    if allowed:
        body = dumps({"error": f"{method} is not allowed on {path}", "request_id": request_id})
        return _response(405, body, {"Allow": ", ".join(allowed)})
    return _response(404, dumps({"error": "no such route", "request_id": request_id}))


def self_test(request: dict[str, Any]) -> dict[str, Any]:
    """Load a stored version with this function's runtime and run its parity self-test (the retrain gate asks
    this before promoting, so the check runs the real serving code). Reachable only by direct invocation."""
    try:
        if request.get("name", settings.model_name) != settings.model_name:
            raise ValueError(f"this function serves {settings.model_name}, not {request.get('name')}")
        manifest = store.manifest(settings.model_name or "", int(request["version"]))
        loaded = load_version(store, manifest, settings.serving_runtime)
    except (SklambdaError, KeyError, ValueError, TypeError) as error:
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}
    return {"ok": True, "version": loaded.version, "runtime": loaded.runtime, "load_seconds": loaded.load_seconds}


def _request_id(event: dict[str, Any], context: LambdaContext) -> str:
    # API Gateway's id (in its access logs and the x-amzn-RequestId header), else Lambda's own.
    request_id = (event.get("requestContext") or {}).get("requestId")
    return request_id if isinstance(request_id, str) and request_id else context.aws_request_id


@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "self_test" in event:
        return self_test(event["self_test"])
    request_id = _request_id(event, context)
    route = ROUTES.get((event.get("httpMethod"), event.get("resource")))  # type: ignore[arg-type]
    if route is None:
        return _not_routed(event, request_id)
    return route(event, request_id)
