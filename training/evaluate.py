"""Stage 5: score a fitted pipeline on held-out rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as sk_metrics

from sklambda.contract import Task
from sklambda.manifest import Metric
from training.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, TrainingConfig

GREATER_IS_BETTER = {
    "accuracy": True,
    "balanced_accuracy": True,
    "f1_macro": True,
    "log_loss": False,
    "r2": True,
    "rmse": False,
    "mae": False,
}


def primary_metric(config: TrainingConfig, task: Task) -> Metric:
    name: str = config.evaluation.metric
    if name == "auto":
        name = "accuracy" if task == "classification" else "r2"
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if name not in allowed:
        from sklambda.errors import ConfigError

        raise ConfigError(f"metric {name!r} does not apply to {task}; choose one of {', '.join(allowed)}")
    return Metric(name=name, greater_is_better=GREATER_IS_BETTER[name])


def evaluate(pipeline: Any, x: pd.DataFrame, y: pd.Series, task: Task) -> dict[str, float]:
    predictions = pipeline.predict(x)
    if task == "classification":
        labels = pipeline.classes_
        truth, predicted, classes = _as_codes(y, predictions, labels)
        scores = {
            "accuracy": sk_metrics.accuracy_score(truth, predicted),
            "balanced_accuracy": sk_metrics.balanced_accuracy_score(truth, predicted),
            "f1_macro": sk_metrics.f1_score(truth, predicted, average="macro"),
        }
        if hasattr(pipeline, "predict_proba"):
            scores["log_loss"] = sk_metrics.log_loss(truth, pipeline.predict_proba(x), labels=classes)
    else:
        scores = {
            "r2": sk_metrics.r2_score(y, predictions),
            "rmse": math.sqrt(sk_metrics.mean_squared_error(y, predictions)),
            "mae": sk_metrics.mean_absolute_error(y, predictions),
        }
    return {name: round(float(value), 6) for name, value in scores.items() if np.isfinite(value)}


def _as_codes(truth: pd.Series, predicted: Any, classes: Any) -> tuple[Any, Any, Any]:
    """The labels as their positions in `classes` (the classifier's sorted classes, the order of predict_proba's
    columns): the same scores, since these metrics depend on which rows agree, not on what the labels are, but
    scikit-learn then sorts integers where it sorted label strings again for every metric (~0.3 s per evaluation
    of 100 000 string labels). Labels outside `classes` (a class the model never saw) keep their own values."""
    categories = pd.Index(classes)
    if not categories.is_unique:
        return truth, predicted, classes
    truth_codes = categories.get_indexer(pd.Series(truth))
    predicted_codes = categories.get_indexer(pd.Series(predicted))
    if (truth_codes < 0).any() or (predicted_codes < 0).any():
        return truth, predicted, classes
    return truth_codes, predicted_codes, np.arange(len(categories))
