"""The promotion guard: a model promotion is watched like a code deployment.

When one of the serving alarms goes to ALARM within a watch window after the alias was promoted, the alias rolls
back to the version it served before, through the store's compare-and-swap rollback (the move is recorded in the
alias history with the alarm as its reason). Outside the window, or after a rollback, nothing is undone: the
alarm is then about something else, and a human decides.

The rollback is a compare-and-swap on the alias state the decision was made on: if anything moved the alias
after the guard read it (another guard for the same alarm, a retry of this one, an operator's hotfix), the guard
changes nothing and says so. Two alarms about one bad model therefore roll back one step, not two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sklambda.errors import AliasConflict, VersionRefused
from sklambda.store import ModelStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardDecision:
    rolled_back: bool
    reason: str
    from_version: int | None = None
    to_version: int | None = None


def parse_time(value: str) -> datetime:
    """ISO 8601 as EventBridge and the store write it ('2026-11-27T03:00:00Z', with or without milliseconds)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def on_alarm(
    store: ModelStore,
    name: str,
    alias: str,
    *,
    alarm_name: str,
    alarm_time: datetime,
    watch_seconds: float,
) -> GuardDecision:
    """Roll `alias` back if its last move was a promotion less than `watch_seconds` before the alarm fired."""
    state = store.alias(name, alias)
    if state is None or not state.record.history:
        return GuardDecision(False, f"alias {alias!r} of {name} does not exist: nothing to roll back")
    last = state.record.history[-1]
    if last.kind != "promote":
        return GuardDecision(False, f"the last move of {alias!r} was a {last.kind}: nothing to undo")
    age = (alarm_time - parse_time(last.at)).total_seconds()
    if age < 0:
        return GuardDecision(False, f"alarm {alarm_name} fired before v{last.to_version} was promoted: not about it")
    if age > watch_seconds:
        return GuardDecision(
            False,
            f"v{last.to_version} was promoted {age:.0f} s before the alarm, outside the {watch_seconds:.0f} s watch",
        )
    reason = f"alarm {alarm_name} fired {age:.0f} s after v{last.to_version} was promoted (watch {watch_seconds:.0f} s)"
    try:
        record = store.rollback(
            name, alias=alias, by=f"promotion guard (alarm {alarm_name})", reason=reason, expected=state
        )
    except AliasConflict:
        # Someone moved the alias after we judged it (another guard, an operator): their move is newer than the
        # state this alarm was judged on, so it stands.
        return GuardDecision(
            False,
            f"{alias!r} moved after the guard judged v{last.to_version}: left as it is, nothing changed ({reason})",
        )
    except VersionRefused as error:
        return GuardDecision(False, f"cannot roll back: {error}")
    logger.warning("rolled %s %s back from v%s to v%s: %s", name, alias, last.to_version, record.version, reason)
    return GuardDecision(True, reason, from_version=last.to_version, to_version=record.version)


def rollback_notification(
    name: str, alias: str, decision: GuardDecision, alarm_name: str
) -> tuple[str, dict[str, object], dict[str, str]]:
    """(subject, message, attributes) announcing a rollback the guard made, e.g. on the alarm SNS topic."""
    subject = f"{name} {alias} rolled back from v{decision.from_version} to v{decision.to_version} (promotion guard)"
    message: dict[str, object] = {
        "model": name,
        "alias": alias,
        "from_version": decision.from_version,
        "to_version": decision.to_version,
        "alarm": alarm_name,
        "reason": decision.reason,
    }
    return subject, message, {"model": name, "alias": alias, "event": "guard-rollback"}
