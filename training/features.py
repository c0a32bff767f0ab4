"""The prepare stage's choices: decide the task and the features, and build the preprocessing that turns them
into numbers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklambda.contract import Task
from sklambda.errors import DataError
from training.config import TrainingConfig

logger = logging.getLogger(__name__)

# An integer target with at most this many distinct values is taken for classes under task = "auto".
MAX_AUTO_CLASSES = 20


@dataclass(frozen=True)
class FeatureSet:
    numeric: list[str]
    categorical: list[str]
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def infer_task(target: pd.Series, configured: str) -> Task:
    if configured in ("classification", "regression"):
        return configured  # type: ignore[return-value]
    if pd.api.types.is_bool_dtype(target) or not pd.api.types.is_numeric_dtype(target):
        return "classification"
    values = target.dropna()
    integral = pd.api.types.is_integer_dtype(values) or bool((values == values.round()).all())
    return "classification" if integral and values.nunique() <= MAX_AUTO_CLASSES else "regression"


def select_features(frame: pd.DataFrame, config: TrainingConfig) -> FeatureSet:
    target = config.model.target
    settings = config.features
    candidates = [str(name) for name in frame.columns if name != target and name not in settings.exclude]
    missing = [
        name for name in [*_listed(settings.numeric), *_listed(settings.categorical)] if name not in frame.columns
    ]
    if missing:
        raise DataError(f"configured feature(s) not in the data: {', '.join(missing)}")
    left_out: dict[str, str] = {}
    if isinstance(settings.numeric, list):
        numeric = list(settings.numeric)
    else:
        numeric = [
            name
            for name in candidates
            if pd.api.types.is_numeric_dtype(frame[name])
            and not pd.api.types.is_bool_dtype(frame[name])
            and name not in _listed(settings.categorical)
        ]
    if isinstance(settings.categorical, list):
        categorical = list(settings.categorical)
    else:
        categorical = []
        for name in candidates:
            if name in numeric:
                continue
            distinct = frame[name].nunique(dropna=True)
            if distinct > settings.max_categories:
                left_out[name] = f"{distinct} distinct values > max_categories {settings.max_categories}"
            elif distinct == 0:
                left_out[name] = "no values"
            else:
                categorical.append(name)
    for name, reason in left_out.items():
        logger.warning("feature %r left out: %s", name, reason)
    non_numeric = [name for name in numeric if not pd.api.types.is_numeric_dtype(frame[name])]
    if non_numeric:
        raise DataError(f"numeric feature(s) hold non-numeric values: {', '.join(non_numeric)}")
    if not numeric and not categorical:
        raise DataError("no usable feature columns: list them in the [features] section of the configuration")
    return FeatureSet(numeric=numeric, categorical=categorical, left_out=left_out)


def _listed(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else []


def preprocessing(features: FeatureSet, *, scale: bool = True) -> ColumnTransformer:
    """Median imputation (+ scaling unless `scale` is off) for numbers; one-hot for categories (missing is its own
    category, see sklambda.contract.MISSING_CATEGORY). Every step converts to ONNX."""
    transformers: list[tuple[str, object, list[str]]] = []
    if features.numeric:
        steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy="median"))]
        if scale:
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), features.numeric))
    if features.categorical:
        transformers.append(
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), features.categorical)
        )
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
