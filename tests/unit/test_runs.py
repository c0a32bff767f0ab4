"""The run lock (a lease by conditional writes) and the run records, on both store backends."""

from __future__ import annotations

import threading

import pytest

from sklambda.errors import NotFound, RunInProgress
from sklambda.runs import (
    GateCheck,
    RunLock,
    RunLog,
    RunRecord,
    check_run_id,
    new_run_id,
    notification,
    score_metrics,
)
from sklambda.store import ModelStore

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def lock_of(store: ModelStore, clock: Clock, ttl: float = 100) -> RunLock:
    return RunLock(store.objects, "demo", ttl_seconds=ttl, clock=clock)


def test_one_holder_at_a_time_and_release_frees_it(store: ModelStore) -> None:
    clock = Clock()
    lock = lock_of(store, clock)

    # Given a run holding the lock
    lease = lock.acquire("run-a", "first trigger")

    # When a second trigger tries, it is refused, naming the run that holds it
    with pytest.raises(RunInProgress) as refused:
        lock.acquire("run-b", "second trigger")
    assert (refused.value.run_id, refused.value.holder) == ("run-a", "first trigger")

    # Then after the release the next one gets it
    assert lease.release() is True
    assert lock.current() is None
    assert lock.acquire("run-b", "second trigger").run_id == "run-b"


def test_a_crashed_runs_lease_expires_and_its_late_release_changes_nothing(store: ModelStore) -> None:
    clock = Clock()
    lock = lock_of(store, clock, ttl=100)
    crashed = lock.acquire("run-a", "crashed run")

    # When the lease's time has passed, another run takes the lock
    clock.now += 101
    taker = lock.acquire("run-b", "next trigger")

    # Then the old holder can neither release nor renew what is no longer its lock
    assert crashed.release() is False
    with pytest.raises(RunInProgress):
        crashed.renew()
    current = lock.current()
    assert current is not None
    assert current.run_id == "run-b"
    assert taker.release() is True


def test_renew_pushes_the_expiry_out(store: ModelStore) -> None:
    clock = Clock()
    lock = lock_of(store, clock, ttl=100)
    lease = lock.acquire("run-a", "long run")
    clock.now += 90
    lease.renew()
    clock.now += 90  # 180 s after the start, 90 after the renewal
    with pytest.raises(RunInProgress):
        lock.acquire("run-b", "next trigger")


def test_a_reservation_is_adopted_by_exactly_one_invocation(store: ModelStore) -> None:
    clock = Clock()
    lock = lock_of(store, clock)
    # Given the API reserved the lock for a run its worker will carry out
    lock.acquire("run-a", "POST /retrain", started=False)
    with pytest.raises(RunInProgress):
        lock.acquire("run-b", "schedule")

    # When the worker adopts it, and a duplicate delivery of the same event tries too
    lease = lock.adopt("run-a", "worker")
    with pytest.raises(RunInProgress):
        lock.adopt("run-a", "duplicate worker")

    # Then only the first runs; another run cannot adopt it either
    with pytest.raises(RunInProgress):
        lock.adopt("run-b", "someone else")
    assert lease.release()


def test_concurrent_acquires_give_the_lock_to_exactly_one(store: ModelStore) -> None:
    lock = RunLock(store.objects, "demo", ttl_seconds=100)
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def contend(run_id: str) -> None:
        barrier.wait()
        try:
            lock.acquire(run_id, run_id)
            winners.append(run_id)
        except RunInProgress:
            pass

    threads = [threading.Thread(target=contend, args=(f"run-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_run_records_round_trip_and_list_newest_first(store: ModelStore) -> None:
    log = RunLog(store.objects, "demo")
    ids = [new_run_id(now) for now in (1_800_000_000.0, 1_800_000_000.5, 1_800_000_060.0)]
    for run_id in ids:
        log.save(RunRecord(run_id=run_id, name="demo", trigger="schedule", status="queued"))
    done = log.get(ids[0]).model_copy(update={"status": "promoted", "version": 3})
    log.save(done)

    assert log.get(ids[0]) == done
    assert [record.run_id for record in log.list()] == ids[::-1]
    assert [record.run_id for record in log.list(limit=1)] == [ids[2]]
    with pytest.raises(NotFound, match="has no run"):
        log.get(new_run_id())


@pytest.mark.parametrize("bad", ["../lock", "lock", "20260101T000000Z-1a2b3c4d", "x" * 500])
def test_malformed_run_ids_are_not_found(bad: str) -> None:
    with pytest.raises(NotFound, match="run ids look like"):
        check_run_id(bad)


def test_the_notification_names_model_version_outcome_and_failed_checks() -> None:
    record = RunRecord(
        run_id=new_run_id(),
        name="demo",
        trigger="api",
        status="rejected",
        version=4,
        gate=[
            GateCheck(name="beats champion", passed=False, detail="worse"),
            GateCheck(name="probabilities are valid", passed=True, detail="ok"),
        ],
    )
    subject, message, attributes = notification(record)
    assert subject == f"demo v4 rejected: retrain run {record.run_id}"
    assert message["failed_checks"] == [{"name": "beats champion", "passed": False, "detail": "worse"}]
    assert attributes == {"model": "demo", "status": "rejected", "trigger": "api"}


@pytest.mark.parametrize(
    ("status", "champion_metrics", "expected"),
    [
        # promoted: the challenger is the champion now
        ("promoted", {"f1": 0.80}, {"ChallengerScore": 0.85, "ChampionScore": 0.85}),
        # rejected: the champion keeps the alias, scored on the same held-out rows
        ("rejected", {"f1": 0.90}, {"ChallengerScore": 0.85, "ChampionScore": 0.90}),
        # the first version, rejected by a must-hold case: there is no champion to chart
        ("rejected", None, {"ChallengerScore": 0.85}),
        # a failed run measured nothing
        ("failed", {"f1": 0.90}, {}),
    ],
)
def test_score_metrics_chart_the_champion_after_each_run(
    status: str, champion_metrics: dict[str, float] | None, expected: dict[str, float]
) -> None:
    record = RunRecord(
        run_id=new_run_id(),
        name="demo",
        trigger="schedule",
        status=status,  # type: ignore[arg-type]
        metric="f1",
        metrics={"f1": 0.85, "accuracy": 0.9},
        champion_metrics=champion_metrics,
    )
    assert score_metrics(record) == expected
