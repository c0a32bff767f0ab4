"""Rollback and promotion as compare-and-swap on the state the decision was made on (issue 13).

Each race is forced at the read/swap boundary: a wrapper around the object store runs the other party's whole
action right after the first party read (and judged) the alias, before it touches the alias again."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from types import ModuleType

import pytest

from sklambda import registry
from sklambda.errors import AliasConflict
from sklambda.guard import GuardDecision, on_alarm, parse_time
from sklambda.objects import Blob, ObjectStore
from sklambda.store import ModelStore
from tests.conftest import LambdaContext
from tests.unit.test_admin_handler import admin_app, call, event, two_versions  # noqa: F401 (fixtures)
from tests.unit.test_store import make_manifest

pytestmark = pytest.mark.unit

ALIAS_KEY = "demo/aliases/champion.json"


class AfterAliasRead:
    """An ObjectStore that runs `interleave` once, right after the party under test first read the alias: before
    its next access to the alias, be it a second read or the swap itself."""

    def __init__(self, inner: ObjectStore, interleave: Callable[[], object]) -> None:
        self.inner = inner
        self.interleave: Callable[[], object] | None = interleave
        self.alias_read = False

    def _before_alias_access(self, key: str) -> None:
        if key != ALIAS_KEY:
            return
        if self.alias_read and self.interleave is not None:
            interleave, self.interleave = self.interleave, None
            interleave()
        self.alias_read = True

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        self._before_alias_access(key)
        return self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)

    def uri(self, key: str = "") -> str:
        return self.inner.uri(key)

    def get(self, key: str) -> Blob:
        self._before_alias_access(key)
        return self.inner.get(key)

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        self._before_alias_access(key)
        return self.inner.get_if_changed(key, etag)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


@pytest.fixture
def four_promotions(store: ModelStore) -> ModelStore:
    """v1..v4 each promoted in turn: champion v4, rollback stack [1, 2, 3]."""
    for version in range(1, 5):
        store.publish(make_manifest(), {"model.bin": b"m"})
        store.promote("demo", version, by="tester", reason=f"v{version}")
    return store


def alarm(store: ModelStore, name: str, *, clock_from: ModelStore | None = None) -> GuardDecision:
    """The guard's reaction to an alarm 2 minutes after the last promotion (`clock_from` reads that time, so that
    a racing store sees the guard's own read first)."""
    state = (clock_from or store).alias("demo", "champion")
    assert state is not None
    alarm_time = parse_time(state.record.history[-1].at) + timedelta(minutes=2)
    return on_alarm(store, "demo", "champion", alarm_name=name, alarm_time=alarm_time, watch_seconds=3600)


def champion(store: ModelStore) -> tuple[int, list[int]]:
    state = store.alias("demo", "champion")
    assert state is not None
    return state.record.version, state.record.previous


def test_two_concurrent_guards_for_one_alarm_roll_back_exactly_once(four_promotions: ModelStore) -> None:
    # Given guard A has read and judged v4, and guard B (the same alarm, delivered twice) runs before A swaps
    second: list[GuardDecision] = []
    racing = ModelStore(
        AfterAliasRead(four_promotions.objects, lambda: second.append(alarm(four_promotions, "Predict5xx")))
    )

    # When A goes on to swap
    first = alarm(racing, "Predict5xx", clock_from=four_promotions)

    # Then B rolled back v4 → v3, and A changed nothing (v3 stays; not v2) and says why
    assert second[0].rolled_back is True
    assert first.rolled_back is False
    assert "moved after the guard judged v4" in first.reason
    assert champion(four_promotions) == (3, [1, 2])
    rollbacks = [move for move in _history(four_promotions) if move.kind == "rollback"]
    assert [(move.from_version, move.to_version) for move in rollbacks] == [(4, 3)]


def test_a_hotfix_promoted_between_the_guards_read_and_its_swap_is_not_undone(four_promotions: ModelStore) -> None:
    # Given v5, a hotfix an operator promotes while the guard (which judged v4) is about to swap
    four_promotions.publish(make_manifest(), {"model.bin": b"hotfix"})
    racing = ModelStore(
        AfterAliasRead(
            four_promotions.objects,
            lambda: four_promotions.promote("demo", 5, by="operator", reason="hotfix"),
        )
    )

    # When the guard swaps
    decision = alarm(racing, "Predict5xx", clock_from=four_promotions)

    # Then the hotfix still serves
    assert decision.rolled_back is False
    assert champion(four_promotions) == (5, [1, 2, 3, 4])


