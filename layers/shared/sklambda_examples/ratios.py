"""RatioFeatures: appends numerator / denominator for named column pairs (e.g. bill length per bill depth).

Imported by the scikit-learn serving runtime when it unpickles a pipeline that uses it: numpy and scikit-learn
only (see the package docstring for the rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, missing (NaN) where the denominator is 0 or missing: an imputer after this step
    fills it, as it fills any missing number. The ONNX converter computes the same."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


class RatioFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Passes its input columns through and appends one ratio column per (numerator, denominator) pair of
    column names. Fit it on a DataFrame (a ColumnTransformer branch passes one): the names are resolved to
    positions at fit, so that the ONNX graph, which sees one float matrix, computes the same columns."""

    def __init__(self, pairs: Sequence[tuple[str, str]] = ()) -> None:
        self.pairs = pairs

    def fit(self, X: Any, y: Any = None) -> Self:
        validate_data(self, X, reset=True, ensure_all_finite="allow-nan", dtype=np.float64)
        names = [str(name) for name in getattr(self, "feature_names_in_", [])]
        if not names:
            raise ValueError("RatioFeatures needs named columns: fit it on a DataFrame")
        unknown = sorted({name for pair in self.pairs for name in pair} - set(names))
        if unknown:
            raise ValueError(f"RatioFeatures: columns {unknown} are not among its input columns {names}")
        self.pair_indices_ = [
            (names.index(numerator), names.index(denominator)) for numerator, denominator in self.pairs
        ]
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "pair_indices_")
        values = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        ratios = [ratio(values[:, numerator], values[:, denominator]) for numerator, denominator in self.pair_indices_]
        return np.column_stack([values, *ratios]) if ratios else values

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = list(_check_feature_names_in(self, input_features))
        return np.asarray([*names, *(f"{a}_per_{b}" for a, b in self.pairs)], dtype=object)
