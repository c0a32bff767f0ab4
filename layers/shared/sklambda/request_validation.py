"""The serving side of the data contract: check a request's rows against it and turn them into the model's inputs,
with numpy only.

Strict by design (sklambda.contract says so): no coercion, no NaN/Infinity, known categories, nulls only where
training had them, unknown fields per `allow_unknown_fields`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from operator import itemgetter
from typing import Any, NoReturn

import numpy as np

from sklambda.contract import (
    MAX_PROBLEMS_REPORTED,
    MISSING_CATEGORY,
    ContractViolation,
    DataContract,
    Feature,
    Problem,
    canonical_category,
    echo,
)


class Columns(Mapping[str, np.ndarray]):
    """Validated rows as the model's inputs: every numeric feature in one block of the runtime's number type
    (rows x numeric features) and every categorical feature in one block of category strings (rows x categorical
    features), each in contract order. A runtime passes the blocks as they are (two arrays whatever the width);
    `columns[name]` is one feature's (rows, 1) column, a view into its block."""

    __slots__ = ("_where", "categorical", "numeric")

    def __init__(
        self, numeric: np.ndarray | None, categorical: np.ndarray | None, where: dict[str, tuple[bool, int]]
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        # feature name -> (numeric?, its position in that block)
        self._where = where

    def __getitem__(self, name: str) -> np.ndarray:
        numeric, position = self._where[name]
        block = self.numeric if numeric else self.categorical
        if block is None:
            raise KeyError(name)
        return block[:, position : position + 1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


# The model computes in float32 (largest value 3.4e38). Inputs are bounded well below that so that what
# pipelines compute from them (products, squared distances: 1e18 squared is 1e36) stays finite too.
MAX_MAGNITUDE = 1e18
_NONE = type(None)
_NUMBER_TYPES = frozenset({int, float})
_NUMBER_OR_NULL = _NUMBER_TYPES | {_NONE}
_STRINGS = frozenset({str})
_ACCEPTED_TYPES: dict[str, frozenset[type]] = {
    "string": _STRINGS,
    "number": _NUMBER_TYPES,
    "boolean": frozenset({bool}),
}
_EXPECTED = {"string": "a string", "number": "a number", "boolean": "true or false"}
_NOT_A_LIST = "expected a non-empty list of objects (one per row)"
_NOT_FINITE = "must be a finite number between -1e18 and 1e18"
_MISSING_FIELD = "missing field"
_FEW_ROWS = 16

# A problem before it is written out: (row, position of the field in the contract, field, message, value).
# A field or message that quotes the client's value holds _VALUE, replaced by a bounded echo of the value only
# for the problems that are reported (a request can have thousands).
_VALUE = "\0"
_Found = tuple[int | None, int, str | None, str, Any]
_ABSENT = object()  # a field the row does not have (see RequestValidator.records)


class RequestValidator:
    """A contract compiled for checking requests, built once per served version.

    Each request costs a few C-level passes per column (`set(map(type, column))`, one numpy conversion for all
    numeric features, one subset test for categories), not a Python loop per value; values are looked at one by
    one only in a column that failed, to name the rows. Same rules as the contract: no coercion, no NaN/Infinity,
    known categories, nulls only where training had them, unknown fields per `allow_unknown_fields`.
    """

    def __init__(
        self,
        contract: DataContract,
        *,
        allow_unknown_fields: bool | None = None,
        number_type: type[np.floating[Any]] = np.float32,
    ) -> None:
        self.contract = contract
        # The numbers' type in the numeric block: the serving runtime's input type (runtimes.NUMBER_TYPES).
        self._number_type = number_type
        # A per-deployment setting (ALLOW_UNKNOWN_FIELDS) overrides the contract's own default.
        self.allow_unknown_fields = (
            contract.allow_unknown_fields if allow_unknown_fields is None else allow_unknown_fields
        )
        self.names = contract.names
        self._expected = frozenset(self.names)
        self._order = {name: index for index, name in enumerate(self.names)}
        self._getters = [(name, itemgetter(name)) for name in self.names]
        self._row_getter = itemgetter(*self.names)
        self._numeric = [feature for feature in contract.features if feature.kind == "numeric"]
        self._categorical = [feature for feature in contract.features if feature.kind == "categorical"]
        self._numeric_names = [feature.name for feature in self._numeric]
        self._categorical_names = [feature.name for feature in self._categorical]
        self._where = {name: (True, position) for position, name in enumerate(self._numeric_names)} | {
            name: (False, position) for position, name in enumerate(self._categorical_names)
        }
        self._allowed = {
            feature.name: frozenset([*(feature.categories or ()), *([MISSING_CATEGORY] if feature.nullable else [])])
            for feature in self._categorical
        }
        # The fast path's getters (a tuple of the kind's values per row; None where a kind has fewer than two
        # features, which the general path handles) and the category sets it checks string values against in one
        # C-level pass per feature (empty for categories sent as numbers or booleans: those take the general path).
        self._numeric_row = itemgetter(*self._numeric_names) if len(self._numeric_names) > 1 else None
        self._categorical_row = itemgetter(*self._categorical_names) if len(self._categorical_names) > 1 else None
        self._string_categories = [
            self._allowed[feature.name] if feature.value_type == "string" else frozenset()
            for feature in self._categorical
        ]
        # The single-row path's flags: which features take null.
        self._numeric_nullable = [feature.nullable for feature in self._numeric]
        self._categorical_nullable = [feature.nullable for feature in self._categorical]

    # ------------------------------------------------------------ request shapes

    def records(self, rows: Any) -> Columns:
        """`[{feature: value, ...}, ...]` (the `instances` and `dataframe_records` formats)."""
        if type(rows) is not list or not rows:
            raise ContractViolation([Problem(message=_NOT_A_LIST)])
        valid = self._valid_row(rows[0]) if len(rows) == 1 else self._valid_records(rows)
        if valid is not None:
            return valid
        values = self._record_values(rows)
        if values is not None:
            return self._columns(values)
        if set(map(type, rows)) != {dict}:
            self._raise(
                (index, -1, None, "expected an object of feature: value", None)
                for index, row in enumerate(rows)
                if type(row) is not dict
            )
        found = self._key_problems(rows)
        # The values that are there are checked too, so one reply names every problem: a missing field stands in
        # as a marker whose own problems are dropped.
        value_problems: list[_Found] = []
        self._converted({name: [row.get(name, _ABSENT) for row in rows] for name in self.names}, value_problems)
        found.extend(problem for problem in value_problems if problem[4] is not _ABSENT)
        self._raise(found)

    def _valid_records(self, rows: list[Any]) -> Columns | None:
        """The blocks straight from the rows, when every row is an object with exactly the contract's fields (or
        more, where allowed), every numeric value an int or float within bounds and every categorical value a known
        category string; else None, and the general path checks (and names the problems). Per row, one C-level
        lookup of each kind's fields; then one pass for the types, one numpy conversion and one subset test per
        categorical feature: no Python loop per value or per column (a 30-column row costs as much as a 7-column
        one, nearly)."""
        if self._numeric_row is None or (self._categorical_row is None and self._categorical):
            return None
        try:
            sizes = set(map(len, rows))
            if not (sizes == {len(self.names)} or (self.allow_unknown_fields and min(sizes) >= len(self.names))):
                return None
            numbers = list(map(self._numeric_row, rows))
            strings = list(map(self._categorical_row, rows)) if self._categorical_row is not None else None
        except (KeyError, TypeError):
            return None
        if not set(map(type, chain.from_iterable(numbers))) <= _NUMBER_TYPES:
            return None
        try:
            wide = np.array(numbers, dtype=np.float64)
        except OverflowError:
            return None
        if not (wide.max() <= MAX_MAGNITUDE and wide.min() >= -MAX_MAGNITUDE):
            return None
        categorical = None
        if strings is not None:
            try:
                categorical = np.array(strings, dtype=object)
                # The block's columns as lists (numpy transposes faster than zip(*rows)); a value that is a list
                # gives a block of another shape, or none (ValueError): the general path names it.
                if categorical.shape != (len(rows), len(self._categorical)):
                    return None
                by_feature = zip(self._string_categories, categorical.T.tolist(), strict=True)
                if not all(allowed.issuperset(column) for allowed, column in by_feature):
                    return None
            except (TypeError, ValueError):  # an unhashable value, or lists of different lengths
                return None
        return Columns(wide.astype(self._number_type), categorical, self._where)

    def _valid_row(self, row: Any) -> Columns | None:
        """The blocks of a single row (the usual online request), checked value by value in plain Python: for a
        few dozen values that costs a fraction of the bulk path's fixed numpy and set overheads. It accepts what
        the other paths accept and gives the same blocks (numbers within bounds, never booleans; known category
        strings; nulls where the feature takes them); for anything else, None, and the general path names the
        problems."""
        if type(row) is not dict:
            return None
        width = len(self.names)
        if len(row) != width and not (self.allow_unknown_fields and len(row) > width):
            return None
        try:  # as many keys as the contract, and every one of its features found: exactly its fields
            numbers = [row[name] for name in self._numeric_names]
            strings = [row[name] for name in self._categorical_names]
        except KeyError:
            return None
        for value, nullable in zip(numbers, self._numeric_nullable, strict=True):
            kind = type(value)  # exact types: bool is a subclass of int, and no number here
            if kind is float or kind is int:
                if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # NaN fails this too
                    return None
            elif value is not None or not nullable:
                return None
        for index, value in enumerate(strings):
            allowed = self._string_categories[index]  # empty for categories sent as numbers or booleans
            if type(value) is not str or value not in allowed:
                if value is None and allowed and self._categorical_nullable[index]:
                    strings[index] = MISSING_CATEGORY  # as the general path encodes a null
                else:
                    return None
        # numpy converts each number to float64 first (an int rounds as float(int) does), then to the runtime's
        # type: the values of the bulk path's float64 block cast to float32, without the intermediate array.
        numeric = np.array([numbers], dtype=self._number_type) if numbers else None
        categorical = np.array([strings], dtype=object) if strings else None
        return Columns(numeric, categorical, self._where)

    def _record_values(self, rows: list[Any]) -> dict[str, list[Any]] | None:
        """One list of values per feature, or None when some row is not an object of exactly the contract's
        fields (or a superset, where unknown fields are allowed): then the slow path names the problems.

        No per-row set comparison: when every row has as many keys as the contract and each feature is found
        in each row, the keys are the contract's. A row that is not an object fails `len` or the lookup."""
        width = len(self.names)
        try:
            sizes = set(map(len, rows))
            if sizes == {width} or (self.allow_unknown_fields and min(sizes) >= width):
                if len(rows) <= _FEW_ROWS and width > 1:
                    # One lookup of every feature per row, then transposed: ~3x faster for a single row, slower
                    # than a pass per feature over many rows.
                    transposed = zip(*map(self._row_getter, rows), strict=True)
                    return dict(zip(self.names, map(list, transposed), strict=True))
                return {name: list(map(getter, rows)) for name, getter in self._getters}
        except (KeyError, TypeError):
            pass
        return None

    def split(self, columns: Any, data: Any) -> Columns:
        """MLflow's `dataframe_split`: `{"columns": [...], "data": [[...], ...]}`, columns in any order."""
        if type(columns) is not list or not set(map(type, columns)) <= _STRINGS:
            raise ContractViolation([Problem(field="columns", message="expected a list of column names")])
        if type(data) is not list or not data:
            raise ContractViolation([Problem(field="data", message="expected a non-empty list of rows (lists)")])
        width = len(columns)
        found: list[_Found] = []
        if set(map(type, data)) != {list} or set(map(len, data)) != {width}:
            found.extend(
                (index, -1, None, f"expected a list of {width} values", None)
                for index, row in enumerate(data)
                if type(row) is not list or len(row) != width
            )
        present = set(columns)
        found.extend(
            (None, order, name, "missing column", None) for name, order in self._order.items() if name not in present
        )
        if not self.allow_unknown_fields:
            found.extend((None, -1, _VALUE, "unknown column", name) for name in columns if name not in self._expected)
        if len(present) != width:
            found.append((None, -1, "columns", "duplicate column names", None))
        if found:
            self._raise(found)
        position = {name: index for index, name in enumerate(columns)}
        return self._columns({name: list(map(itemgetter(position[name]), data)) for name in self.names})

    # ------------------------------------------------------------ values

    def _columns(self, values: dict[str, list[Any]]) -> Columns:
        """The model's inputs (a float32 block for numbers, an object block for categories); raises
        ContractViolation with every problem found."""
        found: list[_Found] = []
        columns = self._converted(values, found)
        if found:
            self._raise(found)
        return columns

    def _converted(self, values: dict[str, list[Any]], found: list[_Found]) -> Columns:
        """The blocks of the valid values; the problems of the others are added to `found`."""
        numeric = self._numeric_block(values, found) if self._numeric else None
        categorical = self._categorical_block(values, found) if self._categorical else None
        return Columns(numeric, categorical, self._where)

    def _numeric_block(self, values: dict[str, list[Any]], found: list[_Found]) -> np.ndarray | None:
        block = [values[feature.name] for feature in self._numeric]
        kinds = set(map(type, chain.from_iterable(block)))
        if not kinds <= _NUMBER_TYPES:
            # Something other than a number somewhere: find it, column by column. Nulls are fine where allowed.
            problems = len(found)
            for feature, column in zip(self._numeric, block, strict=True):
                allowed = _NUMBER_OR_NULL if feature.nullable else _NUMBER_TYPES
                if not set(map(type, column)) <= allowed:
                    found.extend(
                        self._numeric_problem(feature, index, value)
                        for index, value in enumerate(column)
                        if type(value) not in allowed
                    )
            if len(found) > problems:
                return None
        try:
            if _NONE in kinds:
                wide = np.array(block, dtype=np.float64)  # (features, rows); null becomes NaN, which the imputer fills
            else:  # ints and floats only (checked above): fromiter reads them ~1.5x faster than np.array
                count = len(block) * len(block[0])
                wide = np.fromiter(chain.from_iterable(block), dtype=np.float64, count=count).reshape(len(block), -1)
        except OverflowError:  # an integer beyond float64 (orjson reads those as floats; Python callers may not)
            wide = np.array([[_float_or_inf(value) for value in column] for column in block], dtype=np.float64)
        # One test for infinities, NaN and numbers beyond the bound, before the cast to float32 (the model's input
        # type: 1e300 is finite in float64, not there). NaN fails it too, and is fine where it was null.
        if not (wide.max() <= MAX_MAGNITUDE and wide.min() >= -MAX_MAGNITUDE):
            bad = ~(np.abs(wide) <= MAX_MAGNITUDE)
            problems = len(found)
            for index, feature in enumerate(self._numeric):
                rows = np.flatnonzero(bad[index])
                if _NONE in kinds and rows.size:
                    column = block[index]
                    rows = rows[[column[row] is not None for row in rows]]
                found.extend((int(row), self._order[feature.name], feature.name, _NOT_FINITE, None) for row in rows)
            if len(found) > problems:
                return None
        # (rows, features), row-major: the model's numeric input as it is.
        return np.ascontiguousarray(wide.T, dtype=self._number_type)

    def _numeric_problem(self, feature: Feature, index: int, value: Any) -> _Found:
        order = self._order[feature.name]
        if value is None:
            return (index, order, feature.name, "must not be null", None)
        return (index, order, feature.name, f"expected a number, got {_json_type(value)} {_VALUE}", value)

    def _categorical_block(self, values: dict[str, list[Any]], found: list[_Found]) -> np.ndarray | None:
        block: list[list[Any]] = []
        for feature in self._categorical:
            column = values[feature.name]
            try:
                # Known category strings only (the allowed set holds nothing else): valid, as they are.
                if feature.value_type == "string" and self._allowed[feature.name].issuperset(column):
                    block.append(column)
                    continue
            except TypeError:  # an unhashable value (a list or an object): reported below
                pass
            encoded = self._encoded_categories(feature, column, found)
            if encoded is not None:
                block.append(encoded)
        if len(block) < len(self._categorical):
            return None
        # (rows, features), row-major, built from the (features, rows) lists in one pass.
        rows = np.empty((len(block[0]), len(block)), dtype=object)
        rows.T[...] = block
        return rows

    def _encoded_categories(self, feature: Feature, column: list[Any], found: list[_Found]) -> list[str] | None:
        """The column as the model's category strings (nulls, numbers, booleans encoded as in training), or
        None with its problems added to `found`."""
        order = self._order[feature.name]
        accepted = _ACCEPTED_TYPES[feature.value_type] | ({_NONE} if feature.nullable else set())
        if not set(map(type, column)) <= accepted:
            expected = _EXPECTED[feature.value_type]
            found.extend(
                (index, order, feature.name, "must not be null", None)
                if value is None
                else (index, order, feature.name, f"expected {expected}, got {_json_type(value)} {_VALUE}", value)
                for index, value in enumerate(column)
                if type(value) not in accepted
            )
            return None
        if feature.value_type == "string":  # strings and nulls: only the nulls change
            encoded = [MISSING_CATEGORY if value is None else value for value in column]
        else:
            encoded = [canonical_category(value) for value in column]
        allowed = self._allowed[feature.name]
        if not allowed.issuperset(encoded):
            listed = ", ".join(echo(category) for category in (feature.categories or [])[:20])
            found.extend(
                (index, order, feature.name, f"unknown category {_VALUE}; allowed: {listed}", value)
                for index, value in enumerate(encoded)
                if value not in allowed
            )
            return None
        return encoded

    def _key_problems(self, rows: list[dict[str, Any]]) -> list[_Found]:
        found: list[_Found] = []
        for index, row in enumerate(rows):
            keys = row.keys()
            found.extend(
                (index, order, name, _MISSING_FIELD, None) for name, order in self._order.items() if name not in keys
            )
            if not self.allow_unknown_fields:
                found.extend((index, -1, _VALUE, "unknown field", key) for key in keys if key not in self._expected)
        return found

    @staticmethod
    def _raise(found: Iterable[_Found]) -> NoReturn:
        """Raise every problem found, sorted by row and field; only the reported ones are written out."""
        ordered = sorted(found, key=lambda item: (-1 if item[0] is None else item[0], item[1]))
        problems = [
            Problem(
                row=row,
                field=echo(value) if field == _VALUE else field,
                message=message.replace(_VALUE, echo(value)) if _VALUE in message else message,
            )
            for row, _, field, message, value in ordered[:MAX_PROBLEMS_REPORTED]
        ]
        raise ContractViolation(problems, total=len(ordered))


def columns_from_records(rows: Any, contract: DataContract) -> Columns:
    """Validate `[{feature: value, ...}, ...]` and return one model input column per feature."""
    return RequestValidator(contract).records(rows)


def columns_from_split(columns: Any, data: Any, contract: DataContract) -> Columns:
    """Validate MLflow's `dataframe_split` (`{"columns": [...], "data": [[...], ...]}`)."""
    return RequestValidator(contract).split(columns, data)


def _float_or_inf(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except OverflowError:
        return math.inf


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )
