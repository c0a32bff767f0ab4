"""Training runs: a lock with expiry so that one training runs at a time, and a record of every run.

Both live in the model store next to the model's versions, written through the ObjectStore interface, so the
local folder and S3 behave alike:

    <name>/runs/lock.json                 who holds the run lock, until when (a lease)
    <name>/runs/records/<run_id>.json     one record per run: trigger, data, metrics, gate checks, outcome

The lock is a lease taken and handed back with conditional writes only (create-only, then compare-and-swap on
the etag): no delete, so the retrain role needs no s3:DeleteObject, and a crashed run's lease simply expires.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from sklambda.errors import NotFound, PreconditionFailed, RunInProgress
from sklambda.manifest import canonical_json, utc_now
from sklambda.objects import ObjectStore
from sklambda.store import check_name

# promoted: passed the gate, the alias moved; passed: passed the gate, promotion not requested; rejected: failed
# the gate (or the alias moved meanwhile); skipped: nothing new to train (see training.pipeline.nothing_new).
RunStatus = Literal["queued", "running", "promoted", "passed", "rejected", "skipped", "failed"]
FINISHED: frozenset[str] = frozenset({"promoted", "passed", "rejected", "skipped", "failed"})
RUN_ID_PATTERN = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{8}$")

Clock = Callable[[], float]


def new_run_id(now: float | None = None) -> str:
    """Sortable by start time (to the millisecond), unique by its random suffix: 20261127T030000123Z-1a2b3c4d."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise NotFound(f"no run {run_id[:60]!r}: run ids look like 20261127T030000123Z-1a2b3c4d")
    return run_id


class GateCheck(BaseModel):
    """One check of the promotion gate: what was checked, whether it held, and why."""

    name: str
    passed: bool
    detail: str


class DataSummary(BaseModel):
    uri: str
    sha256: str | None = None
    files: int = 0
    rows: int = 0
    columns: int = 0


class RunRecord(BaseModel):
    run_id: str
    name: str  # the model's
    trigger: str
    status: RunStatus
    reason: str = ""
    requested_at: str = Field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    by: str = "unknown"
    data: DataSummary | None = None
    # What was wrong with the data, one line each (schema drift, too few rows, one class, unreadable file...).
    data_problems: list[str] = Field(default_factory=list)
    version: int | None = None
    champion_version: int | None = None
    metric: str | None = None
    metrics: dict[str, float] | None = None
    champion_metrics: dict[str, float] | None = None
    gate: list[GateCheck] = Field(default_factory=list)
    stages: dict[str, float] = Field(default_factory=dict)
    estimate: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def run_reply(record: RunRecord) -> dict[str, Any]:
    """What the retrain function answers about a run: the record, plus the keys its replies had before runs were
    recorded (`model`, `promoted`, `champion`, `seconds` per stage), which callers may already read."""
    reply: dict[str, Any] = record.model_dump(mode="json")
    reply["model"] = {"name": record.name, "version": record.version}
    reply["promoted"] = record.status == "promoted"
    reply["champion"] = (
        {"version": record.champion_version, "metrics": record.champion_metrics}
        if record.champion_version is not None
        else None
    )
    reply["seconds"] = dict(record.stages)
    return reply


def score_metrics(record: RunRecord) -> dict[str, float]:
    """The primary metric's held-out scores a finished run measured, as metrics to chart over time:
    ChallengerScore (the version this run trained) and ChampionScore (the version holding the alias after the run,
    scored on the same rows). A run that failed or was skipped, or whose metric is missing, measured none."""
    if record.status not in {"promoted", "passed", "rejected"} or record.metric is None:
        return {}
    scores: dict[str, float] = {}
    challenger = (record.metrics or {}).get(record.metric)
    if challenger is not None:
        scores["ChallengerScore"] = challenger
    champion = challenger if record.status == "promoted" else (record.champion_metrics or {}).get(record.metric)
    if champion is not None:
        scores["ChampionScore"] = champion
    return scores


