"""The prediction API's HTTP contract, independent of Lambda and Powertools: what a request must look like, in
which order it is checked, and what the replies are.

Request (`POST /predict`, `Content-Type: application/json`), exactly one of:
    {"instances": [{feature: value, ...}, ...]}                       (native)
    {"dataframe_records": [{feature: value, ...}, ...]}               (MLflow)
    {"dataframe_split": {"columns": [...], "data": [[...], ...]}}     (MLflow; "index" is accepted and ignored)
plus optionally {"params": {"probabilities": false}}: classifiers return per-row probabilities unless asked not to.

Reply: {"model": {"name", "version"}, "predictions": [...], "request_id": "..."} and, for classifiers,
"classes" and (unless params.probabilities is false) "probabilities", one row per input row in the order of
"classes".

Checks, cheapest first, each with its status: content type 415; body size 413; nesting depth 400 (reported before
anything else is; the predict handler scans a large body only when its rows do not prove its depth, see
`parse_predict_request`); JSON 400; envelope (one format key, known params) 400; row count 413; then, with a
model at hand (else 503), the model's row limit 413 (`row_limit`: as many rows as always fit in the body) and the
data contract 422 with every problem by row and field. Error bodies: sklambda.http.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson

from sklambda.contract import MISSING_CATEGORY, ContractViolation, DataContract, Feature, echo
from sklambda.errors import RequestError
from sklambda.request_validation import Columns, RequestValidator
from sklambda.runtimes import Prediction
from sklambda.serving import LoadedModel
from sklambda.settings import ServingSettings

if TYPE_CHECKING:
    from sklambda.manifest import Manifest

FORMATS = ("instances", "dataframe_split", "dataframe_records")
PARAMS = {"probabilities": bool}
MEDIA_TYPE = "application/json"
_ONE_FORMAT = 'expected a JSON object with exactly one of "instances", "dataframe_split" or "dataframe_records"'
# Bodies up to this size are checked for depth by counting brackets; larger ones by the vectorised scan.
_SMALL_BODY = 4096
# The depth of a records request whose rows hold scalars only: {"instances": [{...}]}.
_FLAT_RECORDS_DEPTH = 3
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


# The longest JSON text of a number the contract admits (finite, within ±1e18) as JSON encoders write it: a float
# in full precision with an exponent, "-2.2250738585072014e-308".
_NUMBER_CHARS = 24
# Room for the envelope around the rows: the format key, brackets and {"params": {"probabilities": false}}.
_ENVELOPE_BYTES = 128
# What Lambda returns at most (6 MiB), less room for the headers; the reply's body travels JSON-escaped in it.
_REPLY_BUDGET_BYTES = 6_291_456 - 16_384


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold (ServingSettings: MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_ROWS)."""

    max_body_bytes: int
    max_json_depth: int
    max_rows: int

    @classmethod
    def of(cls, settings: ServingSettings) -> RequestLimits:
        return cls(settings.max_body_bytes, settings.max_json_depth, settings.max_rows)


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~3 us for these six, per request).
@dataclass(slots=True)
class PredictRequest:
    """A parsed request whose envelope is valid; its rows are checked against a contract by `columns`."""

    format: str
    payload: Any
    rows: int
    probabilities: bool
    # The body while its depth is still unchecked (`parse_predict_request(..., defer_depth=True)`), else None.
    unchecked: bytes | None = None
    max_depth: int = 0

    def columns(self, validator: RequestValidator) -> Columns:
        """The rows checked against the contract. A request whose depth check was deferred is scanned before any
        problem is reported, as it would have been before parsing, or after valid rows unless they prove the
        depth: rows that pass without unknown fields hold exactly the contract's fields, each a scalar, so the
        document is 3 deep (`params`, which only takes booleans, 2) and no allowed limit refuses it."""
        try:
            if self.format == "dataframe_split":
                columns = validator.split(self.payload.get("columns"), self.payload.get("data"))
            else:
                columns = validator.records(self.payload)
        except Exception:
            self.check_depth()
            raise
        if self.unchecked is not None and (self.format == "dataframe_split" or validator.allow_unknown_fields):
            self.check_depth()
        return columns

    def check_depth(self) -> None:
        """Refuse a request parsed before its depth was checked if it is too deep (nothing for the others). The
        body is scanned once: a refused request reaches this from `columns` and again from the handler."""
        if self.unchecked is not None:
            body, self.unchecked = self.unchecked, None
            check_depth(body, self.max_depth)

    def depth_refusal(self) -> RequestError | None:
        """The TooDeep refusal `check_depth` would raise, or None: what a caller reports first, whatever else it
        found wrong since parsing."""
        try:
            self.check_depth()
        except RequestError as error:
            return error
        return None


