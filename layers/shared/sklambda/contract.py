"""The data contract: one definition of what a model's input looks like, used on both sides.

Training derives it from the cleaned training table and stores it in the version's manifest; serving validates
every request against it and turns the rows into model inputs with the same conversions training used
(`canonical_category`, `MISSING_CATEGORY`). Serving imports only numpy; the pandas-facing helpers take a
DataFrame but never import pandas themselves.

Strict by design: no string→number or bool→number coercion, no NaN/Infinity, categories must have been seen in
training, missing fields are reported, unknown fields are rejected unless the contract allows them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel

from sklambda.errors import SklambdaError

if TYPE_CHECKING:
    import pandas as pd

# Missing categorical values become this category, in training and at serving alike, so that the
# one-hot encoder (and its ONNX conversion) sees "missing" as an ordinary category.
MISSING_CATEGORY = "__missing__"
MAX_PROBLEMS_REPORTED = 50
MAX_ECHO_CHARS = 40

FeatureKind = Literal["numeric", "categorical"]
ValueType = Literal["number", "string", "boolean"]
Task = Literal["classification", "regression"]
Label = str | int | float | bool


class Feature(BaseModel):
    name: str
    kind: FeatureKind
    # The JSON type a client sends for this feature.
    value_type: ValueType
    nullable: bool
    categories: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None


class DataContract(BaseModel):
    features: list[Feature]
    target: str
    task: Task
    classes: list[Label] | None = None
    allow_unknown_fields: bool = False

    @property
    def names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


class Problem(BaseModel):
    row: int | None = None
    field: str | None = None
    message: str


class ContractViolation(SklambdaError):
    """The input does not satisfy the contract. Carries every problem found (bounded), by row and field."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.problems = problems[:MAX_PROBLEMS_REPORTED]
        self.total = total if total is not None else len(problems)
        first = self.problems[0] if self.problems else Problem(message="invalid input")
        where = " ".join(part for part in (_row_label(first.row), first.field and f"field {first.field!r}") if part)
        more = f" (and {self.total - 1} more)" if self.total > 1 else ""
        super().__init__(f"{where + ': ' if where else ''}{first.message}{more}")


def _row_label(row: int | None) -> str:
    return f"row {row}" if row is not None else ""


def echo(value: Any) -> str:
    """A bounded, printable slice of a client value for error messages (never the whole input)."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 3] + "..."


def canonical_category(value: Any) -> str:
    """The string a categorical value is encoded as, the same in training and at serving."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_CATEGORY
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


# ---------------------------------------------------------------- training side (takes pandas objects)


def derive_contract(
    frame: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    target: str,
    task: Task,
    classes: Sequence[Label] | None = None,
    allow_unknown_fields: bool = False,
) -> DataContract:
    """The contract of a raw (not yet encoded) training table."""
    features: list[Feature] = []
    for name in numeric:
        column = frame[name]
        present = column.dropna()
        features.append(
            Feature(
                name=name,
                kind="numeric",
                value_type="number",
                nullable=bool(column.isna().any()),
                minimum=float(present.min()) if len(present) else None,
                maximum=float(present.max()) if len(present) else None,
            )
        )
    for name in categorical:
        column = frame[name]
        present = column.dropna()
        features.append(
            Feature(
                name=name,
                kind="categorical",
                value_type=_value_type_of(present),
                nullable=bool(column.isna().any()),
                categories=sorted({canonical_category(value) for value in present.tolist()}),
            )
        )
    return DataContract(
        features=features,
        target=target,
        task=task,
        classes=list(classes) if classes is not None else None,
        allow_unknown_fields=allow_unknown_fields,
    )


def _value_type_of(values: pd.Series) -> ValueType:
    kinds = {type(value) for value in values.tolist()}
    if kinds and kinds <= {bool, np.bool_}:
        return "boolean"
    if kinds and all(issubclass(kind, int | float | np.integer | np.floating) for kind in kinds):
        return "number"
    return "string"


