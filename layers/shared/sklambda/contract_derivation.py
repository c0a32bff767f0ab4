"""The training side of the data contract: derive it from a raw training table, encode a table as the model takes
it, and write rows as an API client sends them. Takes pandas objects but never imports pandas itself (the
serving layer does not ship it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sklambda.contract import (
    MISSING_CATEGORY,
    DataContract,
    Feature,
    Label,
    Problem,
    Task,
    ValueType,
    canonical_category,
)
from sklambda.request_validation import Columns

if TYPE_CHECKING:
    import pandas as pd

# Values that compare equal across these kinds (True == 1 == 1.0) but encode differently ("true" vs "1").
_BOOLEANS = (bool, np.bool_)
_NUMBERS = (int, float, np.integer, np.floating)
# pandas' inferred kinds (one pass in C, where a set of every value's type is a Python call per row) that hold
# one kind of value only, booleans never mixed with numbers: "integer" excludes booleans, "boolean" numbers.
_UNMIXED = frozenset({"string", "empty", "boolean", "integer", "floating"})
# The value type those kinds (of present values) give; any other kind is decided value by value.
_VALUE_TYPES: dict[str, ValueType] = {
    "string": "string",
    "empty": "string",
    "boolean": "boolean",
    "integer": "number",
    "floating": "number",
    "mixed-integer-float": "number",
}


def _is_missing(value: Any) -> bool:
    from pandas import isna

    return bool(isna(value))


def _infer_dtype(column: pd.Series) -> str:
    from pandas.api.types import infer_dtype  # the caller has pandas: this module never imports it at the top

    return str(infer_dtype(column, skipna=True))


def canonical_categories(column: pd.Series) -> pd.Series:
    """canonical_category of every value of a column (missing values: MISSING_CATEGORY).

    Computed once per distinct value (a million rows hold a handful of categories: value by value, 100 000 rows
    took ~0.15 s a column), except in an object column mixing booleans with numbers, where distinct values are
    not distinct categories: there, value by value."""
    if column.dtype == object and _infer_dtype(column) not in _UNMIXED:
        kinds = set(map(type, column.tolist()))
        if any(issubclass(kind, _BOOLEANS) for kind in kinds) and any(
            issubclass(kind, _NUMBERS) and not issubclass(kind, _BOOLEANS) for kind in kinds
        ):
            return column.map(canonical_category).astype(object)
    codes, distinct = column.factorize()  # missing values get code -1: the last entry of the table
    table = np.array([*map(canonical_category, distinct.tolist()), MISSING_CATEGORY], dtype=object)
    return type(column)(table[codes], index=column.index, name=column.name, dtype=object)


def category_counts(column: pd.Series) -> pd.Series:
    """How many rows hold each category (canonical_category; MISSING_CATEGORY for missing values), counted once per
    distinct value: a column of 100 000 rows and a handful of values is hashed once, not encoded row by row.
    An object column mixing booleans with numbers is encoded value by value (True and 1 are one key to pandas,
    two categories here), as canonical_categories does."""
    if column.dtype == object and _infer_dtype(column) not in _UNMIXED:
        return canonical_categories(column).value_counts()
    counts = column.value_counts(dropna=False)
    keys = [MISSING_CATEGORY if _is_missing(value) else canonical_category(value) for value in counts.index.tolist()]
    return counts.groupby(keys, sort=False).sum()


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
                categories=sorted(set(canonical_categories(present).tolist())),
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
    inferred = _infer_dtype(values)
    if inferred in _VALUE_TYPES:
        return _VALUE_TYPES[inferred]
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
            encoded[feature.name] = canonical_categories(encoded[feature.name]).astype(object)
    return encoded


def frame_problems(frame: pd.DataFrame, contract: DataContract) -> list[Problem]:
    """Schema problems of a training table against a contract (missing columns, wrong types)."""
    problems = [Problem(field=name, message="column is missing") for name in contract.names if name not in frame]
    for feature in contract.features:
        if feature.name not in frame:
            continue
        column = frame[feature.name]  # its dtype: dropping the missing values first would copy it, dtype unchanged
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


def model_inputs(
    encoded: pd.DataFrame, contract: DataContract, number_type: type[np.floating[Any]] = np.float32
) -> Columns:
    """An encoded table (`encode_frame`) as the serving runtimes' inputs: one block of the numeric features (in
    the runtime's `number_type`) and one block of the categorical ones, in contract order (what
    `RequestValidator` builds from requests), without validating each value."""
    numeric = [feature.name for feature in contract.features if feature.kind == "numeric"]
    categorical = [feature.name for feature in contract.features if feature.kind == "categorical"]
    where = {name: (True, position) for position, name in enumerate(numeric)} | {
        name: (False, position) for position, name in enumerate(categorical)
    }
    return Columns(
        np.ascontiguousarray(encoded.loc[:, numeric].to_numpy(number_type)) if numeric else None,
        np.ascontiguousarray(encoded.loc[:, categorical].to_numpy(object)) if categorical else None,
        where,
    )
