"""One monitor run (the scheduled monitor function and `python -m training monitor` call this): read the serving
version's captures of the window against its baseline, join the labels sent to POST /feedback to their captured
rows, score the live metric, write the labelled rows as training data, and save a monitoring record in the store.

Scale: captured objects are read one at a time and their rows counted into the baseline's bins in chunks of
CHUNK_ROWS (sklambda/monitoring.DriftAccumulator), so memory holds one object, one chunk and the labelled rows,
whatever the window's size. Lines of other versions or dates are only joined: their request id is read from the
line's first bytes, and a line is parsed only when a label names it.

Storage layout under the capture location (what Firehose's dynamic partitioning writes, sklambda/capture.py):
    <model>/version=<v>/date=<yyyy-mm-dd>/<objects of JSON lines, gzip or not>
    <model>/feedback/date=<yyyy-mm-dd>/<call id>.jsonl
Monitoring records: <model>/monitoring/<created_at>.json in the model store.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from sklambda.capture import decode_numbers, feedback_partition
from sklambda.contract import MISSING_CATEGORY, Label
from sklambda.errors import NotFound
from sklambda.manifest import Manifest, utc_now
from sklambda.monitoring import (
    BASELINE_FILE,
    DriftAccumulator,
    DriftReport,
    LiveQuality,
    NumericBaseline,
    live_quality,
    read_baseline,
)
from sklambda.objects import ObjectStore
from sklambda.store import ModelStore, check_name

logger = logging.getLogger(__name__)

CHUNK_ROWS = 100_000
_ID_PREFIX = b'{"request_id":"'
MONITORING_FOLDER = "monitoring"


@dataclass(frozen=True)
class MonitorConfig:
    window_days: int = 1
    lookback_days: int = 7
    psi_threshold: float = 0.2
    live_metric_max_drop: float = 0.1
    min_labels: int = 30


class MonitoringRecord(BaseModel):
    model: str
    version: int
    created_at: str = Field(default_factory=utc_now)
    window: list[str]
    captured_requests: int = 0
    captured_rows: int = 0
    baseline: bool = True
    drift: DriftReport | None = None
    psi_threshold: float
    drifted_columns: list[str] = Field(default_factory=list)
    quality: LiveQuality | None = None
    live_metric_max_drop: float
    min_labels: int
    quality_breached: bool = False
    labels_received: int = 0
    labels_matched: int = 0
    unmatched_labels: int = 0
    labelled_rows_written: int = 0
    labelled_data: list[str] = Field(default_factory=list)
    alarms: list[str] = Field(default_factory=list)
    seconds: float | None = None


def window_dates(today: date, days: int) -> list[str]:
    """The last `days` whole days and today (a daily run shortly after midnight still sees yesterday in full)."""
    return [(today - timedelta(days=offset)).isoformat() for offset in range(days, -1, -1)]


def _lines(data: bytes) -> Iterator[bytes]:
    """The JSON lines of one object, decompressed as they are read (Firehose's GZIP) rather than all at once."""
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if data[:2] == b"\x1f\x8b" else io.BytesIO(data)
    for line in stream:
        if len(line) > 1:
            yield line


def _request_id(line: bytes) -> str | None:
    if not line.startswith(_ID_PREFIX):
        return None
    end = line.find(b'"', len(_ID_PREFIX))
    return line[len(_ID_PREFIX) : end].decode() if end > 0 else None


def _partition_of(key: str) -> tuple[int, str] | None:
    """(version, date) of a capture key <model>/version=<v>/date=<d>/..., else None."""
    parts = key.split("/")
    if len(parts) < 4 or not parts[1].startswith("version=") or not parts[2].startswith("date="):
        return None
    version = parts[1][len("version=") :]
    return (int(version), parts[2][len("date=") :]) if version.isdigit() else None


def read_labels(captures: ObjectStore, model: str, dates: list[str]) -> dict[tuple[str, int], tuple[Label, str]]:
    """(label, day received) of the labels received on these dates, by (request id, row); a later label for the
    same row replaces an earlier one."""
    labels: dict[tuple[str, int], tuple[Label, str]] = {}
    for day in dates:
        for key in captures.list(feedback_partition(model, day)):
            for line in _lines(captures.get(key).data):
                item = orjson.loads(line)
                labels[(item["request_id"], item["row"])] = (item["label"], day)
    return labels


class _Chunk:
    """Columns of captured rows gathered from many records, handed to the accumulator CHUNK_ROWS at a time."""

    def __init__(self, accumulator: DriftAccumulator) -> None:
        self.accumulator = accumulator
        baseline = accumulator.baseline.features
        self.numeric = [name for name, feature in baseline.items() if isinstance(feature, NumericBaseline)]
        self.categorical = [name for name in baseline if name not in self.numeric]
        self._reset()

    def _reset(self) -> None:
        self.numbers: dict[str, list[np.ndarray]] = {name: [] for name in self.numeric}
        self.categories: dict[str, list[Any]] = {name: [] for name in self.categorical}
        self.outputs: list[Any] = []
        self.rows = 0

    def add(self, record: dict[str, Any]) -> None:
        rows = record["rows"]
        numbers, categories = decode_numbers(record), record.get("categories", {})
        for name, arrays in self.numbers.items():
            column = numbers.get(name)
            arrays.append(column if column is not None else np.full(rows, np.nan, dtype=np.float32))
        for name, seen in self.categories.items():
            seen.extend(categories.get(name) or [None] * rows)
        self.outputs.extend(record["predictions"])
        self.rows += rows
        if self.rows >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            columns: dict[str, Any] = {name: np.concatenate(arrays) for name, arrays in self.numbers.items()}
            columns.update(self.categories)
            self.accumulator.add(columns, self.outputs, self.rows)
            self._reset()


@dataclass
class _Labelled:
    features: dict[str, Any]
    prediction: Label
    label: Label
    version: int
    received: str


def run_monitor(
    store: ModelStore,
    captures: ObjectStore,
    name: str,
    *,
    alias: str = "champion",
    config: MonitorConfig | None = None,
    labelled_data: ObjectStore | None = None,
    today: date | None = None,
) -> MonitoringRecord:
    import time

    started = time.perf_counter()
    config = config or MonitorConfig()
    today = today or date.today()
    check_name("model name", name)
    state = store.alias(name, alias)
    if state is None:
        raise NotFound(f"model {name} has no {alias!r} alias: nothing is served, nothing to monitor")
    manifest = store.manifest(name, state.record.version)
    window = window_dates(today, config.window_days)
    join_dates = set(window_dates(today, config.window_days + config.lookback_days))
    record = MonitoringRecord(
        model=name,
        version=manifest.version,
        window=[window[0], window[-1]],
        psi_threshold=config.psi_threshold,
        live_metric_max_drop=config.live_metric_max_drop,
        min_labels=config.min_labels,
    )
    accumulator = (
        DriftAccumulator(read_baseline(store.artifact(manifest, BASELINE_FILE)))
        if BASELINE_FILE in manifest.artifacts
        else None
    )
    record.baseline = accumulator is not None
    chunk = _Chunk(accumulator) if accumulator is not None else None
    labels = read_labels(captures, name, window)
    record.labels_received = len(labels)
    labelled: dict[tuple[str, int], _Labelled] = {}
    wanted = {request_id for request_id, _row in labels}
    in_window = set(window)
    for key in captures.list(f"{name}/version="):
        partition = _partition_of(key)
        if partition is None or partition[1] not in join_dates:
            continue
        version, day = partition
        drift_pass = chunk is not None and version == manifest.version and day in in_window
        if not drift_pass and not wanted:
            continue
        for line in _lines(captures.get(key).data):
            request_id = _request_id(line)
            joined = request_id in wanted
            if not drift_pass and not joined:
                continue
            captured = orjson.loads(line)
            if drift_pass:
                assert chunk is not None
                record.captured_requests += 1
                record.captured_rows += captured["rows"]
                chunk.add(captured)
            if joined:
                _join(captured, labels, labelled)
    if chunk is not None and accumulator is not None:
        chunk.flush()
        record.drift = accumulator.report()
        record.drifted_columns = record.drift.drifted(config.psi_threshold)
    record.labels_matched = len(labelled)
    record.unmatched_labels = len(labels) - len(labelled)
    _score(record, manifest, labelled, config)
    if labelled_data is not None and labelled:
        record.labelled_data = write_labelled(labelled_data, manifest, list(labelled.values()))
        record.labelled_rows_written = len(labelled)
    if record.drifted_columns:
        record.alarms.append(f"drift: PSI above {config.psi_threshold} on {', '.join(record.drifted_columns)}")
    if record.quality_breached and record.quality is not None:
        record.alarms.append(
            f"live {record.quality.metric} {record.quality.live:.4g} on {record.quality.labels} labels is "
            f"{record.quality.drop:.1%} worse than held-out {record.quality.held_out}"
        )
    record.seconds = round(time.perf_counter() - started, 3)
    save_record(store, record)
    return record


def _join(
    captured: dict[str, Any],
    labels: dict[tuple[str, int], tuple[Label, str]],
    labelled: dict[tuple[str, int], _Labelled],
) -> None:
    request_id = captured["request_id"]
    numbers = decode_numbers(captured)
    categories = captured.get("categories", {})
    for row in range(captured["rows"]):
        found = labels.get((request_id, row))
        if found is None or (request_id, row) in labelled:
            continue  # Firehose may deliver a record twice: one row per (request id, row)
        labelled[(request_id, row)] = _Labelled(
            features={
                **{column: _number(values[row]) for column, values in numbers.items()},
                **{column: values[row] for column, values in categories.items()},
            },
            prediction=captured["predictions"][row],
            label=found[0],
            version=captured["version"],
            received=found[1],
        )


def _score(
    record: MonitoringRecord, manifest: Manifest, labelled: dict[tuple[str, int], _Labelled], config: MonitorConfig
) -> None:
    served = [row for row in labelled.values() if row.version == manifest.version]
    if not served:
        return
    record.quality = live_quality(
        manifest.task,
        manifest.metric.name,
        manifest.metric.greater_is_better,
        manifest.metrics,
        [row.label for row in served],
        [row.prediction for row in served],
    )
    quality = record.quality
    record.quality_breached = bool(
        quality is not None
        and quality.labels >= config.min_labels
        and quality.drop is not None
        and quality.drop > config.live_metric_max_drop
    )


def write_labelled(target: ObjectStore, manifest: Manifest, labelled: list[_Labelled]) -> list[str]:
    """The labelled rows as CSVs the next training run reads, with the training table's columns in its order (the
    loader requires every file to match; columns the model does not use stay empty), missing values empty as in a
    training CSV. One file per day the labels arrived, rewritten whole by every run whose window holds that day, so
    consecutive runs never add the same row twice."""
    columns = manifest.data.columns
    by_day: dict[str, list[_Labelled]] = {}
    for row in labelled:
        by_day.setdefault(row.received, []).append(row)
    written = []
    for day, rows in sorted(by_day.items()):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            values = {**row.features, manifest.target: row.label}
            writer.writerow(_cell(values.get(column)) for column in columns)
        key = f"{manifest.name}-labelled-{day}.csv"
        target.put(key, buffer.getvalue().encode())
        written.append(target.uri(key))
    return written


def _number(value: np.float32) -> str | None:
    """A captured number as the client sent it: float32's shortest text (48.6, not 48.599998474121094)."""
    return None if np.isnan(value) else str(value)


def _cell(value: Any) -> Any:
    return "" if value is None or value == MISSING_CATEGORY else value


def save_record(store: ModelStore, record: MonitoringRecord) -> str:
    key = f"{record.model}/{MONITORING_FOLDER}/{record.created_at.replace(':', '-')}.json"
    store.objects.put(key, orjson.dumps(record.model_dump(mode="json")), if_none_match=True)
    return key


def monitoring_records(store: ModelStore, name: str, limit: int | None = None) -> list[MonitoringRecord]:
    """The model's monitoring records, oldest first (the newest `limit` of them)."""
    keys = [
        key
        for key in store.objects.list(f"{check_name('model name', name)}/{MONITORING_FOLDER}/")
        if key.endswith(".json")
    ]
    if limit is not None:
        keys = keys[-limit:]
    return [MonitoringRecord.model_validate_json(store.objects.get(key).data) for key in keys]
