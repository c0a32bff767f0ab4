"""Admin function: the model registry over HTTP, under /admin (IAM-signed callers only when deployed).

GET  /admin/versions                              versions: created, metric, status, aliases
GET  /admin/versions/{version}                    one version: manifest, status, aliases
GET  /admin/versions/{version}/diff/{other}       metrics, contract, data and libraries compared
GET  /admin/aliases/{alias}                       an alias: version, rollback stack, history of every move
POST /admin/aliases/{alias}/promote               {"version": 3, "reason": "..."}: after the serving self-test
POST /admin/aliases/{alias}/rollback              {"reason": "..."}: back to the previous version

Thin on purpose: routes, error mapping and metrics here; the operations live in sklambda.registry, shared with the
command line.
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sklambda import registry
from sklambda.errors import (
    AliasConflict,
    IntegrityError,
    InvalidName,
    NotFound,
    RequestError,
    SklambdaError,
    StoreUnavailable,
    VersionRefused,
)
from sklambda.settings import AdminSettings
from sklambda.store import ModelStore

logger = Logger()
metrics = Metrics()
# Read-only routes record no metric of their own; that is normal here, not a mistake to warn about.
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = AdminSettings.from_env()
store = ModelStore.from_uri(settings.model_store_uri)
serving_check = registry.serving_check(
    store, runtime=settings.serving_runtime, predict_function_name=settings.predict_function_name
)
app = APIGatewayRestResolver(serializer=lambda body: orjson.dumps(body).decode())


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=1000)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=1, max_length=1000)


def _model() -> str:
    return registry.resolve_model(store, settings.model_name)


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise RequestError(400, f"version must be a positive whole number, not {text[:20]!r}")
    return int(text)


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
    return registry.alias_history(store, _model(), alias).model_dump(mode="json")


@app.post("/admin/aliases/<alias>/promote")
def promote(alias: str) -> dict[str, Any]:
    request = _body(PromoteRequest)
    change = registry.promote(
        store, _model(), request.version, alias=alias, by=_caller(), reason=request.reason, check=serving_check
    )
    if change.moved:
        metrics.add_metric(name="AliasPromoted", unit=MetricUnit.Count, value=1)
        logger.info("alias promoted", extra={"change": change.model_dump(mode="json")})
    return change.model_dump(mode="json")


@app.post("/admin/aliases/<alias>/rollback")
def rollback(alias: str) -> dict[str, Any]:
    request = _body(RollbackRequest)
    change = registry.rollback(store, _model(), alias=alias, by=_caller(), reason=request.reason, check=serving_check)
    metrics.add_metric(name="AliasRolledBack", unit=MetricUnit.Count, value=1)
    logger.info("alias rolled back", extra={"change": change.model_dump(mode="json")})
    return change.model_dump(mode="json")


# One place maps every error to its status: 400 bad request, 404 unknown version or alias, 409 the alias moved
# meanwhile (read again, retry), 422 the version may not be served, 503 the store is unreachable.
_STATUS: list[tuple[type[Exception], int]] = [
    (InvalidName, 400),
    (NotFound, 404),
    (AliasConflict, 409),
    (VersionRefused, 422),
    (IntegrityError, 422),
    (StoreUnavailable, 503),
]


@app.exception_handler(RequestError)
def bad_request(error: RequestError) -> Response[str]:
    return _error(error.status, str(error))


@app.exception_handler(SklambdaError)
def refused(error: SklambdaError) -> Response[str]:
    status = next((code for kind, code in _STATUS if isinstance(error, kind)), 500)
    if status >= 409:
        metrics.add_metric(name="AdminRefused", unit=MetricUnit.Count, value=1)
        logger.warning("admin request refused", extra={"status": status, "error": str(error)})
    return _error(status, str(error))


def _error(status: int, message: str) -> Response[str]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=orjson.dumps({"error": message}).decode()
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