def notification(record: RunRecord) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(subject, message, attributes) announcing a finished run, e.g. on an SNS topic."""
    version = f" v{record.version}" if record.version is not None else ""
    subject = f"{record.name}{version} {record.status}: retrain run {record.run_id}"
    message = record.model_dump(mode="json", exclude={"gate"})
    message["failed_checks"] = [check.model_dump() for check in record.gate if not check.passed]
    attributes = {"model": record.name, "status": record.status, "trigger": record.trigger}
    return subject, message, attributes


class RunLog:
    """The run records of one model, newest first when listed."""

    def __init__(self, objects: ObjectStore, name: str) -> None:
        self.objects = objects
        self.name = check_name("model name", name)

    def _key(self, run_id: str) -> str:
        return f"{self.name}/runs/records/{check_run_id(run_id)}.json"

    def save(self, record: RunRecord) -> None:
        # One writer per run (the holder of the run lock), so a plain write is enough.
        self.objects.put(self._key(record.run_id), canonical_json(record.model_dump(mode="json")))

    def get(self, run_id: str) -> RunRecord:
        try:
            blob = self.objects.get(self._key(run_id))
        except NotFound:
            raise NotFound(f"model {self.name} has no run {run_id}") from None
        return RunRecord.model_validate_json(blob.data)

    def run_ids(self) -> list[str]:
        prefix = f"{self.name}/runs/records/"
        ids = [key[len(prefix) : -len(".json")] for key in self.objects.list(prefix) if key.endswith(".json")]
        return sorted((run_id for run_id in ids if RUN_ID_PATTERN.match(run_id)), reverse=True)

    def list(self, limit: int = 20) -> list[RunRecord]:
        return [self.get(run_id) for run_id in self.run_ids()[:limit]]


class LockRecord(BaseModel):
    run_id: str | None  # None: free
    holder: str = ""
    # False while the API has reserved the lock for a run that its worker invocation has not started yet.
    started: bool = True
    acquired_at: str | None = None
    expires_at: float = 0.0  # epoch seconds

    def held_at(self, now: float) -> bool:
        return self.run_id is not None and self.expires_at > now


@dataclass
class Lease:
    """The run lock, held by one run until `release()` or until it expires."""

    lock: RunLock
    run_id: str
    holder: str
    etag: str
    expires_at: float

    def renew(self) -> None:
        """Push the expiry out again (between stages of a long run); raises RunInProgress if it was lost."""
        renewed = self.lock._write_held(self.run_id, self.holder, True, self.etag)
        self.etag, self.expires_at = renewed.etag, renewed.expires_at

    def release(self) -> bool:
        """Hand the lock back. False when it had expired and someone else took it (nothing is changed then)."""
        return self.lock._release(self)


class RunLock:
    """At most one retrain per model at a time. A lease expires after `ttl_seconds`, so a run that crashed (or
    was killed by the Lambda timeout) blocks the next trigger for at most that long."""

    def __init__(self, objects: ObjectStore, name: str, *, ttl_seconds: float, clock: Clock = time.time) -> None:
        self.objects = objects
        self.key = f"{check_name('model name', name)}/runs/lock.json"
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def current(self) -> LockRecord | None:
        """The lock record if a run holds it now, else None."""
        try:
            record = LockRecord.model_validate_json(self.objects.get(self.key).data)
        except NotFound:
            return None
        return record if record.held_at(self.clock()) else None

    def acquire(self, run_id: str, holder: str, *, started: bool = True) -> Lease:
        """Take the lock for `run_id`, or raise RunInProgress naming the run that holds it.

        started=False reserves the lock for a run that another invocation will start (see `adopt`)."""
        try:
            blob = self.objects.get(self.key)
        except NotFound:
            return self._write_held(run_id, holder, started, None)
        record = LockRecord.model_validate_json(blob.data)
        if record.held_at(self.clock()):
            raise RunInProgress(record.run_id or "", record.holder)
        return self._write_held(run_id, holder, started, blob.etag)

    def adopt(self, run_id: str, holder: str) -> Lease:
        """Start the run that `acquire(run_id, ..., started=False)` reserved (the API reserves, the worker runs).

        Exactly one invocation adopts a reservation: Lambda may deliver an asynchronous event twice, and the
        second delivery finds the run started and raises RunInProgress. A reservation that expired before its
        worker came (a long queue) is taken afresh if nobody else holds the lock."""
        try:
            blob = self.objects.get(self.key)
        except NotFound:
            return self._write_held(run_id, holder, True, None)
        record = LockRecord.model_validate_json(blob.data)
        held = record.held_at(self.clock())
        if held and (record.run_id != run_id or record.started):
            raise RunInProgress(record.run_id or "", record.holder)
        return self._write_held(run_id, holder, True, blob.etag)

    def _write_held(self, run_id: str, holder: str, started: bool, etag: str | None) -> Lease:
        now = self.clock()
        record = LockRecord(
            run_id=run_id,
            holder=holder,
            started=started,
            acquired_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            expires_at=now + self.ttl_seconds,
        )
        data = canonical_json(record.model_dump(mode="json"))
        try:
            if etag is None:
                new_etag = self.objects.put(self.key, data, if_none_match=True)
            else:
                new_etag = self.objects.put(self.key, data, if_match=etag)
        except PreconditionFailed:
            # Somebody wrote the lock between our read and our write: they hold it now.
            current = self.current()
            raise RunInProgress(current.run_id if current and current.run_id else "", "another trigger") from None
        return Lease(self, run_id, holder, new_etag, record.expires_at)

    def _release(self, lease: Lease) -> bool:
        data = canonical_json(LockRecord(run_id=None).model_dump(mode="json"))
        try:
            self.objects.put(self.key, data, if_match=lease.etag)
        except PreconditionFailed:
            return False
        return True
