"""Retrain function: on the EventBridge schedule and on POST /retrain, train on the data under DATA_URI, publish
a new version, and promote it only if it is at least as good as the champion (training.flow does the work)."""

from __future__ import annotations

import warnings
from typing import Any

import orjson
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda.errors import SklambdaError
from sklambda.serving import local_self_test, remote_self_test
from sklambda.settings import RetrainSettings
from sklambda.store import ModelStore
from training.config import load_config
from training.flow import Outcome, train_and_publish

logger = Logger()
metrics = Metrics()
# A request that records no metric of its own (e.g. GET /health) is normal here, not a mistake to warn about.
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = RetrainSettings.from_env()
store = ModelStore.from_uri(settings.model_store_uri)
app = APIGatewayRestResolver(serializer=lambda body: orjson.dumps(body).decode())


def retrain(trigger: str, context: LambdaContext) -> dict[str, Any]:
    config = load_config(settings.training_config).with_overrides(name=settings.model_name)
    serving_check = (
        remote_self_test(settings.predict_function_name)
        if settings.predict_function_name
        else local_self_test(store, settings.serving_runtime)
    )
    outcome = train_and_publish(
        store,
        settings.data_uri,
        config,
        by=f"retrain function ({trigger}, request {context.aws_request_id})",
        alias=settings.model_alias,
        serving_check=serving_check,
    )
    metrics.add_metric(
        name="RetrainPromoted" if outcome.promoted else "RetrainNotPromoted", unit=MetricUnit.Count, value=1
    )
    logger.info("retrain finished", extra={"outcome": outcome.describe()})
    return _outcome_body(outcome, trigger)


def _outcome_body(outcome: Outcome, trigger: str) -> dict[str, Any]:
    return {
        "trigger": trigger,
        "model": {"name": settings.model_name, "version": outcome.version},
        "promoted": outcome.promoted,
        "reason": outcome.reason,
        "metric": outcome.metric.name,
        "metrics": outcome.metrics,
        "champion": (
            {"version": outcome.champion_version, "metrics": outcome.champion_metrics}
            if outcome.champion_version is not None
            else None
        ),
        "seconds": outcome.durations,
    }


@app.post("/retrain")
def retrain_on_demand() -> dict[str, Any]:
    return retrain("api", app.lambda_context)


@app.exception_handler(SklambdaError)
def retrain_failed(error: SklambdaError) -> Response[str]:
    metrics.add_metric(name="RetrainFailed", unit=MetricUnit.Count, value=1)
    logger.exception("retrain failed")
    body = orjson.dumps({"error": f"retrain failed: {error}"}).decode()
    return Response(status_code=500, content_type=content_types.APPLICATION_JSON, body=body)


def _is_schedule(event: dict[str, Any]) -> bool:
    return event.get("detail-type") == "Scheduled Event" or event.get("trigger") == "schedule"


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if _is_schedule(event):
        try:
            return retrain("schedule", context)
        except SklambdaError:
            metrics.add_metric(name="RetrainFailed", unit=MetricUnit.Count, value=1)
            logger.exception("scheduled retrain failed")
            raise
    return app.resolve(event, context)
