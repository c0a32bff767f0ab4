"""Promotion guard function: CloudWatch alarm state changes (via EventBridge) roll a fresh promotion back."""

from __future__ import annotations

import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda.guard import on_alarm, parse_time
from sklambda.settings import GuardSettings
from sklambda.store import ModelStore

logger = Logger()
metrics = Metrics()
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = GuardSettings.from_env()
store = ModelStore.from_uri(settings.model_store_uri)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = event.get("detail", {})
    alarm_name = str(detail.get("alarmName", "unknown alarm"))
    state = detail.get("state", {}).get("value")
    if event.get("detail-type") != "CloudWatch Alarm State Change" or state != "ALARM":
        return {"rolled_back": False, "reason": f"ignored: not an alarm going to ALARM ({state})"}
    decision = on_alarm(
        store,
        settings.model_name or "",
        settings.model_alias,
        alarm_name=alarm_name,
        alarm_time=parse_time(detail.get("state", {}).get("timestamp") or event["time"]),
        watch_seconds=settings.promotion_watch_seconds,
    )
    if decision.rolled_back:
        metrics.add_metric(name="ModelRolledBack", unit=MetricUnit.Count, value=1)
    logger.info("promotion guard", extra={"alarm": alarm_name, "decision": decision.reason})
    return {
        "rolled_back": decision.rolled_back,
        "reason": decision.reason,
        "from_version": decision.from_version,
        "to_version": decision.to_version,
    }
