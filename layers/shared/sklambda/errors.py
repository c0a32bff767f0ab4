"""Typed errors. The HTTP functions map them to status codes in one place (sklambda.http); the command line prints
their message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SklambdaError(Exception):
    """Base class: the message is written for the person who has to act on it."""


class NotFound(SklambdaError):
    """An object, version or alias does not exist."""


class InvalidName(SklambdaError, ValueError):
    """A model, alias or file name that the store does not allow (it would escape its folder, for one)."""


class PreconditionFailed(SklambdaError):
    """A conditional write lost: somebody else wrote first (compare-and-swap conflict)."""


class AliasConflict(SklambdaError):
    """An alias moved under us between read and write; nothing was changed by this call."""


class IntegrityError(SklambdaError):
    """Stored bytes do not match the checksum recorded at publish time."""


class VersionRefused(SklambdaError):
    """A version exists but must not be served or promoted (rejected, incompatible, failed self-test)."""


class ModelUnavailable(SklambdaError):
    """No model can be served right now (no alias yet, or nothing loadable). The message has the detail (for
    logs); `public` says why without anything private (for replies)."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public


class StoreUnavailable(SklambdaError):
    """The store could not be reached within the retry budget."""


class ConfigError(SklambdaError):
    """Configuration is missing or invalid."""


class DataError(SklambdaError):
    """Training data cannot be read or does not satisfy what training needs."""


class HttpError(SklambdaError):
    """An answer a route decided on: `status` is the HTTP status, the message is written for the caller (it is
    the public reply's "error"), `kind` names it for metrics, `details` are further public fields of the body."""

    def __init__(
        self, status: int, message: str, *, kind: str = "BadRequest", details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.details = dict(details or {})


class RequestError(HttpError):
    """Something the client sent is wrong (a 4xx); `kind` names the mistake for metrics (InvalidJson,
    BodyTooLarge, ...)."""


class RunSkipped(SklambdaError):
    """This trigger starts no training; `run_id` names the run that made it unnecessary."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunInProgress(RunSkipped):
    """Another retrain of the same model holds the run lock."""

    def __init__(self, run_id: str, holder: str) -> None:
        super().__init__(f"run {run_id or '?'} ({holder}) is in progress; no second training was started", run_id)
        self.holder = holder


class DataRejected(DataError):
    """The training data failed validation; `problems` lists every finding, one readable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the training data failed validation:\n  - " + "\n  - ".join(problems))
        self.problems = problems


class BudgetExceeded(SklambdaError):
    """The run would not finish within the time or memory it has (e.g. the Lambda's 15 minutes or its memory)."""