def test_a_retried_rollback_with_from_version_rolls_back_once(four_promotions: ModelStore) -> None:
    # Given a rollback from v4 that landed, but whose reply the client never saw
    first = registry.rollback(
        four_promotions, "demo", alias="champion", by="client", reason="bad", check=None, from_version=4
    )
    assert (first.from_version, first.version) == (4, 3)

    # When the client retries the same request
    with pytest.raises(AliasConflict, match="serves v3, not v4"):
        registry.rollback(
            four_promotions, "demo", alias="champion", by="client", reason="bad", check=None, from_version=4
        )

    # Then it rolled back one step only
    assert champion(four_promotions) == (3, [1, 2])


def test_a_rollback_whose_state_moved_during_its_self_test_changes_nothing(four_promotions: ModelStore) -> None:
    # Given a rollback that read v4, and a second rollback that lands while the first one's check runs
    def slow_check(_manifest: object) -> None:
        if champion(four_promotions)[0] == 4:
            registry.rollback(
                four_promotions, "demo", alias="champion", by="other", reason="x", check=None, from_version=4
            )

    # Then the first one loses the compare-and-swap: nothing more is popped
    with pytest.raises(AliasConflict):
        registry.rollback(
            four_promotions, "demo", alias="champion", by="me", reason="x", check=slow_check, from_version=4
        )
    assert champion(four_promotions) == (3, [1, 2])


def test_a_promotion_from_a_stale_version_changes_nothing(four_promotions: ModelStore) -> None:
    four_promotions.publish(make_manifest(), {"model.bin": b"five"})
    with pytest.raises(AliasConflict, match="serves v4, not v3"):
        registry.promote(four_promotions, "demo", 5, alias="champion", by="me", reason="x", check=None, from_version=3)
    assert champion(four_promotions) == (4, [1, 2, 3])
    # A retry of a promotion that already landed is a no-op, not a conflict
    registry.promote(four_promotions, "demo", 5, alias="champion", by="me", reason="x", check=None, from_version=4)
    again = registry.promote(
        four_promotions, "demo", 5, alias="champion", by="me", reason="x", check=None, from_version=4
    )
    assert (again.moved, champion(four_promotions)) == (False, (5, [1, 2, 3, 4]))


def test_admin_api_rollback_and_promote_answer_409_when_from_version_is_stale(
    admin_app: ModuleType,  # noqa: F811 (the fixture imported above)
    two_versions: ModelStore,  # noqa: F811
    lambda_context: LambdaContext,
) -> None:
    # Given v1 serving and v2 a candidate: an operator promotes v2 from v1, and retries (the reply was lost)
    promote = event("admin-promote", body={"version": 2, "reason": "x", "from_version": 1}, alias="champion")
    assert call(admin_app, promote, lambda_context)[1]["moved"] is True
    status, retried = call(admin_app, promote, lambda_context)
    assert (status, retried["moved"]) == (200, False)

    # When a rollback from v2 is sent twice (a gateway timeout hid the first reply)
    rollback = event("admin-rollback", body={"reason": "alarm", "from_version": 2}, alias="champion")
    status, first = call(admin_app, rollback, lambda_context)
    assert (status, first["from_version"], first["version"]) == (200, 2, 1)
    status, second = call(admin_app, rollback, lambda_context)

    # Then the retry is a 409 that says why, and the alias moved once
    assert status == 409, second
    assert "serves v1, not v2" in second["error"]
    state = two_versions.alias("penguins", "champion")
    assert state is not None
    assert (state.record.version, [m.kind for m in state.record.history]) == (1, ["promote", "promote", "rollback"])

    # And a promotion based on a stale view changes nothing either
    stale = event("admin-promote", body={"version": 2, "reason": "x", "from_version": 2}, alias="champion")
    assert call(admin_app, stale, lambda_context)[0] == 409
    after = two_versions.alias("penguins", "champion")
    assert after is not None
    assert after.etag == state.etag
    # A wrong type is a 400, not a 500
    bad = event("admin-rollback", body=json.dumps({"reason": "x", "from_version": "2"}), alias="champion")
    assert call(admin_app, bad, lambda_context)[0] == 400


def _history(store: ModelStore) -> list:  # type: ignore[type-arg]
    state = store.alias("demo", "champion")
    assert state is not None
    return state.record.history
