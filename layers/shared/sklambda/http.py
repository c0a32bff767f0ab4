"""One HTTP layer for the API functions (predict, admin, retrain), and one bootstrap for every function.

- `bootstrap`: the objects each function module makes once per container: Powertools Logger and Metrics
  (configured by the POWERTOOLS_* variables), the validated settings and the model store.
- `ERROR_STATUS` / `status_of`: the one mapping from an error to its HTTP status.
- `error_reply`: the one error body, `{"error", "request_id", ...}`, whatever the function and the status. Public
  bodies say nothing private: a 5xx says what kind of failure it was, never its detail (bucket, S3 error code,
  stack trace), and a 4xx's message has the store's location removed; `log_error` keeps the detail in the log,
  under the request id.
- `request_id`, `whole_number`, `lambda_response`: small pieces every route needs.

Plain Python over plain dicts: no Powertools event handler here, so predict's routing table stays as cheap as it
is (admin and retrain wrap replies in the resolver's Response themselves).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from aws_lambda_powertools import Logger, Metrics

from sklambda.contract import ContractViolation
from sklambda.errors import (
    AliasConflict,
    HttpError,
    IntegrityError,
    InvalidName,
    ModelUnavailable,
    NotFound,
    RunInProgress,
    StoreUnavailable,
    VersionRefused,
)
from sklambda.settings import StoreSettings
from sklambda.store import ModelStore

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

JSON = "application/json"
# The first match wins (subclasses before their bases); HttpError carries its own status; anything else is a 500.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ContractViolation, 422),
    (InvalidName, 400),
    (NotFound, 404),
    (AliasConflict, 409),  # the alias moved meanwhile: read again, retry
    (RunInProgress, 409),
    (VersionRefused, 422),  # the version may not be served
    (IntegrityError, 422),
    (ModelUnavailable, 503),
    (StoreUnavailable, 503),
)
# What a 5xx says in public, by kind; the detail goes to the log only.
_PUBLIC_5XX: tuple[tuple[type[Exception], str], ...] = (
    (StoreUnavailable, "the model store is unavailable right now; retry later"),
)
_INTERNAL = "internal error; the request id finds the details in the function's log"
# The bucket part of an S3 location, wherever a message quotes one (the key after it stays: it names the object).
_S3_BUCKET = re.compile(r"s3://[^/\s'\"]*/?")
# Path, query and body numbers are ASCII digits only: "²".isdigit() is true but int("²") fails.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")


class Bootstrap[S: StoreSettings](NamedTuple):
    logger: Logger
    metrics: Metrics
    settings: S
    store: ModelStore


def bootstrap[S: StoreSettings](settings_type: type[S], *, metrics: Metrics | None = None) -> Bootstrap[S]:
    """What a function module makes once per container, in the same way everywhere. `metrics`: a Metrics
    instance of the caller's choosing (predict's hot path writes through sklambda.emf.fast_metrics)."""
    # A request that records no metric of its own (GET /health, a read-only admin route) is normal, not a
    # mistake to warn about.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    settings = settings_type.from_env()
    return Bootstrap(Logger(), metrics or Metrics(), settings, ModelStore.from_settings(settings))


def request_id(event: Mapping[str, Any], context: Any) -> str:
    """API Gateway's id (in its access logs and the x-amzn-RequestId header), else Lambda's own."""
    found = (event.get("requestContext") or {}).get("requestId")
    return found if isinstance(found, str) and found else str(getattr(context, "aws_request_id", "") or "unknown")


def status_of(error: BaseException) -> int:
    if isinstance(error, HttpError):
        return error.status
    return next((status for kind, status in ERROR_STATUS if isinstance(error, kind)), 500)


def kind_of(error: BaseException) -> str:
    """The error's name for metrics (ErrorContractViolation, ErrorBodyTooLarge, ...)."""
    if isinstance(error, HttpError):
        return error.kind
    return type(error).__name__ if status_of(error) < 500 or isinstance(error, ModelUnavailable) else "Internal"


