"""Capture of served requests: a sample of what predict answered, for the monitor (drift, live quality) and, once
labelled, for the next training run.

One capture record is one JSON line per request (the rows as validated, column by column: numbers as base64
float32, categories as strings; the outputs, the version, the request id and the time); `request_id` comes first so
that the monitor can join labels to captures by reading the first bytes of a line. Feature values are data the
operator must be allowed to hold: they go to the capture sink only, never to a log line.

Delivery, honestly: records wait in this process's memory and leave in one batch (Kinesis Data Firehose
PutRecordBatch, which then buffers, compresses and writes them to S3) when `max_records` or `max_bytes` are reached
or the oldest waited `max_age_seconds`, checked on each captured request. The request that triggers a flush pays
one round trip; the others pay the sampling draw and the encoding. What is lost: records still in memory when
Lambda recycles the container (Python runtimes get no shutdown hook without an extension): those captured since the
container's last flush, i.e. at most `max_records` requests, and, when traffic stops, the last requests before the
pause (nothing runs between invocations to send them); and batches Firehose refuses after one retry (counted as
CaptureDropped, never raised: capture never fails a prediction). Firehose itself delivers at least once, so a
record can appear twice in S3; the labelled dataset keeps one row per (request id, row).
"""

from __future__ import annotations

import random
import time
from base64 import b64decode, b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from sklambda.runtimes import Prediction

if TYPE_CHECKING:
    from sklambda.settings import CaptureSettings

# Firehose limits: 500 records and 4 MiB per PutRecordBatch, 1000 KiB per record.
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024
MAX_RECORD_BYTES = 1000 * 1024
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

# A request's model inputs by feature name (request_validation.Columns is one; split halves are plain dicts).
Columns = Mapping[str, np.ndarray]
# Sends a batch of records (each one JSON line); returns how many were not accepted.
Sender = Callable[[list[bytes]], int]


def encode_record(
    request_id: str, name: str, version: int, columns: Columns, prediction: Prediction, at: float
) -> bytes:
    """One capture line. The numeric columns are one float32 block (column after column, NaN for missing) written
    as base64 of its little-endian bytes, with their names in `numeric`: formatting 1000 rows of 5 columns as
    JSON numbers cost ~0.9 ms, the bytes ~0.15 ms, and the monitor reads them back with one numpy call instead
    of a Python float per value. Categorical columns are lists of category strings; predictions a list of labels
    or numbers; `time` is epoch milliseconds (an ISO string cost more than the rest of a single-row record)."""
    numeric = [column for column, values in columns.items() if values.dtype != object]
    block = np.concatenate([columns[column].reshape(-1) for column in numeric]) if numeric else np.empty(0)
    labels: Any = prediction.labels
    if labels.dtype == object:
        labels = labels.tolist()
    record = {
        "request_id": request_id,
        "time": int(at * 1000),
        "model": name,
        "version": version,
        "rows": len(prediction.labels),
        "numeric": numeric,
        "numbers": b64encode(block.astype("<f4", copy=False).tobytes()).decode(),
        "categories": {column: values.ravel().tolist() for column, values in columns.items() if values.dtype == object},
        "predictions": labels,
    }
    return orjson.dumps(record, option=_NUMPY | orjson.OPT_APPEND_NEWLINE)


def decode_numbers(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """The numeric columns of a capture record, by name (float32, NaN where the value was missing)."""
    names = record.get("numeric") or []
    if not names:
        return {}
    block = np.frombuffer(b64decode(record["numbers"]), dtype="<f4").reshape(len(names), record["rows"])
    return dict(zip(names, block, strict=True))


def record_date(record: dict[str, Any]) -> str:
    """The yyyy-mm-dd (UTC) of a capture record's time."""
    return datetime.fromtimestamp(record["time"] / 1000, UTC).date().isoformat()


def split_rows(columns: Columns, prediction: Prediction) -> list[tuple[Columns, Prediction]]:
    """Two halves of a request whose record would exceed Firehose's record size (rows are kept in order)."""
    middle = len(prediction.labels) // 2
    return [
        ({name: values[:middle] for name, values in columns.items()}, Prediction(prediction.labels[:middle])),
        ({name: values[middle:] for name, values in columns.items()}, Prediction(prediction.labels[middle:])),
    ]


@dataclass
class CaptureBuffer:
    """Sampled capture records held in memory and sent in batches (see the module's delivery note)."""

    send: Sender
    sample_rate: float = 1.0
    max_records: int = MAX_BATCH_RECORDS
    max_bytes: int = MAX_BATCH_BYTES
    max_age_seconds: float = 60.0
    clock: Callable[[], float] = time.time
    draw: Callable[[], float] = random.random
    records: list[bytes] = field(default_factory=list)
    size: int = 0
    oldest: float | None = None
    captured: int = 0
    dropped: int = 0

    def record(self, request_id: str, name: str, version: int, columns: Columns, prediction: Prediction) -> int:
        """Capture one answered request if the sample draws it; returns the records dropped by a flush now."""
        if self.sample_rate < 1.0 and self.draw() >= self.sample_rate:
            return 0
        now = self.clock()
        for line in self._lines(request_id, name, version, columns, prediction, now):
            if self.size + len(line) > self.max_bytes:
                self.flush()
            self.records.append(line)
            self.size += len(line)
        self.captured += 1
        if self.oldest is None:
            self.oldest = now
        if len(self.records) >= self.max_records or now - self.oldest >= self.max_age_seconds:
            return self.flush()
        return 0

    def _lines(
        self, request_id: str, name: str, version: int, columns: Columns, prediction: Prediction, now: float
    ) -> list[bytes]:
        line = encode_record(request_id, name, version, columns, prediction, now)
        if len(line) <= MAX_RECORD_BYTES or len(prediction.labels) <= 1:
            return [line] if len(line) <= MAX_RECORD_BYTES else []
        return [
            part
            for half_columns, half in split_rows(columns, prediction)
            for part in self._lines(request_id, name, version, half_columns, half, now)
        ]

    def flush(self) -> int:
        """Send what waits; returns how many records were dropped (refused or failed). Never raises."""
        if not self.records:
            return 0
        batch, self.records, self.size, self.oldest = self.records, [], 0, None
        dropped = 0
        for start in range(0, len(batch), MAX_BATCH_RECORDS):
            chunk = batch[start : start + MAX_BATCH_RECORDS]
            try:
                dropped += self.send(chunk)
            except Exception:
                dropped += len(chunk)
        self.dropped += dropped
        return dropped


def local_sender(folder: str) -> Sender:
    """A sink for laptops and tests: appends the records to files laid out as Firehose's dynamic partitioning
    lays them out in S3 (<model>/version=<v>/date=<yyyy-mm-dd>/...), so the monitor reads both the same way."""
    from pathlib import Path

    def send(records: list[bytes]) -> int:
        for line in records:
            head = orjson.loads(line)
            partition = Path(folder) / capture_partition(head["model"], head["version"], record_date(head))
            partition.mkdir(parents=True, exist_ok=True)
            with open(partition / "local-capture.jsonl", "ab") as file:
                file.write(line)
        return 0

    return send


def capture_partition(model: str, version: int, date: str) -> str:
    """The key prefix (under the capture prefix) of one model version's captures of one day (yyyy-mm-dd)."""
    return f"{model}/version={version}/date={date}/"


def feedback_partition(model: str, date: str) -> str:
    return f"{model}/feedback/date={date}/"


def open_capture(settings: CaptureSettings) -> CaptureBuffer | None:
    """The predict function's capture buffer from its settings, or None when capture is off."""
    if not settings.enabled:
        return None
    if settings.capture_stream_name:
        from sklambda.aws import firehose_sender

        send = firehose_sender(settings.capture_stream_name)
    else:
        assert settings.capture_local_folder is not None
        send = local_sender(settings.capture_local_folder)
    return CaptureBuffer(
        send=send, sample_rate=settings.capture_sample_rate, max_age_seconds=settings.capture_max_age_seconds
    )
