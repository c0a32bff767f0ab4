"""Predict function: POST /predict, GET /health, GET /model, GET /openapi.json, and the self-test the retrain gate
and the admin API ask for before promoting (direct invocation).

Thin on purpose: routes, replies and metrics here; the logic is in sklambda (shared layer), the error replies in
sklambda.http as for every API function. Routing is a table rather than Powertools' APIGatewayRestResolver: the
resolver adds time to every request and to the cold start (it imports asyncio and the AppSync resolvers), and the
handler's time over the bare model has a budget (`python -m benchmarks --only warm` measures both). Without the
resolver there is no response validation either, so Powertools' 422-for-a-bad-response trap (powertools #5888)
cannot occur: replies are built, not validated. No Tracer (its import is the largest cold-start cost) and no
`inject_lambda_context` (per-request work to tag log lines the hot path never writes): the few lines this
function logs carry the request id themselves, under the key the other functions use (`correlation_id`).
Tracing (the TracingMode parameter) is Lambda's own, without the X-Ray SDK.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda import metric_names
from sklambda.api import (
    PredictRequest,
    RequestLimits,
    check_content_type,
    check_rows,
    dumps,
    model_description,
    parse_predict_request,
    predict_reply,
    request_bytes,
    row_limit,
)
from sklambda.capture import open_capture
from sklambda.deadlines import from_context, within
from sklambda.emf import fast_metrics
from sklambda.errors import HttpError, ModelUnavailable, SklambdaError
from sklambda.http import bootstrap, error_reply, lambda_response, log_error, whole_number
from sklambda.http import request_id as request_id_of
from sklambda.runtimes import preload
from sklambda.serving import LoadedModel, ModelCache, load_version
from sklambda.settings import CaptureSettings, ServingSettings

# Powertools Metrics through a provider that costs less per request than Powertools' own (sklambda/emf.py).
logger, metrics, settings, store = bootstrap(ServingSettings, metrics=fast_metrics())
limits = RequestLimits.of(settings)
# A sample of answered requests for the monitor (sklambda/capture.py); None when capture is off.
capture = open_capture(CaptureSettings.from_env())

Response = dict[str, Any]
# Lambda's init phase ends after 10 s (on demand); the store work at init gives up after this less
# deadlines.RESERVE_SECONDS.
INIT_SECONDS = 6.0
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
# SnapStart start warm). A store that fails now leaves the cache empty; requests retry. The runtime's library
# imports while the model downloads; the store work ends well within Lambda's 10 s init phase (a store that
# fails now gets another chance, with its own deadline, at the first request).
preload(settings.serving_runtime)
with within(INIT_SECONDS):
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
    request: PredictRequest | None = None
    try:
        check_content_type(_header(event, "Content-Type"))
        raw = request_bytes(event.get("body"), base64_encoded=bool(event.get("isBase64Encoded")), limits=limits)
        request = parse_predict_request(raw, limits, defer_depth=True)
        model = cache.get()
        documents = _documents(model)
        check_rows(request.rows, documents.row_limit)
        columns = request.columns(model.validator)
        prediction = model.predict(columns)
        body = predict_reply(model, prediction, request_id, probabilities=request.probabilities)
    except Exception as error:
        # A large body's depth is checked after parsing (api.parse_predict_request): too deep is still what a
        # client hears first, whatever else is wrong.
        if request is not None and (too_deep := request.depth_refusal()) is not None:
            return _error(too_deep, request_id)
        if isinstance(error, SklambdaError):
            return _error(error, request_id)
        raise
    if capture is not None and (dropped := capture.record(request_id, model.name, model.version, columns, prediction)):
        metrics.add_metric(name=metric_names.CAPTURE_DROPPED, unit=MetricUnit.Count, value=dropped)
    metrics.add_metric(
        name=metric_names.LATENCY, unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000
    )
    metrics.add_metric(name=metric_names.ROWS_PREDICTED, unit=MetricUnit.Count, value=request.rows)
    _record_version(model.version, started)
    if prediction.probabilities is not None:
        _record_classes(documents.class_metrics, prediction.probabilities)
    return lambda_response(200, body)


def health(event: dict[str, Any], request_id: str) -> Response:
    """Liveness (always 200 while the function runs) and the version being served, if any. The problem is
    said without private detail (the log has it)."""
    try:
        model: LoadedModel | None = cache.get()
    except ModelUnavailable:
        model = None
    served = None if model is None else {"name": model.name, "version": model.version, "runtime": model.runtime}
    problem = cache.public_problem if model is not None else cache.public_problem or "no model loaded yet"
    body = {"status": "ok" if model else "unavailable", "model": served, "problem": problem}
    return lambda_response(200, dumps(body))


def describe(event: dict[str, Any], request_id: str) -> Response:
    try:
        model = cache.get()
    except ModelUnavailable as error:
        return _error(error, request_id)
    return lambda_response(200, _documents(model).description)


def openapi(event: dict[str, Any], request_id: str) -> Response:
    try:
        model: LoadedModel | None = cache.get()
    except ModelUnavailable:
        model = None
    if model is None:
        from sklambda.openapi import build_spec

        return lambda_response(200, dumps(build_spec(None, limits, details=settings.model_details)))
    return lambda_response(200, _documents(model).spec)


ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/predict"): predict,
    ("GET", "/health"): health,
    ("GET", "/model"): describe,
    ("GET", "/openapi.json"): openapi,
}


# ------------------------------------------------------------------------------------------ helpers


class _Documents:
    """What depends only on the served version, built once per version: the row limit and the metric name of
    each class (every POST /predict needs them), GET /model and GET /openapi.json (each built by the first request
    that asks for it: a cold start's first POST /predict does not pay for them, nor imports sklambda.openapi)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.version = model.version
        self.row_limit = row_limit(model.manifest.contract, limits)
        self.class_metrics = [metric_names.predicted_class(label) for label in model.manifest.classes or ()]

    @cached_property
    def description(self) -> str:
        return dumps(model_description(self.model, limits, details=settings.model_details))

    @cached_property
    def spec(self) -> str:
        from sklambda.openapi import build_spec

        return dumps(build_spec(self.model, limits, details=settings.model_details))


_documents_cache: dict[str, _Documents] = {}


def _documents(model: LoadedModel) -> _Documents:
    documents = _documents_cache.get("current")
    if documents is None or documents.version != model.version:
        documents = _documents_cache["current"] = _Documents(model)
    return documents


_version_recorded = {"version": 0, "until": float("-inf")}


def _record_version(version: int, now: float) -> None:
    """ModelVersion, a gauge: once a minute per container and whenever the version changes. CloudWatch keeps
    standard metrics per minute, so its minimum and maximum per minute are what every request would give."""
    if version != _version_recorded["version"] or now >= _version_recorded["until"]:
        metrics.add_metric(name=metric_names.MODEL_VERSION, unit=MetricUnit.NoUnit, value=version)
        _version_recorded.update(version=version, until=now + 60)


def _record_classes(names: list[str], probabilities: np.ndarray) -> None:
    """One count per predicted class, from the probabilities: the label is the class of the highest one (exact
    ties aside); counting the label strings costs more (hashing or comparing each new string)."""
    if len(probabilities) == 1:  # one row (most requests): a Python max costs less than numpy's reductions
        scores = probabilities[0].tolist()
        metrics.add_metric(name=names[scores.index(max(scores))], unit=MetricUnit.Count, value=1)
        return
    counts = np.bincount(np.argmax(probabilities, axis=1), minlength=len(names))
    for name, count in zip(names, counts.tolist(), strict=False):
        if count:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)


