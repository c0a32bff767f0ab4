"""Predict function: POST /predict, GET /health, and the retrain gate's self-test (direct invocation).

Thin on purpose: routes, error mapping and metrics here; the logic lives in sklambda (shared layer).
"""

from __future__ import annotations

import warnings
from typing import Any

import orjson
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda.api import error_reply, parse_predict_request, predict_reply
from sklambda.contract import ContractViolation
from sklambda.errors import ModelUnavailable, RequestError, SklambdaError
from sklambda.serving import ModelCache, load_version
from sklambda.settings import ServingSettings
from sklambda.store import ModelStore

logger = Logger()
metrics = Metrics()
# A request that records no metric of its own (e.g. GET /health) is normal here, not a mistake to warn about.
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = ServingSettings.from_env()
store = ModelStore.from_uri(settings.model_store_uri)


def _serialize(body: Any) -> str:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _record_event(name: str, **details: Any) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


cache = ModelCache(
    store=store,
    name=settings.model_name or "",
    alias=settings.model_alias,
    runtime=settings.serving_runtime,
    refresh_seconds=settings.alias_refresh_seconds,
    on_event=_record_event,
)
app = APIGatewayRestResolver(serializer=_serialize)


@app.post("/predict")
def predict() -> dict[str, Any]:
    model = cache.get()
    columns = parse_predict_request(app.current_event.decoded_body, model.manifest.contract)
    prediction = model.predict(columns)
    metrics.add_metric(name="RowsPredicted", unit=MetricUnit.Count, value=len(prediction.labels))
    return predict_reply(model, prediction)


@app.get("/health")
def health() -> dict[str, Any]:
    try:
        model = cache.get()
    except ModelUnavailable as error:
        return {"status": "unavailable", "detail": str(error), "model": None}
    return {"status": "ok", "model": {"name": model.name, "version": model.version, "runtime": model.runtime}}


@app.exception_handler(RequestError)
def bad_request(error: RequestError) -> Response[str]:
    return _error(error.status, error_reply(error))


@app.exception_handler(ContractViolation)
def contract_violation(error: ContractViolation) -> Response[str]:
    return _error(422, error_reply(error))


@app.exception_handler(ModelUnavailable)
def model_unavailable(error: ModelUnavailable) -> Response[str]:
    return _error(503, {"error": f"no model available: {error}"})


def _error(status: int, body: dict[str, Any]) -> Response[str]:
    metrics.add_metric(name=f"Errors{status}", unit=MetricUnit.Count, value=1)
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=_serialize(body))


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


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "self_test" in event:
        return self_test(event["self_test"])
    return app.resolve(event, context)
