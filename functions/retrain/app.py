"""Retrain function. Three ways in, one run (training.pipeline.run_training does the work):

- the EventBridge schedule: runs here and now (the invocation is already asynchronous);
- POST /retrain: reserves the run lock, records the run as queued, invokes this same function asynchronously
  (InvocationType=Event) with {"retrain_run": {...}} and answers 202 with the run id at once;
- {"retrain_run": {"run_id", "trigger"}}: that asynchronous invocation, which carries out the queued run.

A run whose table does not fit the function (or RetrainEngine=sagemaker) is handed to a SageMaker Training job
instead (training/engines.py); the state machine that waits on the job calls back with
{"sagemaker_job_ended": {"run_id", "error", "cause"}} when the job ended without recording its run, and
POST /retrain/{run_id}/stop stops such a run.

GET /retrain lists the latest runs and GET /retrain/{run_id} reports one. Duplicate triggers while a run holds
the lock start no training: the API answers 409 naming the running run; the schedule logs and counts a skip.
"""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda import metric_names
from sklambda.errors import ConfigError, HttpError, NotFound, RequestError, RunInProgress, RunSkipped, SklambdaError
from sklambda.http import JSON, answer_errors, bootstrap, whole_number
from sklambda.runs import RunLock, RunLog, RunRecord, check_run_id, notification, run_reply, score_metrics
from sklambda.settings import EngineSettings, RetrainSettings
from training import engines
from training.budget import RunLimits
from training.config import load_config
from training.lineage import code_version
from training.pipeline import TrainingRun, deployed_run, model_config, release_reservation, reserve_run, run_training
from training.progress import Progress

logger, metrics, settings, store = bootstrap(RetrainSettings)
# The training code's commit, recorded in every manifest this function publishes (lineage).
CODE_VERSION = code_version()
app = APIGatewayRestResolver(serializer=lambda body: orjson.dumps(body).decode())

MAX_LISTED_RUNS = 100
MAX_REASON_CHARS = 200


def _notify(record: RunRecord) -> None:
    """Every finished run: a metric per outcome, its duration, and a message on the SNS topic."""
    metrics.add_metric(name=metric_names.retrain_outcome(record.status), unit=MetricUnit.Count, value=1)
    if record.duration_seconds is not None:
        metrics.add_metric(name=metric_names.RETRAIN_SECONDS, unit=MetricUnit.Seconds, value=record.duration_seconds)
    for name, score in score_metrics(record).items():  # the dashboard's champion score over time
        metrics.add_metric(name=name, unit=MetricUnit.NoUnit, value=score)
    if settings.retrain_topic_arn:
        from sklambda.aws import publish_message  # boto3 only when a topic is configured

        subject, message, attributes = notification(record)
        publish_message(settings.retrain_topic_arn, subject, message, attributes)


def _run_context(context: LambdaContext) -> TrainingRun:
    return deployed_run(
        settings,
        store,
        data_uri=settings.data_uri,
        limits=RunLimits.of_lambda(context),
        code_version=CODE_VERSION,
        notify=_notify,
        # A log line as each stage starts and ends, through this function's logger: a long run shows where it is.
        progress=Progress(logger),
    )


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type=JSON, body=orjson.dumps(body).decode())


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
        metrics.add_metric(name=metric_names.RETRAIN_SKIPPED, unit=MetricUnit.Count, value=1)
        details = {"run_id": error.run_id, "status_url": f"/retrain/{error.run_id}"}
        raise HttpError(409, str(error), kind="RunInProgress", details=details) from None
    from sklambda.aws import invoke_event  # boto3 only on this route

    try:
        invoke_event(context.function_name, {"retrain_run": {"run_id": record.run_id, "trigger": "api"}})
    except SklambdaError as error:
        release_reservation(run_context, record, f"the run could not be started: {error}")
        logger.exception("could not invoke the retrain run", extra={"run_id": record.run_id})
        message = "the run could not be started; retry later"
        raise HttpError(503, message, kind="RunNotStarted", details={"run_id": record.run_id}) from error
    logger.info("retrain run queued", extra={"run_id": record.run_id})
    return _json(202, {"run_id": record.run_id, "status": record.status, "status_url": f"/retrain/{record.run_id}"})


@app.get("/retrain")
def list_runs() -> Response[str]:
    limit = whole_number(app.current_event.get_query_string_value("limit", "20"), "limit", maximum=MAX_LISTED_RUNS)
    runs = _run_log().list(limit)
    return _json(200, {"model": settings.model_name, "runs": [_described(record) for record in runs]})


@app.get("/retrain/<run_id>")
def get_run(run_id: str) -> Response[str]:
    return _json(200, _described(_run_log().get(check_run_id(run_id))))


def _run_log() -> RunLog:
    return RunLog(store.objects, settings.model_name or "")


def _described(record: RunRecord) -> dict[str, Any]:
    body = run_reply(record)
    _job_state(record, body)
    if not record.finished:
        holder = RunLock(store.objects, record.name, ttl_seconds=settings.retrain_lock_seconds).current()
        if holder is None or holder.run_id != record.run_id:
            # Its lock is gone without a result: the invocation died (timeout, memory); see the dead-letter queue.
            body["status"] = "abandoned"
            body["reason"] = "the run's lock expired before it recorded a result: it died (see its logs and the DLQ)"
    return body


