"""Admin function: the model registry over HTTP, under /admin (IAM-signed callers only when deployed).

GET  /admin/versions                              versions: created, metric, status, aliases
GET  /admin/versions/{version}                    one version: manifest, status, aliases
GET  /admin/versions/{version}/diff/{other}       metrics, contract, data and libraries compared
GET  /admin/aliases/{alias}                       an alias: version, rollback stack, history of every move
POST /admin/aliases/{alias}/promote               {"version": 3, "reason": "...", "from_version": 2}: after the
                                                  serving self-test
POST /admin/aliases/{alias}/rollback              {"reason": "...", "from_version": 3}: back to the previous version

`from_version` (optional, recommended): the version the caller believes is serving. When the alias serves another
one, 409 and nothing changes: a client retrying a rollback after a timeout rolls back once, not twice.

Thin on purpose: routes and metrics here; the operations live in sklambda.registry (shared with the command
line), the error replies in sklambda.http (as for every API function).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sklambda import metric_names, registry
from sklambda.errors import RequestError
from sklambda.http import ErrorReply, answer_errors, bootstrap, whole_number
from sklambda.settings import AdminSettings

logger, metrics, settings, store = bootstrap(AdminSettings)
serving_check = registry.serving_check(
    store, runtime=settings.serving_runtime, predict_function_name=settings.predict_function_name
)
app = APIGatewayRestResolver(serializer=lambda body: orjson.dumps(body).decode())


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=1000)
    # The version the caller believes is serving: 409, nothing changed, when the alias serves another one.
    from_version: int | None = Field(default=None, ge=1)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=1, max_length=1000)
    # The version the caller believes is serving (to roll back from): 409, nothing changed, when it is not.
    from_version: int | None = Field(default=None, ge=1)


def _model() -> str:
    return registry.resolve_model(store, settings.model_name)


def _version(text: str) -> int:
    return whole_number(text, "version")


def _body[Request: BaseModel](request_type: type[Request]) -> Request:
    body = app.current_event.decoded_body
    if not body:
        raise RequestError(400, f"the request has no body; send JSON with {', '.join(request_type.model_fields)}")
    try:
        return request_type.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}" for item in error.errors(include_url=False)
        )
        raise RequestError(400, f"invalid request: {problems}") from None


def _caller() -> str:
    """Who moved the alias, for the audit history: the IAM identity API Gateway verified (SigV4)."""
    event = app.current_event
    identity = event.request_context.identity
    who = identity.user_arn or identity.caller or f"unauthenticated caller at {identity.source_ip}"
    return f"{who} via admin API (request {event.request_context.request_id})"


@app.get("/admin/versions")
def list_versions() -> dict[str, Any]:
    return registry.list_versions(store, _model()).model_dump(mode="json")


@app.get("/admin/versions/<version>")
def describe_version(version: str) -> dict[str, Any]:
    return registry.describe_version(store, _model(), _version(version)).model_dump(mode="json")


@app.get("/admin/versions/<version>/diff/<other>")
def diff_versions(version: str, other: str) -> dict[str, Any]:
    return registry.diff_versions(store, _model(), _version(version), _version(other)).model_dump(mode="json")


@app.get("/admin/aliases/<alias>")
def alias_history(alias: str) -> dict[str, Any]:
    return asdict(registry.alias_history(store, _model(), alias))


@app.post("/admin/aliases/<alias>/promote")
def promote(alias: str) -> dict[str, Any]:
    request = _body(PromoteRequest)
    change = registry.promote(
        store,
        _model(),
        request.version,
        alias=alias,
        by=_caller(),
        reason=request.reason,
        check=serving_check,
        from_version=request.from_version,
    )
    if change.moved:
        metrics.add_metric(name=metric_names.ALIAS_PROMOTED, unit=MetricUnit.Count, value=1)
        logger.info("alias promoted", extra={"change": change.model_dump(mode="json")})
    return change.model_dump(mode="json")


@app.post("/admin/aliases/<alias>/rollback")
def rollback(alias: str) -> dict[str, Any]:
    request = _body(RollbackRequest)
    change = registry.rollback(
        store,
        _model(),
        alias=alias,
        by=_caller(),
        reason=request.reason,
        check=serving_check,
        from_version=request.from_version,
    )
    metrics.add_metric(name=metric_names.ALIAS_ROLLED_BACK, unit=MetricUnit.Count, value=1)
    logger.info("alias rolled back", extra={"change": change.model_dump(mode="json")})
    return change.model_dump(mode="json")


def _refused(error: BaseException, reply: ErrorReply) -> None:
    if reply.status >= 409:  # a conflict, a refused version, a failure: worth an operator's look
        metrics.add_metric(name=metric_names.ADMIN_REFUSED, unit=MetricUnit.Count, value=1)
    if 409 <= reply.status < 500:  # log_error keeps 4xx at debug; an operator's refusal is worth a warning
        logger.warning("admin request refused", extra={"status": reply.status, "error": str(error)})


# Every error, whatever raised it: sklambda.http maps it to its status and public body.
answer_errors(app, logger, store, on_error=_refused)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