# ------------------------------------------------------------------------------------------ request


def check_content_type(value: str | None) -> None:
    """Only JSON, in UTF-8 (the charset parameter may say so, or be absent)."""
    if value == MEDIA_TYPE:  # the usual header, as most clients spell it: nothing to parse
        return
    if value is None:
        raise RequestError(415, f"missing Content-Type: send {MEDIA_TYPE}", kind="UnsupportedMediaType")
    media_type, _, parameters = value.partition(";")
    if media_type.strip().lower() != MEDIA_TYPE:
        raise RequestError(
            415, f"unsupported Content-Type {echo(value)}: send {MEDIA_TYPE}", kind="UnsupportedMediaType"
        )
    for parameter in parameters.split(";"):
        name, _, charset = parameter.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(
                415, f"unsupported charset {echo(charset.strip())}: send UTF-8 JSON", kind="UnsupportedMediaType"
            )


def request_bytes(body: Any, *, base64_encoded: bool, limits: RequestLimits) -> bytes:
    """The body as bytes, refused when absent, larger than the limit, or not UTF-8-encodable."""
    if body is None or len(body) == 0:
        raise RequestError(400, 'the request has no body; send JSON like {"instances": [{...}]}', kind="NoBody")
    if not isinstance(body, str | bytes):  # only a direct invocation can send anything else
        raise RequestError(400, "the body must be JSON text", kind="InvalidJson")
    # A string has at least as many bytes as characters: refuse a huge body before copying it.
    if len(body) > (limits.max_body_bytes * 4 // 3 + 4 if base64_encoded else limits.max_body_bytes):
        raise _too_large(limits)
    if base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "the body is marked base64 but is not valid base64", kind="InvalidJson") from None
    elif isinstance(body, str):
        try:
            raw = body.encode()
        except UnicodeEncodeError:
            raise RequestError(400, "the body is not valid JSON: it is not valid UTF-8", kind="InvalidJson") from None
    else:
        raw = body
    if len(raw) > limits.max_body_bytes:
        raise _too_large(limits)
    return raw


def _too_large(limits: RequestLimits) -> RequestError:
    message = f"the body is larger than {limits.max_body_bytes} bytes; send fewer rows per request"
    return RequestError(413, message, kind="BodyTooLarge")


def check_depth(raw: bytes, max_depth: int) -> None:
    """Refuse JSON nested deeper than `max_depth` before any parser walks it.

    orjson stops at depth 1024 on its own ("depth limit exceeded"); this bound is ours, configurable, and far
    lower: no valid request is deeper than 4. Brackets inside strings do not count; the scan is vectorised (a
    Python loop over the bytes of a large request would cost more than predicting it)."""
    if len(raw) <= _SMALL_BODY and raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    if _json_depth(raw) > max_depth:
        raise RequestError(400, f"the JSON is nested deeper than {max_depth} levels", kind="TooDeep")