# ---------------------------------------------------------------- runs handed to SageMaker (training/engines.py)
engine_settings = EngineSettings.from_env()


def _carry_out_or_hand_over(run_context: TrainingRun, *, trigger: str, by: str, run_id: str | None) -> RunRecord:
    """Here when the run fits the function (or RetrainEngine forces it), else handed to a SageMaker Training job."""
    decision = engines.decide(
        engine_settings.retrain_engine,
        engine_settings,
        run_context.data_uri,
        run_context.config.budget,
        run_context.limits,
    )
    if decision.engine == "lambda":
        return run_training(run_context, trigger=trigger, by=by, run_id=run_id)
    from sklambda.aws import start_execution

    environment = {
        "TRAINING_CONFIG": settings.training_config or "",
        "PREDICT_FUNCTION_NAME": settings.predict_function_name or "",
        "SERVING_RUNTIME": settings.serving_runtime,
        "RETRAIN_TOPIC_ARN": settings.retrain_topic_arn or "",
        # The job publishes: it signs manifests with the stack's key and verifies the champion's, as this function.
        "MANIFEST_SIGNING_KEY": settings.manifest_signing_key or "",
        "MANIFEST_SIGNATURES": settings.manifest_signatures,
        # The job puts its run's metrics under this stack's dimension, as this function's EMF does.
        "POWERTOOLS_SERVICE_NAME": engine_settings.powertools_service_name,
        "POWERTOOLS_METRICS_NAMESPACE": engine_settings.powertools_metrics_namespace,
    }
    record = engines.hand_over(
        run_context,
        decision,
        engine_settings,
        trigger=trigger,
        by=by,
        run_id=run_id,
        environment=environment,
        start_execution=start_execution,
    )
    metrics.add_metric(name=metric_names.RETRAIN_HANDED_OVER, unit=MetricUnit.Count, value=1)
    return record


def _job_ended(request: dict[str, Any]) -> dict[str, Any]:
    """The state machine caught a job that ended without its run's result (failed, timed out, interrupted)."""
    run_context = TrainingRun(
        store=store,
        data_uri=settings.data_uri,
        config=model_config(
            load_config(settings.training_config), store, name=settings.model_name, alias=settings.model_alias
        ),
        notify=_notify,
        lock_seconds=settings.retrain_lock_seconds,
    )
    record = engines.job_ended(
        run_context, check_run_id(str(request["run_id"])), str(request.get("error", "")), str(request.get("cause", ""))
    )
    logger.warning(
        "SageMaker job ended", extra={"run_id": record.run_id, "status": record.status, "reason": record.reason}
    )
    return run_reply(record)


@app.post("/retrain/<run_id>/stop")
def stop_run(run_id: str) -> Response[str]:
    """Stop a run handed to SageMaker: its execution and job stop, the run is recorded `stopped`, the lock freed."""
    from sklambda.aws import stop_execution, stop_training_job

    run_context = _run_context(app.lambda_context)
    try:
        record = engines.stop(
            run_context,
            check_run_id(run_id),
            f"POST /retrain/{run_id}/stop by {_caller()}",
            stop_execution=stop_execution,
            stop_job=stop_training_job,
        )
    except (RunSkipped, ConfigError) as error:
        raise HttpError(409, str(error), kind="RunNotStoppable", details={"run_id": run_id}) from None
    return _json(200, _described(record))


def _job_state(record: RunRecord, body: dict[str, Any]) -> None:
    """While a handed-over run is unfinished, what SageMaker says of its job (status, phase, failure reason)."""
    engine = record.engine
    if record.finished or engine is None or engine.engine != "sagemaker" or engine.job_name is None:
        return
    from sklambda.aws import describe_training_job

    try:
        job = describe_training_job(engine.job_name)
    except NotFound:
        body["engine"]["job_status"] = "NotCreatedYet"
        return
    except SklambdaError as error:
        body["engine"]["job_status"] = f"unknown ({error})"
        return
    body["engine"].update(
        job_status=job.get("TrainingJobStatus"),
        job_phase=job.get("SecondaryStatus"),
        job_failure_reason=job.get("FailureReason"),
        billable_seconds=job.get("BillableTimeInSeconds"),
    )


# Every error, whatever raised it: sklambda.http maps it to its status and public body.
answer_errors(app, logger, store)


def _is_schedule(event: dict[str, Any]) -> bool:
    return event.get("detail-type") == "Scheduled Event" or event.get("trigger") == "schedule"


def _run(
    event: dict[str, Any], context: LambdaContext, trigger: str, run_id: str | None, reason: str = ""
) -> dict[str, Any]:
    by = f"retrain function ({trigger}, request {context.aws_request_id})" + (f": {reason}" if reason else "")
    try:
        record = _carry_out_or_hand_over(_run_context(context), trigger=trigger, by=by, run_id=run_id)
    except RunSkipped as error:
        metrics.add_metric(name=metric_names.RETRAIN_SKIPPED, unit=MetricUnit.Count, value=1)
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
    if "sagemaker_job_ended" in event:
        return _job_ended(event["sagemaker_job_ended"])
    if _is_schedule(event):
        return _run(event, context, "schedule", None)
    if "monitor_alarm" in event:  # the monitor found drift or a quality drop (RetrainOnMonitorAlarm)
        return _run(event, context, "monitor", None, str(event["monitor_alarm"].get("reason", ""))[:500])
    return app.resolve(event, context)
