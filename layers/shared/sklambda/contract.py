"""The data contract: one definition of what a model's input looks like, used on both sides.

Training derives it from the cleaned training table (`sklambda.contract_derivation`) and stores it in the version's
manifest; serving checks every request against it and turns the rows into model inputs
(`sklambda.request_validation`) with the same conversions training used (`canonical_category`,
`MISSING_CATEGORY`, both here).

Strict by design: no string→number or bool→number coercion, no NaN/Infinity (nor numbers beyond ±1e18),
categories must have been seen in training, missing fields are reported, unknown fields are rejected unless the
contract allows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sklambda.errors import SklambdaError

# Missing categorical values become this category, in training and at serving alike, so that the
# one-hot encoder (and its ONNX conversion) sees "missing" as an ordinary category.
MISSING_CATEGORY = "__missing__"
MAX_PROBLEMS_REPORTED = 50
MAX_ECHO_CHARS = 40

FeatureKind = Literal["numeric", "categorical"]
ValueType = Literal["number", "string", "boolean"]
Task = Literal["classification", "regression"]
Label = str | int | float | bool


# Plain dataclasses, not pydantic models: serving reads them without importing pydantic (sklambda.records); the
# manifest (pydantic) validates them by the same annotations when it holds them.
@dataclass(kw_only=True)
class Feature:
    """One input column. Missing values (null in a request, a gap in a training table) are accepted only where
    `nullable`, and reach the model as training saw them: a missing category as the category MISSING_CATEGORY
    ("__missing__"), a missing number as NaN for the pipeline's imputer. A user's own `pipeline.predict(frame)`
    on raw rows passes NaN for a missing category instead and can answer differently: `encode_frame` (or
    `python -m training predict`) gives the model's view of the rows."""

    name: str
    kind: FeatureKind
    # The JSON type a client sends for this feature.
    value_type: ValueType
    nullable: bool
    categories: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(kw_only=True)
class DataContract:
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


@dataclass(kw_only=True)
class Problem:
    row: int | None = None
    field: str | None = None
    message: str

    def as_json(self) -> dict[str, Any]:
        """The problem as an error reply lists it: the row and field only where they apply."""
        reply: dict[str, Any] = {} if self.row is None else {"row": self.row}
        if self.field is not None:
            reply["field"] = self.field
        reply["message"] = self.message
        return reply


class ContractViolation(SklambdaError):
    """The input does not satisfy the contract. Carries every problem found (bounded), by row and field."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.problems = problems[:MAX_PROBLEMS_REPORTED]
        self.total = total if total is not None else len(problems)
        first = self.problems[0] if self.problems else Problem(message="invalid input")
        where = " ".join(part for part in (_row_label(first.row), first.field and f"field {first.field!r}") if part)
        others = self.total - 1
        more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
        super().__init__(f"{where + ': ' if where else ''}{first.message}{more}")

    @classmethod
    def single(cls, message: str, *, row: int | None = None, field: str | None = None) -> ContractViolation:
        return cls([Problem(row=row, field=field, message=message)])


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