def _json_depth(raw: bytes) -> int:
    data = np.frombuffer(raw, dtype=np.uint8)
    # Brackets in three passes: '[' ']' '{' '}' minus 0x5B are 0x00, 0x02, 0x20, 0x22, and no other byte gives
    # a value with only bits 0x02 and 0x20 set (in uint8, wrapping).
    shifted = data - np.uint8(0x5B)
    shifted &= 0xDD
    brackets = np.flatnonzero(shifted == 0)
    if brackets.size == 0:
        return 0
    quotes = data == 0x22
    if b"\\" in raw:
        quotes = _unescaped(quotes, data)
    # A bracket is inside a string when an odd number of quotes comes before it: count the quotes between
    # consecutive brackets (one reduceat pass), then add up.
    segments = np.add.reduceat(quotes, np.concatenate(([0], brackets)), dtype=np.int32)
    outside = brackets[(np.cumsum(segments)[:-1] & 1) == 0]
    steps = (data[outside] & 0x02).astype(np.int8) - 1  # '[' and '{' have bit 0x02 set: +1; ']' '}' -1
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def _unescaped(quotes: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Drop the quotes preceded by an odd run of backslashes (escaped: inside a string)."""
    positions = np.flatnonzero(quotes)
    index = np.arange(data.size)
    last_plain = np.maximum.accumulate(np.where(data == 0x5C, -1, index))  # last non-backslash at or before i
    before = positions - 1
    run = np.where(before >= 0, before - last_plain[np.maximum(before, 0)], 0)
    kept = quotes.copy()
    kept[positions[run % 2 == 1]] = False
    return kept


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        # orjson's message names the position, not the input; NaN and Infinity are not JSON and fail here.
        raise RequestError(400, f"the body is not valid JSON: {error}", kind="InvalidJson") from None


def parse_predict_request(raw: bytes, limits: RequestLimits, *, defer_depth: bool = False) -> PredictRequest:
    """Depth, JSON and the envelope: one format key, known params, the row limit. Rows are checked later,
    against the served version's contract (`PredictRequest.columns`).

    `defer_depth`: a body larger than _SMALL_BODY is parsed first (orjson stops at depth 1024 on its own) and
    scanned for depth only when something is refused, or by `PredictRequest.columns` unless the rows prove the
    depth: the scan costs about as much as the row checks on a large body, and valid bodies rarely need it. The
    replies are the same as with the scan first, provided the caller reports `PredictRequest.depth_refusal()`
    before any problem it finds between this call and `columns` (the predict handler does)."""
    if defer_depth and len(raw) > _SMALL_BODY and limits.max_json_depth >= _FLAT_RECORDS_DEPTH:
        try:
            request = _parse_envelope(raw, limits)
        except Exception:
            check_depth(raw, limits.max_json_depth)  # too deep is said first, as when scanned before parsing
            raise
        request.unchecked, request.max_depth = raw, limits.max_json_depth
        return request
    check_depth(raw, limits.max_json_depth)
    return _parse_envelope(raw, limits)


def _parse_envelope(raw: bytes, limits: RequestLimits) -> PredictRequest:
    document = parse_json(raw)
    if type(document) is not dict:
        raise RequestError(400, _ONE_FORMAT, kind="BadRequest")
    if len(document) == 1 and next(iter(document)) in FORMATS:  # the usual request: one format key, no params
        (format_key,) = document
        probabilities = True
    else:
        formats = [key for key in FORMATS if key in document]
        if len(formats) != 1:
            raise RequestError(400, f"{_ONE_FORMAT}; found {len(formats)}", kind="BadRequest")
        unknown = [key for key in document if key not in FORMATS and key != "params"]
        if unknown:
            raise RequestError(
                400, f"unknown top-level field {echo(unknown[0])}; expected {formats[0]!r} and optionally 'params'"
            )
        (format_key,) = formats
        probabilities = _parse_params(document["params"]) if "params" in document else True
    payload = document[format_key]
    rows = _row_count(format_key, payload)
    if rows > limits.max_rows:
        raise RequestError(
            413, f"{rows} rows is more than the {limits.max_rows} allowed per request", kind="TooManyRows"
        )
    return PredictRequest(format=format_key, payload=payload, rows=rows, probabilities=probabilities)


def _parse_params(params: Any) -> bool:
    if type(params) is not dict:
        raise RequestError(400, 'expected "params" to be an object like {"probabilities": false}')
    for name, value in params.items():
        expected = PARAMS.get(name)
        if expected is None:
            raise RequestError(400, f"unknown parameter {echo(name)}; known: {', '.join(PARAMS)}")
        if type(value) is not expected:
            raise RequestError(400, f"parameter {name!r} must be true or false, got {echo(value)}")
    return bool(params.get("probabilities", True))


def _row_count(format_key: str, payload: Any) -> int:
    if format_key == "dataframe_split":
        if type(payload) is not dict:
            raise ContractViolation.single('expected "dataframe_split" to be an object with "columns" and "data"')
        unknown = [key for key in payload if key not in ("columns", "data", "index")]
        if unknown:
            raise ContractViolation.single(
                f'unknown field {echo(unknown[0])} in "dataframe_split"; expected "columns", "data", "index"'
            )
        rows = payload.get("data")
        if "index" in payload and type(payload["index"]) is not list:
            raise ContractViolation.single('"index" must be a list (it is ignored: rows are answered in order)')
    else:
        rows = payload
    return len(rows) if type(rows) is list else 0


def row_limit(contract: DataContract, limits: RequestLimits) -> int:
    """The most rows a request for this model may hold: MAX_ROWS, or fewer when that many of its widest rows
    would not fit in the body limit (or their reply in what Lambda may return), so that every request valid
    under the published schema (GET /openapi.json) is one the server accepts.

    A row is counted at its widest: in `instances` form (names repeated in every row), every number at its
    longest JSON text, every category at its longest (non-ASCII escaped, as most encoders write it), one space
    after each ':' and ','. Fields beyond the contract (ALLOW_UNKNOWN_FIELDS) are not counted."""
    request_row = 2 + sum(len(_json_text(feature.name)) + 4 + _widest_value(feature) for feature in contract.features)
    fitting_requests = (limits.max_body_bytes - _ENVELOPE_BYTES) // (request_row + 2)
    fitting_replies = _REPLY_BUDGET_BYTES // _widest_reply_row(contract)
    return max(1, min(limits.max_rows, fitting_requests, fitting_replies))


def check_rows(rows: int, limit: int) -> None:
    if rows > limit:
        raise RequestError(
            413, f"{rows} rows is more than the {limit} this model allows per request", kind="TooManyRows"
        )


def _json_text(value: Any) -> bytes:
    """The longer of a value's two usual JSON spellings: raw UTF-8, or non-ASCII escaped (12 bytes per emoji)."""
    escaped = json.dumps(value).encode()
    raw = orjson.dumps(value)
    return escaped if len(escaped) >= len(raw) else raw


def _widest_value(feature: Feature) -> int:
    widest = 4 if feature.nullable else 0  # null
    if feature.kind == "numeric":
        return max(widest, _NUMBER_CHARS)
    categories = [category for category in feature.categories or () if category != MISSING_CATEGORY]
    if feature.value_type == "boolean":
        return max(widest, 5)
    if feature.value_type == "number":
        return max(widest, _NUMBER_CHARS)
    return max([widest, *(len(_json_text(category)) for category in categories)])


def _widest_reply_row(contract: DataContract) -> int:
    """One row of the reply at its widest, as it travels inside Lambda's JSON response (quotes escaped)."""
    if contract.task == "regression" or not contract.classes:
        return _NUMBER_CHARS + 2
    label = max(2 * len(_json_text(label)) for label in contract.classes)
    return label + 2 + 2 + len(contract.classes) * (_NUMBER_CHARS + 2) + 2


# ------------------------------------------------------------------------------------------ replies


def dumps(body: Any) -> str:
    return orjson.dumps(body, option=_DUMPS_OPTIONS).decode()


def predict_reply(model: LoadedModel, prediction: Prediction, request_id: str, *, probabilities: bool) -> str:
    predictions: Any = prediction.labels
    if predictions.dtype == object:  # strings: orjson writes numeric arrays itself, not object ones
        predictions = predictions.tolist()
    reply: dict[str, Any] = {"model": {"name": model.name, "version": model.version}, "predictions": predictions}
    if prediction.probabilities is not None:
        reply["classes"] = model.manifest.classes
        if probabilities:
            reply["probabilities"] = prediction.probabilities
    reply["request_id"] = request_id
    return dumps(reply)


def model_description(
    model: LoadedModel, limits: RequestLimits, *, details: Literal["full", "contract"] = "full"
) -> dict[str, Any]:
    """GET /model: what a client needs to call the model, and what the version is. With details="contract" (an
    API that anyone may call), only the first: no metrics, libraries, code version or training size, and no
    training ranges in the contract (they describe the training data)."""
    manifest = model.manifest
    contract = asdict(manifest.contract)
    contract["allow_unknown_fields"] = model.validator.allow_unknown_fields
    # What a null category becomes before the model sees it (as in training): documented where clients look.
    contract["missing_category"] = MISSING_CATEGORY
    described: dict[str, Any] = {
        "name": manifest.name,
        "version": manifest.version,
        "runtime": model.runtime,
        "task": manifest.task,
        "target": manifest.target,
        "classes": manifest.classes,
        "contract": contract,
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_json_depth": limits.max_json_depth,
            "max_rows": row_limit(manifest.contract, limits),
        },
    }
    if details == "contract":
        for feature in contract["features"]:
            feature.pop("minimum", None)
            feature.pop("maximum", None)
        return described
    # The rest of the manifest, which serving does not read: parsed (with pydantic) when GET /model first asks.
    full = model.manifest.full()
    return described | {
        "estimator": full.estimator,
        "created_at": full.created_at,
        "metric": full.metric.model_dump(mode="json"),
        "metrics": full.metrics,
        "training_rows": full.data.rows,
        "libraries": full.libraries,
        "code_version": full.code_version,
        "runtimes": runtime_descriptions(full),
    }


def runtime_descriptions(manifest: Manifest) -> dict[str, Any]:
    """Per serving runtime: whether it can serve this version, and how closely it reproduced the trained pipeline
    on the golden and the held-out rows (measured at training time; null for versions trained before that)."""
    parity = manifest.parity or {}
    return {
        runtime: {
            "supported": support.supported,
            "detail": support.detail,
            "parity": parity[runtime].model_dump(mode="json") if runtime in parity else None,
        }
        for runtime, support in manifest.runtimes.items()
    }
