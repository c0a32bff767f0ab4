"""The evaluate stage: score a fitted pipeline on held-out rows (and the champion, through the same metrics)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as sk_metrics

from sklambda.contract import Task
from sklambda.manifest import FeatureImportance, HeldOutEvaluation, Metric
from sklambda.serving import labels_to_json
from training.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, EvaluationSection, TrainingConfig

# Regression: (actual, predicted) pairs of at most this many held-out rows are stored for the residual plots.
RESIDUAL_SAMPLE_ROWS = 500
# Permutation importance predicts every held-out row once per column per repeat. On 60 columns with a 100-tree
# forest, 5 repeats on 1000 rows cost 5.9 s through scikit-learn's permutation_importance (a call per column and
# repeat) and 1.7 s batched (permutation_importances below). So that a report nicety cannot dominate a retrain,
# a wide table also gets fewer repeats (at least 1) and rows (at least 100): 2 repeats there, 0.8 s.
MAX_PERMUTATIONS = 150
MAX_PERMUTED_ROWS = 150_000
# Permuted copies go through the pipeline in calls of about this many rows (bounds the memory of one call).
IMPORTANCE_BATCH_ROWS = 50_000
MIN_IMPORTANCE_ROWS = 100
# A confusion matrix grows with the square of the classes: past this many it is not stored (the manifest stays
# small; the report says why the plot is missing).
MAX_CONFUSION_CLASSES = 100

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


def evaluate(pipeline: Any, x: pd.DataFrame, y: pd.Series, task: Task, predictions: Any = None) -> dict[str, float]:
    """Every metric of the task on (`x`, `y`); `predictions`, when given, are the pipeline's on `x`."""
    predictions = pipeline.predict(x) if predictions is None else predictions
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


def _metric_function(metric: Metric, classes: Any) -> tuple[Any, str]:
    """The primary metric as (function of truth and model output, the pipeline method that gives that output)."""
    functions = {
        "accuracy": (sk_metrics.accuracy_score, "predict", {}),
        "balanced_accuracy": (sk_metrics.balanced_accuracy_score, "predict", {}),
        "f1_macro": (sk_metrics.f1_score, "predict", {"average": "macro"}),
        # Every class named: a sample of rows may lack one.
        "log_loss": (sk_metrics.log_loss, "predict_proba", {"labels": classes}),
        "r2": (sk_metrics.r2_score, "predict", {}),
        "rmse": (sk_metrics.root_mean_squared_error, "predict", {}),
        "mae": (sk_metrics.mean_absolute_error, "predict", {}),
    }
    function, response, kwargs = functions[metric.name]
    return functools.partial(function, **kwargs), response


def permutation_importances(
    pipeline: Any, x: pd.DataFrame, y: pd.Series, metric: Metric, *, repeats: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column's permutation importance: scikit-learn's
    `permutation_importance`, same permutations, same scores (tests/unit/test_training.py compares them).

    Written here because scikit-learn calls the pipeline once per column and repeat, and a pipeline has a fixed
    cost per call (the sample's ColumnTransformer ~3 ms, a 100-tree forest more): that made importance a third of
    a retrain. Here every permuted copy goes through the pipeline in a few large calls instead."""
    # Classification is scored on label codes, as in evaluate(): the same scores, without sorting label strings
    # for every one of them (a predicted label is always one of the classifier's classes).
    classes = getattr(pipeline, "classes_", None)
    index = pd.Index(classes if classes is not None else [])
    by_code = classes is not None and index.is_unique and bool((index.get_indexer(y) >= 0).all())
    truth = index.get_indexer(y) if by_code else y
    function, response = _metric_function(metric, np.arange(len(index)) if by_code else classes)
    sign = 1.0 if metric.greater_is_better else -1.0

    def score(output: Any) -> float:
        if by_code and response == "predict":
            output = index.get_indexer(pd.Series(output))
            if metric.name == "accuracy":  # the share of equal codes, without accuracy_score's ~7 ms of checks
                return float(sign * np.mean(truth == output))
        return float(sign * function(truth, output))

    baseline = score(getattr(pipeline, response)(x))
    # scikit-learn's permutations: one seed drawn from random_state; each column starts from it and shuffles
    # the already shuffled column again at each repeat.
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    copies: list[pd.DataFrame] = []
    for name in x.columns:
        generator = np.random.RandomState(seed)
        order = np.arange(len(x))
        column = x[name]
        for _ in range(repeats):
            generator.shuffle(order)
            column = column.iloc[order].set_axis(x.index)
            copies.append(x.assign(**{name: column}))
    outputs: list[Any] = []
    per_call = max(1, IMPORTANCE_BATCH_ROWS // len(x))
    for start in range(0, len(copies), per_call):
        batch = copies[start : start + per_call]
        predicted = getattr(pipeline, response)(pd.concat(batch, ignore_index=True))
        outputs.extend(np.split(np.asarray(predicted), len(batch)))
    scores = np.array([score(output) for output in outputs]).reshape(x.shape[1], repeats)
    importances = baseline - scores
    return importances.mean(axis=1), importances.std(axis=1)


def held_out_evaluation(
    pipeline: Any,
    x: pd.DataFrame,
    y: pd.Series,
    task: Task,
    metric: Metric,
    settings: EvaluationSection,
    predictions: Any = None,
) -> HeldOutEvaluation:
    """What the model report plots, on the held-out rows (`x` encoded as the model takes it); `predictions`,
    when given, are the pipeline's on `x`."""
    predictions = pipeline.predict(x) if predictions is None else predictions
    summary = HeldOutEvaluation(rows=len(x))
    if task == "classification" and len(pipeline.classes_) <= MAX_CONFUSION_CLASSES:
        labels = pipeline.classes_
        truth, predicted, label_codes = _as_codes(y, predictions, labels)
        matrix = sk_metrics.confusion_matrix(truth, predicted, labels=label_codes)
        summary.labels = labels_to_json(np.asarray(labels))
        summary.confusion = matrix.astype(int).tolist()
    elif task == "regression":
        sample = np.random.default_rng(settings.random_state).permutation(len(x))[:RESIDUAL_SAMPLE_ROWS]
        sample.sort()
        summary.actual = [float(value) for value in np.asarray(y)[sample]]
        summary.predicted = [float(value) for value in np.asarray(predictions, dtype=np.float64)[sample]]
    if settings.importance_repeats and len(x) >= 2:
        columns = max(1, x.shape[1])
        repeats = max(1, min(settings.importance_repeats, MAX_PERMUTATIONS // columns))
        wanted = min(settings.importance_rows, max(MIN_IMPORTANCE_ROWS, MAX_PERMUTED_ROWS // (repeats * columns)))
        rows = x.sample(n=min(len(x), wanted), random_state=settings.random_state)
        means, stds = permutation_importances(
            pipeline, rows, y.loc[rows.index], metric, repeats=repeats, random_state=settings.random_state
        )
        summary.importance_metric = metric.name
        summary.importance_repeats = repeats
        summary.importance_rows = len(rows)
        summary.importance = [
            FeatureImportance(feature=str(name), mean=round(float(mean), 6), std=round(float(std), 6))
            for name, mean, std in zip(x.columns, means, stds, strict=True)
        ]
    return summary


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
