"""Pre-traffic hook of the predict function's rollouts (CodeDeploy BeforeAllowTraffic).

Calls the new predict version as API Gateway would (sklambda/rollout.py) and reports Succeeded or Failed to
CodeDeploy: a version that cannot import, load the champion or reproduce its golden predictions never gets
traffic, and CodeDeploy keeps the `live` alias on the current version.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda import aws, metric_names
from sklambda.http import bootstrap
from sklambda.rollout import RolloutVerdict, check_new_version
from sklambda.settings import RolloutCheckSettings

logger, metrics, settings, store = bootstrap(RolloutCheckSettings)


def _invoke_new_version(payload: dict[str, Any]) -> dict[str, Any]:
    return aws.invoke_json(settings.predict_version, payload)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deployment_id = str(event["DeploymentId"])
    execution_id = str(event["LifecycleEventHookExecutionId"])
    logger.append_keys(deployment_id=deployment_id, predict_version=settings.predict_version)
    try:
        verdict = check_new_version(
            _invoke_new_version,
            store,
            settings.model_name or "",
            settings.model_alias,
            request_id=f"pretraffic-{deployment_id}",
        )
    # Any failure at all: CodeDeploy must hear an answer, or it waits for the hook's timeout (an hour).
    except Exception as error:
        logger.exception("the pre-traffic check failed unexpectedly")
        verdict = RolloutVerdict(False, f"the check itself failed: {type(error).__name__}: {error}")
    metrics.add_metric(name=metric_names.ROLLOUT_CHECK_FAILED, unit=MetricUnit.Count, value=0 if verdict.passed else 1)
    logger.info(
        "pre-traffic check", extra={"passed": verdict.passed, "reason": verdict.reason, "checks": verdict.checks}
    )
    aws.report_hook_status(deployment_id, execution_id, passed=verdict.passed)
    return {"passed": verdict.passed, "reason": verdict.reason, "checks": verdict.checks}
