"""The promotion guard: an alarm shortly after a promotion rolls the alias back; otherwise nothing moves."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sklambda.errors import ConfigError
from sklambda.guard import on_alarm, parse_time, rollback_notification
from sklambda.settings import GuardSettings
from sklambda.store import ModelStore
from tests.unit.test_store import make_manifest

pytestmark = pytest.mark.unit


@pytest.fixture
def promoted(store: ModelStore) -> ModelStore:
    """v1 champion, then v2 promoted over it."""
    for _ in range(2):
        store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="tester", reason="first")
    store.promote("demo", 2, by="tester", reason="better")
    return store


def last_move_time(store: ModelStore) -> datetime:
    state = store.alias("demo", "champion")
    assert state is not None
    return parse_time(state.record.history[-1].at)


def test_alarm_inside_the_watch_rolls_back_and_records_why(promoted: ModelStore) -> None:
    # Given an alarm 5 minutes after v2 was promoted, with a one-hour watch
    alarm_time = last_move_time(promoted) + timedelta(minutes=5)

    # When the guard sees it
    decision = on_alarm(
        promoted, "demo", "champion", alarm_name="Predict5xx", alarm_time=alarm_time, watch_seconds=3600
    )

    # Then v1 serves again and the history says which alarm did it
    assert (decision.rolled_back, decision.from_version, decision.to_version) == (True, 2, 1)
    state = promoted.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 1
    move = state.record.history[-1]
    assert (move.kind, move.by) == ("rollback", "promotion guard (alarm Predict5xx)")
    assert move.reason == "alarm Predict5xx fired 300 s after v2 was promoted (watch 3600 s)"


def test_alarm_outside_the_watch_changes_nothing(promoted: ModelStore) -> None:
    alarm_time = last_move_time(promoted) + timedelta(hours=2)
    decision = on_alarm(promoted, "demo", "champion", alarm_name="P99", alarm_time=alarm_time, watch_seconds=3600)
    assert not decision.rolled_back
    assert "outside the 3600 s watch" in decision.reason
    state = promoted.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 2


def test_alarm_from_before_the_promotion_is_not_about_it(promoted: ModelStore) -> None:
    alarm_time = last_move_time(promoted) - timedelta(minutes=1)
    decision = on_alarm(promoted, "demo", "champion", alarm_name="P99", alarm_time=alarm_time, watch_seconds=3600)
    assert not decision.rolled_back
    assert "fired before v2 was promoted" in decision.reason


def test_a_second_alarm_does_not_roll_back_twice(promoted: ModelStore) -> None:
    # Given a guard rollback already done
    alarm_time = last_move_time(promoted) + timedelta(minutes=1)
    on_alarm(promoted, "demo", "champion", alarm_name="Predict5xx", alarm_time=alarm_time, watch_seconds=3600)

    # When another alarm fires
    decision = on_alarm(promoted, "demo", "champion", alarm_name="P99", alarm_time=alarm_time, watch_seconds=3600)

    # Then v1 stays (the last move was a rollback)
    assert not decision.rolled_back
    assert "was a rollback" in decision.reason
    state = promoted.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 1


def test_first_promotion_has_nothing_to_roll_back_to(store: ModelStore) -> None:
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="tester", reason="first")
    alarm_time = last_move_time(store) + timedelta(minutes=1)
    decision = on_alarm(store, "demo", "champion", alarm_name="P99", alarm_time=alarm_time, watch_seconds=3600)
    assert not decision.rolled_back
    assert "no previous version" in decision.reason


def test_a_rollback_is_announced_with_the_alarm_and_the_versions(promoted: ModelStore) -> None:
    # Given a rollback the guard made
    alarm_time = last_move_time(promoted) + timedelta(minutes=3)
    decision = on_alarm(promoted, "demo", "champion", alarm_name="P99", alarm_time=alarm_time, watch_seconds=3600)

    # When it is announced
    subject, message, attributes = rollback_notification("demo", "champion", decision, "P99")

    # Then the message says which model and alias moved, from which version to which, and which alarm caused it
    assert subject == "demo champion rolled back from v2 to v1 (promotion guard)"
    assert message == {
        "model": "demo",
        "alias": "champion",
        "from_version": 2,
        "to_version": 1,
        "alarm": "P99",
        "reason": "alarm P99 fired 180 s after v2 was promoted (watch 3600 s)",
    }
    assert attributes == {"model": "demo", "alias": "champion", "event": "guard-rollback"}
    assert len(subject) <= 100  # SNS's limit for a subject


def test_guard_settings_read_the_watch_and_the_topic() -> None:
    settings = GuardSettings.from_env({"PROMOTION_WATCH_SECONDS": "900", "ALARM_TOPIC_ARN": ""})
    assert (settings.promotion_watch_seconds, settings.alarm_topic_arn) == (900.0, None)
    topic = "arn:aws:sns:us-east-1:123456789012:alarms"
    assert GuardSettings.from_env({"ALARM_TOPIC_ARN": topic}).alarm_topic_arn == topic
    with pytest.raises(ConfigError, match="PROMOTION_WATCH_SECONDS"):
        GuardSettings.from_env({"PROMOTION_WATCH_SECONDS": "0"})
