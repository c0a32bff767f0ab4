"""Ground truth for earlier predictions (POST /feedback): parsed, checked against the serving version's classes or
target type, and stored beside the captures as one JSON-lines object per call.

Request (`Content-Type: application/json`), one label or a batch:
    {"request_id": "...", "row": 0, "label": "Adelie"}                      row defaults to 0
    {"labels": [{"request_id": "...", "row": 0, "label": "Adelie"}, ...]}

`request_id` is the id predict answered with; `row` the row's position in that request. Checks, cheapest first:
content type 415, body size 413, JSON 400, shape 400, label count 413, then each label 422 with every problem by
position and field (an id that cannot be a request id, a row outside predict's row limit, a label that is not one
of the model's classes or of the wrong JSON type, a finite number for regression, the same row twice).

Whether a request id was captured cannot be known when its label arrives: capture is sampled and Firehose
delivers minutes later. The monitor joins labels to captures and counts those that match nothing
(`unmatched_labels` in its record). With capture off, every label would be unmatched: 409.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from sklambda.capture import feedback_partition
from sklambda.contract import ContractViolation, Label, Problem, Task, echo
from sklambda.errors import RequestError
from sklambda.manifest import utc_now

# API Gateway's request ids (UUIDs) and Lambda's; anything else cannot have come from predict.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_FORMAT = (
    'expected JSON {"request_id": "...", "row": 0, "label": ...} or '
    '{"labels": [{"request_id": "...", "row": 0, "label": ...}, ...]}'
)
_ITEM_FIELDS = frozenset({"request_id", "row", "label"})


@dataclass(frozen=True)
class LabelRecord:
    request_id: str
    row: int
    label: Label


@dataclass(frozen=True)
class FeedbackLimits:
    max_labels: int = 5000
    max_rows: int = 5000
    max_body_bytes: int = 1_048_576


def parse_feedback(raw: bytes, limits: FeedbackLimits) -> list[dict[str, Any]]:
    """Body → the label items as sent (shape and count checked; values not yet)."""
    if len(raw) > limits.max_body_bytes:
        raise RequestError(413, f"the body is larger than {limits.max_body_bytes} bytes; send fewer labels per call")
    if not raw.strip():
        raise RequestError(400, f"the request has no body; {_FORMAT}", kind="NoBody")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"the body is not valid JSON: {error}", kind="InvalidJson") from None
    if type(document) is not dict:
        raise RequestError(400, _FORMAT)
    if set(document) == {"labels"}:
        items = document["labels"]
        if type(items) is not list or not items:
            raise RequestError(400, f'"labels" must be a non-empty list; {_FORMAT}')
    elif "request_id" in document and "label" in document:
        items = [document]
    else:
        raise RequestError(400, _FORMAT)
    if len(items) > limits.max_labels:
        raise RequestError(
            413, f"{len(items)} labels is more than the {limits.max_labels} allowed per call", kind="TooManyLabels"
        )
    return items


def check_labels(
    items: list[dict[str, Any]], task: Task, classes: list[Label] | None, limits: FeedbackLimits
) -> list[LabelRecord]:
    """Every item checked against the model; raises ContractViolation (422) listing every problem."""
    problems: list[Problem] = []
    records: list[LabelRecord] = []
    seen: set[tuple[str, int]] = set()
    allowed = {(type(label), label) for label in classes or ()}
    for index, item in enumerate(items):
        if type(item) is not dict:
            problems.append(Problem(row=index, message=f"expected an object with request_id, row, label; {_FORMAT}"))
            continue
        unknown = sorted(set(item) - _ITEM_FIELDS)
        if unknown:
            problems.append(Problem(row=index, field=echo(unknown[0]), message="unknown field"))
        request_id, row, label = item.get("request_id"), item.get("row", 0), item.get("label")
        before = len(problems)
        if type(request_id) is not str or not REQUEST_ID_PATTERN.match(request_id):
            problems.append(
                Problem(
                    row=index, field="request_id", message=f"not a request id predict answered with: {echo(request_id)}"
                )
            )
        if type(row) is not int or not 0 <= row < limits.max_rows:
            problems.append(
                Problem(row=index, field="row", message=f"must be a whole number from 0 to {limits.max_rows - 1}")
            )
        if "label" not in item:
            problems.append(Problem(row=index, field="label", message="missing field"))
        elif task == "classification":
            if (type(label), label) not in allowed:
                listed = ", ".join(echo(known) for known in (classes or [])[:20])
                problems.append(
                    Problem(row=index, field="label", message=f"{echo(label)} is not one of the classes: {listed}")
                )
        elif type(label) not in (int, float) or not math.isfinite(float(label)):  # type: ignore[arg-type]
            problems.append(Problem(row=index, field="label", message=f"expected a finite number, got {echo(label)}"))
        if len(problems) > before or unknown:
            continue
        key = (request_id, row)
        if key in seen:
            problems.append(Problem(row=index, field="row", message="the same request id and row appear twice"))
            continue
        seen.add(key)  # type: ignore[arg-type]
        records.append(LabelRecord(request_id=request_id, row=row, label=label))  # type: ignore[arg-type]
    if problems:
        raise ContractViolation(problems)
    return records


def feedback_object(records: list[LabelRecord], model: str, version: int, call_id: str) -> tuple[str, bytes]:
    """(key under the capture location, JSON lines) of one call's labels."""
    received = utc_now()
    key = feedback_partition(model, received[:10]) + f"{call_id}.jsonl"
    lines = b"".join(
        orjson.dumps(
            {"request_id": r.request_id, "row": r.row, "label": r.label, "version": version, "received_at": received},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for r in records
    )
    return key, lines
