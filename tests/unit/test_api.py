"""The request checks of sklambda.api on their own: content type, body size, nesting depth, envelope, rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sklambda.api import (
    RequestLimits,
    _json_depth,
    check_content_type,
    check_depth,
    check_rows,
    parse_predict_request,
    request_bytes,
    row_limit,
)
from sklambda.contract import ContractViolation, DataContract, Feature
from sklambda.errors import RequestError

pytestmark = pytest.mark.unit

LIMITS = RequestLimits(max_body_bytes=2048, max_json_depth=6, max_rows=3)
ROW = {"x": 1.0}


def refused(call: Any, *args: Any, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    "value",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        'application/json; charset="utf-8"',
    ],
)
def test_json_in_utf8_is_accepted(value: str) -> None:
    check_content_type(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "missing Content-Type: send application/json"),
        ("text/plain", "unsupported Content-Type 'text/plain': send application/json"),
        ("application/x-www-form-urlencoded", "unsupported Content-Type 'application/x-www-form-urlencoded'"),
        ("application/json; charset=latin-1", "unsupported charset 'latin-1': send UTF-8 JSON"),
        ("application/jsonx", "unsupported Content-Type 'application/jsonx'"),
    ],
)
def test_other_content_types_are_415(value: str | None, message: str) -> None:
    error = refused(check_content_type, value)
    assert (error.status, error.kind) == (415, "UnsupportedMediaType")
    assert str(error).startswith(message)


def test_body_size_is_checked_in_bytes_before_parsing() -> None:
    # Given bodies at and just over the limit, counted in UTF-8 bytes (é is two)
    at_limit = "x" * 2048
    over_in_bytes = "é" * 1025
    # When they are read
    # Then the one at the limit passes and the others are 413 with the limit named
    assert request_bytes(at_limit, base64_encoded=False, limits=LIMITS) == at_limit.encode()
    for body in (over_in_bytes, "x" * 2049, "x" * 10_000_000):
        error = refused(request_bytes, body, base64_encoded=False, limits=LIMITS)
        assert (error.status, str(error)) == (413, "the body is larger than 2048 bytes; send fewer rows per request")


def test_missing_body_base64_and_broken_text() -> None:
    assert refused(request_bytes, None, base64_encoded=False, limits=LIMITS).status == 400
    assert str(refused(request_bytes, {"instances": []}, base64_encoded=False, limits=LIMITS)) == (
        "the body must be JSON text"
    )
    assert str(refused(request_bytes, "", base64_encoded=False, limits=LIMITS)).startswith("the request has no body")
    assert request_bytes("eyJhIjogMX0=", base64_encoded=True, limits=LIMITS) == b'{"a": 1}'
    assert str(refused(request_bytes, "not base64!", base64_encoded=True, limits=LIMITS)) == (
        "the body is marked base64 but is not valid base64"
    )
    # A lone surrogate cannot be encoded: a client error, not a crash
    assert str(refused(request_bytes, '{"a": "\ud800"}', base64_encoded=False, limits=LIMITS)).endswith(
        "not valid UTF-8"
    )


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": [[]]}]}', 5),
        ('{"a": "[[[[[[[[", "b": "}}}}"}', 1),
        (r'{"a": "quote \" then [[[[[[", "b": [1]}', 2),
        (r'{"a": "backslash \\", "b": [[[1]]]}', 4),
        (r'["\\\" [[[ \\\\"]', 1),
    ],
)
def test_depth_ignores_brackets_inside_strings(text: str, depth: int) -> None:
    # Given JSON with brackets (and escaped quotes) inside strings
    # When its depth is measured by the vectorised scan
    # Then only structural brackets count, as a parser sees them
    assert _json_depth(text.encode()) == depth
    assert depth == _parsed_depth(json.loads(text))


def _parsed_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_parsed_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_parsed_depth(item) for item in value), default=0)
    return 0


def test_deep_nesting_is_refused_before_the_parser_sees_it() -> None:
    # Given a small and a large body nested deeper than the limit (orjson itself would stop only at 1024)
    small = b"[" * 7 + b"]" * 7
    large = b'{"instances": [' + b'{"x": 1.0}, ' * 500 + b"[[[[[[[1]]]]]]]" + b"]}"
    # When checked
    # Then both are 400 with the limit named; one level less passes
    for body in (small, large):
        error = refused(check_depth, body, 6)
        assert (error.status, error.kind, str(error)) == (400, "TooDeep", "the JSON is nested deeper than 6 levels")
    check_depth(b"[" * 6 + b"]" * 6, 6)
    check_depth(b'{"instances": [' + b'{"x": 1.0}, ' * 500 + b"[1]]}", 6)


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([ROW], 'expected a JSON object with exactly one of "instances", "dataframe_split" or "dataframe_records"'),
        ({"rows": [ROW]}, 'expected a JSON object with exactly one of "instances"'),
        ({"instances": [ROW], "dataframe_records": [ROW]}, "expected a JSON object with exactly one of"),
        ({"instances": [ROW], "extra": 1}, "unknown top-level field 'extra'; expected 'instances' and optionally"),
        ({"instances": [ROW], "params": []}, 'expected "params" to be an object like {"probabilities": false}'),
        ({"instances": [ROW], "params": {"top_k": 3}}, "unknown parameter 'top_k'; known: probabilities"),
        ({"instances": [ROW], "params": {"probabilities": 0}}, "parameter 'probabilities' must be true or false"),
    ],
)
def test_envelope_errors_are_400(document: Any, message: str) -> None:
    error = refused(parse_predict_request, body(document), LIMITS)
    assert error.status == 400
    assert str(error).startswith(message)


def test_malformed_json_and_non_json_numbers_are_400() -> None:
    for text in ('{"instances": [', '{"instances": [{"x": NaN}]}', '{"instances": [{"x": Infinity}]}', "1e400"):
        error = refused(parse_predict_request, text.encode(), LIMITS)
        assert (error.status, error.kind) == (400, "InvalidJson")
        assert str(error).startswith("the body is not valid JSON: ")


@pytest.mark.parametrize("key", ["instances", "dataframe_records"])
def test_more_rows_than_allowed_is_413(key: str) -> None:
    error = refused(parse_predict_request, body({key: [ROW] * 4}), LIMITS)
    assert (error.status, error.kind, str(error)) == (
        413,
        "TooManyRows",
        "4 rows is more than the 3 allowed per request",
    )
    split = {"dataframe_split": {"columns": ["x"], "data": [[1.0]] * 4}}
    assert refused(parse_predict_request, body(split), LIMITS).status == 413


def test_each_format_and_the_probabilities_choice() -> None:
    request = parse_predict_request(body({"instances": [ROW, ROW]}), LIMITS)
    assert (request.format, request.rows, request.probabilities) == ("instances", 2, True)
    request = parse_predict_request(body({"dataframe_records": [ROW], "params": {"probabilities": False}}), LIMITS)
    assert (request.format, request.rows, request.probabilities) == ("dataframe_records", 1, False)
    split = {"dataframe_split": {"index": [7], "columns": ["x"], "data": [[1.0]]}}
    request = parse_predict_request(body(split), LIMITS)
    assert (request.format, request.rows) == ("dataframe_split", 1)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ([["x"], [1]], 'expected "dataframe_split" to be an object with "columns" and "data"'),
        ({"columns": ["x"], "data": [[1]], "rows": 1}, "unknown field 'rows' in \"dataframe_split\""),
        ({"columns": ["x"], "data": [[1]], "index": 0}, '"index" must be a list'),
    ],
)
def test_split_envelope_problems_are_contract_violations(split: Any, message: str) -> None:
    with pytest.raises(ContractViolation, match=message):
        parse_predict_request(body({"dataframe_split": split}), LIMITS)


# ------------------------------------------------------------------------------------------ the row limit


def wide_contract(classes: list[Any] | None = None) -> DataContract:
    features = [
        Feature(name=f"measurement_{i:02d}", kind="numeric", value_type="number", nullable=True) for i in range(24)
    ]
    categories = ["north", "Ålesund 🐧", 'the "central" region']
    features += [
        Feature(name=f"category_{i}", kind="categorical", value_type="string", nullable=False, categories=categories)
        for i in range(8)
    ]
    return DataContract(features=features, target="y", task="classification", classes=classes or ["no", "yes"])


def test_a_wide_models_row_limit_is_what_fits_in_the_body() -> None:
    # Given a 32-column model and a 1 MiB body limit with 5000 rows allowed
    contract = wide_contract()
    limits = RequestLimits(max_body_bytes=1_048_576, max_json_depth=10, max_rows=5000)
    # When its row limit is derived
    limit = row_limit(contract, limits)
    # Then it is below MAX_ROWS, and that many of its widest rows (as Python's json writes them) fit the body
    widest: dict[str, Any] = {f.name: -2.2250738585072014e-308 for f in contract.features if f.kind == "numeric"}
    widest |= {f.name: "Ålesund 🐧" for f in contract.features if f.kind == "categorical"}
    body = json.dumps({"dataframe_records": [widest] * limit, "params": {"probabilities": False}}).encode()
    assert 100 < limit < 5000
    assert len(body) <= limits.max_body_bytes
    assert len(request_bytes(body, base64_encoded=False, limits=limits)) == len(body)
    # And one row more is refused whatever its size
    check_rows(limit, limit)
    assert refused(check_rows, limit + 1, limit).status == 413


def test_a_narrow_model_keeps_max_rows_and_many_classes_bound_the_reply() -> None:
    limits = RequestLimits(max_body_bytes=3_000_000, max_json_depth=10, max_rows=5000)
    narrow = DataContract(
        features=[Feature(name="x", kind="numeric", value_type="number", nullable=False)],
        target="y",
        task="regression",
    )
    assert row_limit(narrow, limits) == 5000
    # 500 classes: 5000 rows of probabilities would not fit in what Lambda may return (6 MiB)
    many = wide_contract(classes=[f"class {i}" for i in range(500)])
    assert row_limit(many, limits) * 500 * 24 < 6_291_456
