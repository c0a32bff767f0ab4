"""One deadline per unit of store work (sklambda.deadlines): nested blocks keep the earlier deadline, the
handler decorator takes it from Lambda's time left, and S3 reads give up by it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sklambda import aws, deadlines
from sklambda.errors import StoreUnavailable

pytestmark = pytest.mark.unit


def test_a_nested_block_cannot_extend_the_deadline_it_runs_in() -> None:
    assert deadlines.current() is None
    with deadlines.within(2.0, reserve=0.5):
        outer = deadlines.current()
        assert outer is not None
        assert 1.4 < outer - time.monotonic() <= 1.5
        with deadlines.within(60.0):
            assert deadlines.current() == outer
        with deadlines.within(1.0, reserve=0.5):
            inner = deadlines.current()
            assert inner is not None
            assert inner < outer
        assert deadlines.current() == outer
    assert deadlines.current() is None


def test_the_handler_runs_within_lambdas_time_left_less_the_reserve() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 4_000

    @deadlines.from_context
    def handler(event: Any, context: Any) -> float | None:
        deadline = deadlines.current()
        return None if deadline is None else deadline - time.monotonic()

    left = handler({}, Context())
    assert left is not None
    assert 4.0 - deadlines.RESERVE_SECONDS - 0.1 < left <= 4.0 - deadlines.RESERVE_SECONDS
    assert deadlines.current() is None


def test_a_signed_get_stops_retrying_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a store whose every attempt fails (a connection refused, at once)
    attempts: list[float] = []

    def refused(request: Any, deadline: float) -> aws.HttpReply:
        attempts.append(deadline)
        raise aws.TransientError("connection refused")

    monkeypatch.setattr(aws, "transport", refused)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # When a read runs inside a 0.3 s deadline
    started = time.monotonic()
    with deadlines.within(0.3, reserve=0.0), pytest.raises(StoreUnavailable, match="connection refused"):
        aws.signed_get("bucket", "key")
    # Then it gave up by then, every attempt against that same deadline
    assert time.monotonic() - started < 0.5
    assert len(set(attempts)) == 1
