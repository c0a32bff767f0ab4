"""Retrain function. Three ways in, one run (training.retrain does the work):

- the EventBridge schedule: runs here and now (the invocation is already asynchronous);
- POST /retrain: reserves the run lock, records the run as queued, invokes this same function asynchronously
  (InvocationType=Event) with {"retrain_run": {...}} and answers 202 with the run id at once;
- {"retrain_run": {"run_id", "trigger"}}: that asynchronous invocation, which carries out the queued run.

GET /retrain lists the latest runs and GET /retrain/{run_id} reports one. Duplicate triggers while a run holds
the lock start no training: the API answers 409 naming the running run; the schedule logs and counts a skip.
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

from sklambda.errors import NotFound, RequestError, RunInProgress, RunSkipped, SklambdaError
from sklambda.runs import RunLock, RunLog, RunRecord, check_run_id, notification, run_reply, score_metrics
from sklambda.serving import local_self_test, remote_self_test
from sklambda.settings import RetrainSettings
from sklambda.store import ModelStore
from training.budget import Limits
from training.config import load_config
from training.flow import code_version
from training.progress import Progress
from training.retrain import RunContext, release_reservation, reserve_run, run_retrain

logger = Logger()
metrics = Metrics()
# A request that records no metric of its own (e.g. GET /retrain) is normal here, not a mistake to warn about.
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = RetrainSettings.from_env()
store = ModelStore.from_uri(settings.model_store_uri)
# The training code's commit, recorded in every manifest this function publishes (lineage).
CODE_VERSION = code_version()
app = APIGatewayRestResolver(serializer=lambda body: orjson.dumps(body).decode())

MAX_LISTED_RUNS = 100
MAX_REASON_CHARS = 200


def _notify(record: RunRecord) -> None:
    """Every finished run: a metric per outcome, its duration, and a message on the SNS topic."""
    metrics.add_metric(name=f"Retrain{record.status.capitalize()}", unit=MetricUnit.Count, value=1)
    if record.duration_seconds is not None:
        metrics.add_metric(name="RetrainSeconds", unit=MetricUnit.Seconds, value=record.duration_seconds)
    for name, score in score_metrics(record).items():  # the dashboard's champion score over time
        metrics.add_metric(name=name, unit=MetricUnit.NoUnit, value=score)
    if settings.retrain_topic_arn:
        from sklambda.aws import publish_message  # boto3 only when a topic is configured

        subject, message, attributes = notification(record)
        publish_message(settings.retrain_topic_arn, subject, message, attributes)


def _run_context(context: LambdaContext) -> RunContext:
    config = load_config(settings.training_config).with_overrides(name=settings.model_name)
    serving_check = (
        remote_self_test(settings.predict_function_name)
        if settings.predict_function_name
        else local_self_test(store, settings.serving_runtime)
    )
    return RunContext(
        store=store,
        data_uri=settings.data_uri,
        config=config,
        alias=settings.model_alias,
        serving_check=serving_check,
        limits=Limits.of_lambda(context),
        lock_seconds=settings.retrain_lock_seconds,
        code_version=CODE_VERSION,
        notify=_notify,
        # A log line as each step starts and ends (load, validate, prepare, fit, evaluate, convert, gate,
        # publish, self-test), through this function's logger: a long run shows where it is.
        progress=Progress(logger),
    )


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=orjson.dumps(body).decode())


def _caller() -> str:
    identity = app.current_event.request_context.identity
    return identity.user_arn or identity.caller or identity.source_ip or "unknown caller"


def _request_reason() -> str:
    """The optional `{"reason": "..."}` a caller gives for the run (recorded with it); any other body is a 400."""
    body = app.current_event.body
    if not body or not body.strip():
        return ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(400, 'the body must be empty or JSON {"reason": "why this run"}') from None
    reason = parsed.get("reason", "") if isinstance(parsed, dict) else None
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS or set(parsed) - {"reason"}:
        raise RequestError(
            400, f'the body must be empty or JSON {{"reason": "..."}} (at most {MAX_REASON_CHARS} characters)'
        )
    return reason


@app.post("/retrain")
def start_run() -> Response[str]:
    context = app.lambda_context
    reason = _request_reason()
    run_context = _run_context(context)
    by = f"POST /retrain by {_caller()}" + (f": {reason}" if reason else "")
    try:
        record = reserve_run(run_context, trigger="api", by=by)
    except RunInProgress as error:
        metrics.add_metric(name="RetrainSkipped", unit=MetricUnit.Count, value=1)
        return _json(409, {"error": str(error), "run_id": error.run_id, "status_url": f"/retrain/{error.run_id}"})
    from sklambda.aws import invoke_event  # boto3 only on this route

    try:
        invoke_event(context.function_name, {"retrain_run": {"run_id": record.run_id, "trigger": "api"}})
    except SklambdaError as error:
        release_reservation(run_context, record, f"the run could not be started: {error}")
        logger.exception("could not invoke the retrain run")
        return _json(503, {"error": f"the run could not be started: {error}", "run_id": record.run_id})
    logger.info("retrain run queued", extra={"run_id": record.run_id})
    return _json(202, {"run_id": record.run_id, "status": record.status, "status_url": f"/retrain/{record.run_id}"})


@app.get("/retrain")
def list_runs() -> Response[str]:
    limit = app.current_event.get_query_string_value("limit", "20") or "20"
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LISTED_RUNS:
        return _json(400, {"error": f"limit must be a whole number from 1 to {MAX_LISTED_RUNS}"})
    runs = _run_log().list(int(limit))
    return _json(200, {"model": settings.model_name, "runs": [_described(record) for record in runs]})


@app.get("/retrain/<run_id>")
def get_run(run_id: str) -> Response[str]:
    try:
        record = _run_log().get(check_run_id(run_id))
    except NotFound as error:
        return _json(404, {"error": str(error)})
    return _json(200, _described(record))


def _run_log() -> RunLog:
    return RunLog(store.objects, settings.model_name or "")


def _described(record: RunRecord) -> dict[str, Any]:
    body = run_reply(record)
    if not record.finished:
        holder = RunLock(store.objects, record.name, ttl_seconds=settings.retrain_lock_seconds).current()
        if holder is None or holder.run_id != record.run_id:
            # Its lock is gone without a result: the invocation died (timeout, memory); see the dead-letter queue.
            body["status"] = "abandoned"
            body["reason"] = "the run's lock expired before it recorded a result: it died (see its logs and the DLQ)"
    return body


@app.exception_handler(RequestError)
def bad_request(error: RequestError) -> Response[str]:
    return _json(error.status, {"error": str(error)})


@app.exception_handler(SklambdaError)
def retrain_failed(error: SklambdaError) -> Response[str]:
    logger.exception("retrain request failed")
    return _json(500, {"error": f"retrain failed: {error}"})


def _is_schedule(event: dict[str, Any]) -> bool:
    return event.get("detail-type") == "Scheduled Event" or event.get("trigger") == "schedule"


def _run(
    event: dict[str, Any], context: LambdaContext, trigger: str, run_id: str | None, reason: str = ""
) -> dict[str, Any]:
    by = f"retrain function ({trigger}, request {context.aws_request_id})" + (f": {reason}" if reason else "")
    try:
        record = run_retrain(_run_context(context), trigger=trigger, by=by, run_id=run_id)
    except RunSkipped as error:
        metrics.add_metric(name="RetrainSkipped", unit=MetricUnit.Count, value=1)
        logger.warning("retrain skipped", extra={"reason": str(error), "run_id": error.run_id})
        return {"skipped": True, "reason": str(error), "running_run_id": error.run_id}
    logger.info("retrain finished", extra={"run_id": record.run_id, "status": record.status, "reason": record.reason})
    return run_reply(record)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "retrain_run" in event:
        request = event["retrain_run"]
        return _run(event, context, str(request.get("trigger", "api")), check_run_id(str(request["run_id"])))
    if _is_schedule(event):
        return _run(event, context, "schedule", None)
    if "monitor_alarm" in event:  # the monitor found drift or a quality drop (RetrainOnMonitorAlarm)
        return _run(event, context, "monitor", None, str(event["monitor_alarm"].get("reason", ""))[:500])
    return app.resolve(event, context)