@dataclass(frozen=True)
class ErrorReply:
    status: int
    kind: str
    body: dict[str, Any] = field(repr=False)

    def text(self) -> str:
        return orjson.dumps(self.body, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    def response(self, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        return lambda_response(self.status, self.text(), headers)


def error_reply(error: BaseException, request_id: str, *, store: ModelStore | None = None) -> ErrorReply:
    """The public reply to `error`: its status, and `{"error", "request_id"}` plus what its kind adds (a contract
    violation's problems, a refusal's details)."""
    status = status_of(error)
    body: dict[str, Any] = {"error": public_message(error, status, store), "request_id": request_id}
    if isinstance(error, ContractViolation):
        body["problems"] = [problem.as_json() for problem in error.problems]
        body["problem_count"] = error.total
    elif isinstance(error, HttpError):
        body.update(error.details)
    return ErrorReply(status, kind_of(error), body)


def public_message(error: BaseException, status: int, store: ModelStore | None = None) -> str:
    if isinstance(error, HttpError):
        return str(error)  # written for the caller by the route that raised it
    if isinstance(error, ModelUnavailable):
        return f"no model available: {error.public or 'none loaded yet'}; GET /health says more, retry later"
    if status >= 500:
        return next((text for kind, text in _PUBLIC_5XX if isinstance(error, kind)), _INTERNAL)
    message = str(error)
    if store is not None:
        message = message.replace(store.uri.rstrip("/") + "/", "").replace(store.uri, "the model store")
    return _S3_BUCKET.sub("", message)


def log_error(logger: Logger, error: BaseException, reply: ErrorReply) -> None:
    """The detail a public body leaves out, with the request id: a 5xx at warning (unexpected ones with their
    stack), a 4xx at debug and by kind only (its message may quote client data)."""
    extra = {"status": reply.status, "kind": reply.kind, "correlation_id": reply.body["request_id"]}
    if reply.kind == "Internal":
        logger.error("unexpected error", extra=extra, exc_info=error)
    elif reply.status >= 500:
        logger.warning("request failed", extra={**extra, "detail": str(error)})
    else:
        logger.debug("request refused", extra=extra)


def answer_errors(
    app: APIGatewayRestResolver,
    logger: Logger,
    store: ModelStore,
    on_error: Callable[[BaseException, ErrorReply], None] | None = None,
) -> None:
    """Make every error of a Powertools resolver's routes (and a path it does not route) answer with
    `error_reply`, logged by `log_error`; `on_error` adds the function's own metrics or log lines."""
    from aws_lambda_powertools.event_handler import Response  # the resolver's functions only, not predict
    from aws_lambda_powertools.event_handler.exceptions import NotFoundError

    @app.not_found
    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def reply(error: Exception) -> Response[str]:
        if isinstance(error, NotFoundError):  # a path or method the template does not route to this function
            error = HttpError(404, "no such route", kind="NoSuchRoute")
        answer = error_reply(error, request_id(app.current_event.raw_event, app.lambda_context), store=store)
        log_error(logger, error, answer)
        if on_error is not None:
            on_error(error, answer)
        return Response(status_code=answer.status, content_type=JSON, body=answer.text())


def lambda_response(status: int, body: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway proxy response with a JSON body."""
    return {"statusCode": status, "headers": {"Content-Type": JSON, **(headers or {})}, "body": body}


def whole_number(text: str | None, what: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A number from a path or query string: ASCII digits only, within bounds; a 400 that says so otherwise."""
    if maximum is None:
        bounds = "a positive whole number" if minimum == 1 else f"a whole number of at least {minimum}"
    else:
        bounds = f"a whole number from {minimum} to {maximum}"
    if text is None or not _WHOLE_NUMBER.fullmatch(text) or not minimum <= int(text) <= (maximum or int(text)):
        shown = "nothing" if not text else repr(text[:20])
        raise HttpError(400, f"{what} must be {bounds}, not {shown}")
    return int(text)
