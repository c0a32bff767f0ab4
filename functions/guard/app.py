"""Promotion guard function: CloudWatch alarm state changes (via EventBridge) roll a fresh promotion back.

The rollback is recorded in the alias history (by the store) and announced on the alarm topic, next to the alarm
that caused it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda import metric_names
from sklambda.errors import SklambdaError
from sklambda.guard import on_alarm, parse_time, rollback_notification
from sklambda.http import bootstrap
from sklambda.settings import GuardSettings

logger, metrics, settings, store = bootstrap(GuardSettings)


# The EventBridge event id is the correlation id: the same id is in the event archive and the rule's metrics.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = event.get("detail", {})
    alarm_name = str(detail.get("alarmName", "unknown alarm"))
    state = detail.get("state", {}).get("value")
    if event.get("detail-type") != "CloudWatch Alarm State Change" or state != "ALARM":
        return {"rolled_back": False, "reason": f"ignored: not an alarm going to ALARM ({state})"}
    name = settings.model_name or ""
    decision = on_alarm(
        store,
        name,
        settings.model_alias,
        alarm_name=alarm_name,
        alarm_time=parse_time(detail.get("state", {}).get("timestamp") or event["time"]),
        watch_seconds=settings.promotion_watch_seconds,
    )
    if decision.rolled_back:
        metrics.add_metric(name=metric_names.MODEL_ROLLED_BACK, unit=MetricUnit.Count, value=1)
        if settings.alarm_topic_arn:
            from sklambda.aws import publish_message  # boto3 only when a topic is configured

            subject, message, attributes = rollback_notification(name, settings.model_alias, decision, alarm_name)
            try:
                publish_message(settings.alarm_topic_arn, subject, message, attributes)
            except SklambdaError:
                # The rollback stands and the alias history has it; a retry would find nothing left to announce.
                logger.exception("the rollback could not be announced")
    logger.info("promotion guard", extra={"alarm": alarm_name, "decision": decision.reason})
    return {
        "rolled_back": decision.rolled_back,
        "reason": decision.reason,
        "from_version": decision.from_version,
        "to_version": decision.to_version,
    }
