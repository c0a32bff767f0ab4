"""[pipeline] factories: functions that return an unfitted scikit-learn Pipeline with its own preprocessing."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from sklambda_examples.ratios import RatioFeatures


def forest_with_ratios(
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    task: str,
    ratios: Sequence[Sequence[str]] = (),
    n_estimators: int = 100,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    random_state: int = 0,
) -> Pipeline:
    """Numbers: the ratio columns appended (RatioFeatures), then median imputation, no scaling (a forest splits
    on thresholds). Categories: one-hot, unknown ones ignored. Then a random forest for the task.

    `numeric`, `categorical`, `task` and `random_state` come from the training (the features it selected, the
    task it inferred, the configured seed); the rest from `[pipeline.params]`."""
    pairs = [(str(pair[0]), str(pair[1])) for pair in ratios]
    not_numeric = sorted({name for pair in pairs for name in pair} - set(numeric))
    if not_numeric:
        raise TypeError(f"ratios name columns that are not numeric features: {not_numeric}")
    branches: list[tuple[str, object, list[str]]] = []
    if numeric:
        numbers = Pipeline([("ratios", RatioFeatures(pairs)), ("impute", SimpleImputer(strategy="median"))])
        branches.append(("numeric", numbers, list(numeric)))
    if categorical:
        branches.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(categorical)))
    forest = RandomForestClassifier if task == "classification" else RandomForestRegressor
    model = forest(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        random_state=random_state,
        # One thread: a single-row prediction is 5x slower with a thread pool (sklearn serving runtime).
        n_jobs=1,
    )
    features = ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("features", features), ("model", model)])