def encode_frame(frame: pd.DataFrame, contract: DataContract) -> pd.DataFrame:
    """The model's input table: the contract's columns in order, numeric as float, categorical as canonical
    strings with MISSING_CATEGORY for missing values. Training fits on this; serving builds the same."""
    encoded = frame.loc[:, contract.names].copy()
    for feature in contract.features:
        if feature.kind == "numeric":
            encoded[feature.name] = encoded[feature.name].astype("float64")
        else:
            encoded[feature.name] = encoded[feature.name].map(canonical_category).astype(object)
    return encoded


def frame_problems(frame: pd.DataFrame, contract: DataContract) -> list[Problem]:
    """Schema problems of a training table against a contract (missing columns, wrong types)."""
    problems = [Problem(field=name, message="column is missing") for name in contract.names if name not in frame]
    for feature in contract.features:
        if feature.name not in frame:
            continue
        column = frame[feature.name].dropna()
        if feature.kind == "numeric" and not _is_numeric_dtype(column):
            problems.append(Problem(field=feature.name, message=f"expected numbers, found {column.dtype}"))
    return problems


def _is_numeric_dtype(column: pd.Series) -> bool:
    return column.dtype.kind in "iuf"


def frame_to_instances(frame: pd.DataFrame, names: Iterable[str]) -> list[dict[str, Any]]:
    """Rows as an API client would send them: JSON types, missing values as null."""
    rows: list[dict[str, Any]] = []
    for record in frame.loc[:, list(names)].to_dict(orient="records"):
        rows.append({str(key): _json_value(value) for key, value in record.items()})
    return rows


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# ---------------------------------------------------------------- serving side (numpy only)

Columns = dict[str, np.ndarray]

_NUMBER_TYPES = frozenset({int, float})
_ACCEPTED_TYPES: dict[str, set[type]] = {"string": {str}, "number": {int, float}, "boolean": {bool}}
_NONE = type(None)


def columns_from_records(rows: Any, contract: DataContract) -> Columns:
    """Validate `[{feature: value, ...}, ...]` and return one model input column per feature."""
    if not isinstance(rows, list) or not rows:
        raise ContractViolation([Problem(message="expected a non-empty list of objects (one per row)")])
    not_objects = [index for index, row in enumerate(rows) if type(row) is not dict]
    if not_objects:
        raise ContractViolation(
            [Problem(row=index, message="expected an object of feature: value") for index in not_objects]
        )
    names = contract.names
    expected = set(names)
    problems: list[Problem] = []
    # Fast path: every row has exactly the contract's keys (one C-level comparison per row).
    if any(row.keys() != expected for row in rows):
        for index, row in enumerate(rows):
            keys = row.keys()
            problems.extend(
                Problem(row=index, field=name, message="missing field") for name in names if name not in keys
            )
            if not contract.allow_unknown_fields:
                problems.extend(
                    Problem(row=index, field=echo(key), message="unknown field") for key in keys if key not in expected
                )
        if problems:
            raise ContractViolation(problems)
    values_by_feature = {name: [row[name] for row in rows] for name in names}
    return _columns(values_by_feature, contract)


def columns_from_split(columns: Any, data: Any, contract: DataContract) -> Columns:
    """Validate MLflow's `dataframe_split` (`{"columns": [...], "data": [[...], ...]}`)."""
    if not isinstance(columns, list) or not all(isinstance(name, str) for name in columns):
        raise ContractViolation([Problem(field="columns", message="expected a list of column names")])
    if not isinstance(data, list) or not data:
        raise ContractViolation([Problem(field="data", message="expected a non-empty list of rows")])
    width = len(columns)
    problems = [
        Problem(row=index, message=f"expected a list of {width} values")
        for index, row in enumerate(data)
        if type(row) is not list or len(row) != width
    ]
    expected = set(contract.names)
    problems.extend(Problem(field=name, message="missing column") for name in contract.names if name not in columns)
    if not contract.allow_unknown_fields:
        problems.extend(Problem(field=echo(name), message="unknown column") for name in columns if name not in expected)
    if len(set(columns)) != len(columns):
        problems.append(Problem(field="columns", message="duplicate column names"))
    if problems:
        raise ContractViolation(problems)
    transposed = list(zip(*data, strict=True))
    position = {name: index for index, name in enumerate(columns)}
    return _columns({name: list(transposed[position[name]]) for name in contract.names}, contract)