def _header(event: dict[str, Any], name: str) -> str | None:
    headers = event.get("headers") or {}
    value = headers.get(name)  # the usual spelling first; HTTP header names are case-insensitive
    if value is None:
        lowered = name.lower()
        value = next((candidate for key, candidate in headers.items() if key.lower() == lowered), None)
    return value if isinstance(value, str) else None


def _error(error: Exception, request_id: str) -> Response:
    """Every refused or failed request: the shared error reply (sklambda.http), logged and counted."""
    reply = error_reply(error, request_id, store=store)
    log_error(logger, error, reply)
    metrics.add_metric(name=metric_names.ERRORS, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=metric_names.error_kind(reply.kind), unit=MetricUnit.Count, value=1)
    return reply.response()


def _not_routed(event: dict[str, Any], request_id: str) -> Response:
    """API Gateway only sends the template's routes; this answers anything else sent straight to the function
    (not counted as an error of the API)."""
    path, method = event.get("resource") or event.get("path"), event.get("httpMethod")
    allowed = sorted(route_method for route_method, route_path in ROUTES if route_path == path)
    if allowed:
        refusal = HttpError(405, f"{method} is not allowed on {path}", kind="MethodNotAllowed")
        return error_reply(refusal, request_id).response({"Allow": ", ".join(allowed)})
    return error_reply(HttpError(404, "no such route", kind="NoSuchRoute"), request_id).response()


def answer_self_test(request: dict[str, Any]) -> dict[str, Any]:
    """Load a stored version with this function's runtime and run its parity self-test (the retrain gate and the
    admin API ask this before promoting, so the check runs the real serving code). Direct invocation only."""
    try:
        if request.get("name", settings.model_name) != settings.model_name:
            raise ValueError(f"this function serves {settings.model_name}, not {request.get('name')}")
        version = request["version"]
        number = version if type(version) is int else whole_number(str(version), "version")
        manifest = store.served_manifest(settings.model_name or "", number)
        loaded = load_version(store, manifest, settings.serving_runtime)
    except (SklambdaError, KeyError, ValueError, TypeError) as error:
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}
    return {"ok": True, "version": loaded.version, "runtime": loaded.runtime, "load_seconds": loaded.load_seconds}


@metrics.log_metrics(capture_cold_start_metric=True)
@from_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "self_test" in event:
        return answer_self_test(event["self_test"])
    request_id = request_id_of(event, context)
    route = ROUTES.get((event.get("httpMethod"), event.get("resource")))  # type: ignore[arg-type]
    if route is None:
        return _not_routed(event, request_id)
    try:
        return route(event, request_id)
    except Exception as error:  # a bug, not the client: a 500 with the request id, the stack in the log
        return _error(error, request_id)
