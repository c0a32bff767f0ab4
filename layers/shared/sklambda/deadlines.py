"""One deadline for all the store work of a unit of work (a request, or the function's init), rather than a time
budget per call: a refresh is several calls (alias, manifest, artifact) plus reading their bodies, and per-call
budgets add up past the function's timeout.

The predict handler sets it from the time Lambda says is left (`context.get_remaining_time_in_millis()`), less
`RESERVE_SECONDS` to answer once the store has given up; the S3 reads in `sklambda.aws` give up by it. Plain
module state rather than a context variable: a thread that fetches the model for the handler honours the same
deadline.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

# Kept back from the time left, to build and return the reply (a 503, or the last good model's answer).
RESERVE_SECONDS = 1.0

_deadline: list[float] = []


@contextlib.contextmanager
def within(seconds_left: float, *, reserve: float = RESERVE_SECONDS) -> Iterator[None]:
    """Store work inside the block gives up `reserve` seconds before `seconds_left` from now (or earlier, if an
    enclosing block's deadline comes first)."""
    deadline = time.monotonic() + max(seconds_left - reserve, 0.0)
    if _deadline:
        deadline = min(deadline, _deadline[-1])
    _deadline.append(deadline)
    try:
        yield
    finally:
        _deadline.pop()


def current() -> float | None:
    """The monotonic time the store work in progress must end by, or None outside any `within` block."""
    return _deadline[-1] if _deadline else None


class _Context(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def from_context[Handler: Callable[[Any, Any], Any]](handler: Handler) -> Handler:
    """A Lambda handler whose store work ends by the invocation's own deadline (Lambda's time left, less
    RESERVE_SECONDS): a slow store gives a reply (503, or the last good model's answer), not a timeout."""

    @functools.wraps(handler)
    def within_time_left(event: Any, context: _Context) -> Any:
        time_left = getattr(context, "get_remaining_time_in_millis", None)
        if time_left is None:  # not Lambda's context (a bare test double): per-call budgets only
            return handler(event, context)
        # `within`, inlined: a generator-based context manager costs a few microseconds per request, and every
        # request goes through here (predict's budget over the bare model is tens of microseconds).
        deadline = time.monotonic() + max(time_left() / 1000 - RESERVE_SECONDS, 0.0)
        if _deadline:
            deadline = min(deadline, _deadline[-1])
        _deadline.append(deadline)
        try:
            return handler(event, context)
        finally:
            _deadline.pop()

    return cast(Handler, within_time_left)