def _columns(values_by_feature: dict[str, list[Any]], contract: DataContract) -> Columns:
    problems: list[Problem] = []
    columns: Columns = {}
    for feature in contract.features:
        values = values_by_feature[feature.name]
        if feature.kind == "numeric":
            column, found = _numeric_column(feature, values)
        else:
            column, found = _categorical_column(feature, values)
        problems.extend(found)
        columns[feature.name] = column
    if problems:
        problems.sort(key=lambda problem: problem.row if problem.row is not None else -1)
        raise ContractViolation(problems)
    return columns


def _numeric_column(feature: Feature, values: list[Any]) -> tuple[np.ndarray, list[Problem]]:
    kinds = set(map(type, values))
    allowed = _NUMBER_TYPES | {_NONE} if feature.nullable else _NUMBER_TYPES
    if not kinds <= allowed:
        return _EMPTY, [
            _numeric_problem(feature, index, value) for index, value in enumerate(values) if type(value) not in allowed
        ]
    # None → NaN here; the model's imputer fills it (nullable features only, checked above).
    try:
        wide = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64: report the rows, do not fail the request
        wide = np.array([_clamp_to_inf(value) for value in values], dtype=np.float64)
    # Checked after the cast to float32 (the model's input type): 1e300 is finite in float64, not here.
    with np.errstate(over="ignore"):
        column = wide.astype(np.float32)
    finite = np.isfinite(column)
    if _NONE in kinds:
        finite |= np.array([value is None for value in values])
    if not finite.all():
        return _EMPTY, [
            Problem(row=int(index), field=feature.name, message="must be a finite number within float32 range")
            for index in np.flatnonzero(~finite)
        ]
    return column.reshape(-1, 1), []


def _clamp_to_inf(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except OverflowError:
        return math.inf


def _numeric_problem(feature: Feature, index: int, value: Any) -> Problem:
    if value is None:
        return Problem(row=index, field=feature.name, message="must not be null")
    return Problem(row=index, field=feature.name, message=f"expected a number, got {_json_type(value)} {echo(value)}")


def _categorical_column(feature: Feature, values: list[Any]) -> tuple[np.ndarray, list[Problem]]:
    accepted: set[type] = _ACCEPTED_TYPES[feature.value_type]
    if feature.nullable:
        accepted = accepted | {_NONE}
    kinds = set(map(type, values))
    if not kinds <= accepted:
        expected = {"string": "a string", "number": "a number", "boolean": "true or false"}[feature.value_type]
        return _EMPTY, [
            Problem(row=index, field=feature.name, message="must not be null")
            if value is None
            else Problem(
                row=index, field=feature.name, message=f"expected {expected}, got {_json_type(value)} {echo(value)}"
            )
            for index, value in enumerate(values)
            if type(value) not in accepted
        ]
    encoded = values if kinds == {str} else [canonical_category(value) for value in values]
    allowed = set(feature.categories or ())
    if feature.nullable:
        allowed.add(MISSING_CATEGORY)
    unknown = set(encoded) - allowed
    if unknown:
        listed = ", ".join(echo(category) for category in (feature.categories or [])[:20])
        return _EMPTY, [
            Problem(row=index, field=feature.name, message=f"unknown category {echo(value)}; allowed: {listed}")
            for index, value in enumerate(encoded)
            if value in unknown
        ]
    return np.array(encoded, dtype=object).reshape(-1, 1), []


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


_EMPTY = np.empty((0, 1))
