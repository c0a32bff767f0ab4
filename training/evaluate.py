"""The evaluate stage: score a fitted pipeline on held-out rows (and the champion, through the same metrics)."""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as sk_metrics

from sklambda.contract import DataContract, Task
from sklambda.contract_derivation import encode_frame, model_inputs
from sklambda.manifest import (
    Agreement,
    FeatureImportance,
    GoldenSample,
    HeldOutEvaluation,
    Manifest,
    Metric,
    RuntimeParity,
    RuntimeSupport,
)
from sklambda.request_validation import RequestValidator
from sklambda.runtimes import NUMBER_TYPES, Prediction, load_predictor, runtime_available
from sklambda.serving import PROBABILITY_TOLERANCE, REGRESSION_ATOL, REGRESSION_RTOL, is_tie, labels_to_json
from training.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, EvaluationSection, TrainingConfig
from training.model import final_estimator

logger = logging.getLogger(__name__)

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
    "roc_auc": True,
    "average_precision": True,
    "r2": True,
    "rmse": False,
    "mae": False,
    "mape": False,
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


def evaluate(
    pipeline: Any, x: pd.DataFrame, y: pd.Series, task: Task, predictions: Any = None, *, only: str | None = None
) -> dict[str, float]:
    """Every metric of the task on (`x`, `y`), or only the metric named `only` (the ranking metrics cost tens of
    milliseconds per 10 000 rows each); `predictions`, when given, are the pipeline's on `x`."""

    def wanted(*names: str) -> bool:
        return only is None or only in names

    predictions = pipeline.predict(x) if predictions is None else predictions
    scores: dict[str, float] = {}
    if task == "classification":
        labels = pipeline.classes_
        truth, predicted, classes = _as_codes(y, predictions, labels)
        counted = _code_counts(truth, predicted, classes)
        if wanted("accuracy"):
            scores["accuracy"] = (
                sk_metrics.accuracy_score(truth, predicted) if counted is None else float(np.mean(truth == predicted))
            )
        if wanted("balanced_accuracy"):
            scores["balanced_accuracy"] = (
                sk_metrics.balanced_accuracy_score(truth, predicted)
                if counted is None
                else _balanced_accuracy(_present(counted))
            )
        if wanted("f1_macro"):
            scores["f1_macro"] = (
                sk_metrics.f1_score(truth, predicted, average="macro")
                if counted is None
                else _f1_macro(_present(counted))
            )
        class_scores = _class_scores(pipeline, x) if wanted("log_loss", "roc_auc", "average_precision") else None
        if class_scores is not None and class_scores.ndim == 2 and wanted("log_loss"):
            loss = _log_loss(truth, class_scores, classes)
            scores["log_loss"] = sk_metrics.log_loss(truth, class_scores, labels=classes) if loss is None else loss
        if class_scores is not None:
            curves: Curves = {}
            for name, function in (("roc_auc", roc_auc), ("average_precision", average_precision)):
                value = function(truth, class_scores, classes, curves) if wanted(name) else None
                if value is not None:
                    scores[name] = value
    else:
        if wanted("r2"):
            scores["r2"] = sk_metrics.r2_score(y, predictions)
        if wanted("rmse"):
            scores["rmse"] = math.sqrt(sk_metrics.mean_squared_error(y, predictions))
        if wanted("mae"):
            scores["mae"] = sk_metrics.mean_absolute_error(y, predictions)
        if wanted("mape"):
            scores["mape"] = sk_metrics.mean_absolute_percentage_error(y, predictions)
    return {name: round(float(value), 6) for name, value in scores.items() if np.isfinite(value)}


def _code_counts(truth: Any, predicted: Any, classes: Any) -> np.ndarray | None:
    """The confusion matrix (truth by prediction, every class) when the labels are class codes (0..k-1, as
    _as_codes gives them): what scikit-learn's confusion matrix, accuracy, balanced accuracy and macro F1 count,
    counted once (each of them validates and counts again, ~5-10 ms per call on 20 000 rows). None otherwise."""
    truth, predicted, classes = np.asarray(truth), np.asarray(predicted), np.asarray(classes)
    k = len(classes)
    codes = truth.dtype.kind == "i" and predicted.dtype.kind == "i" and truth.ndim == 1 and predicted.ndim == 1
    if not codes or k == 0 or len(truth) != len(predicted) or not np.array_equal(classes, np.arange(k)):
        return None
    if len(truth) == 0 or min(truth.min(), predicted.min()) < 0 or max(truth.max(), predicted.max()) >= k:
        return None
    return np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k).astype(np.int64)


def _present(counts: np.ndarray) -> np.ndarray:
    """The confusion matrix over the classes present in truth or predictions (scikit-learn's unique_labels)."""
    present = np.flatnonzero(counts.sum(axis=0) + counts.sum(axis=1))
    return counts[np.ix_(present, present)]


def _balanced_accuracy(counts: np.ndarray) -> float:
    """balanced_accuracy_score from the confusion matrix, as scikit-learn computes it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.diagonal(counts) / np.sum(counts, axis=1)
    if np.any(np.isnan(per_class)):
        warnings.warn("y_pred contains classes not in y_true", stacklevel=2)
        per_class = per_class[~np.isnan(per_class)]
    return float(np.mean(per_class))


def _f1_macro(counts: np.ndarray) -> float:
    """f1_score(average="macro") from the confusion matrix, as scikit-learn computes it (a class present has
    true or predicted rows, so no F-score divides by zero)."""
    true_positives = np.diagonal(counts).astype(np.float64)
    denominator = np.sum(counts, axis=1).astype(np.float64) + np.sum(counts, axis=0).astype(np.float64)
    return float(np.nanmean((1 + 1) * true_positives / denominator))


def _log_loss(truth: Any, probabilities: np.ndarray, classes: Any) -> float | None:
    """log_loss(truth, probabilities, labels=classes) for class codes (0..k-1, as _as_codes gives them) and
    probabilities scikit-learn takes as they are: its arithmetic (clipped to [eps, 1 - eps] of their float type,
    -sum of xlogy against the one-hot labels, averaged), without its checks on every call (~7 ms per 20 000 rows,
    paid for challenger and champion). None for anything those checks would refuse or warn about: scikit-learn
    then scores it, and raises or warns as before."""
    truth, classes = np.asarray(truth), np.asarray(classes)
    k = len(classes)
    if probabilities.dtype not in (np.float64, np.float32) or probabilities.ndim != 2 or truth.ndim != 1:
        return None
    if k < 2 or probabilities.shape != (len(truth), k) or not len(truth) or not np.array_equal(classes, np.arange(k)):
        return None
    if truth.dtype.kind != "i" or truth.min() < 0 or truth.max() >= k or not np.isfinite(probabilities).all():
        return None
    if probabilities.max() > 1 or probabilities.min() < 0:
        return None
    eps = np.finfo(probabilities.dtype).eps
    if not np.all(np.isclose(probabilities.sum(axis=1), 1, rtol=math.sqrt(eps))):
        return None  # scikit-learn warns that these are not probabilities
    one_hot = (truth[:, np.newaxis] == np.arange(k)).astype(probabilities.dtype)
    clipped = np.clip(probabilities, eps, 1 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = one_hot * np.log(clipped)
    loss = -np.sum(np.where(one_hot == 0.0, np.asarray(0.0, dtype=terms.dtype), terms), axis=1)
    return float(np.average(loss))


def _class_scores(pipeline: Any, x: pd.DataFrame) -> np.ndarray | None:
    """Per-class probabilities (rows x classes), else a binary classifier's decision function (one score per
    row, for the ranking metrics only), else None."""
    if hasattr(pipeline, "predict_proba"):
        return np.asarray(pipeline.predict_proba(x))
    if hasattr(pipeline, "decision_function") and len(pipeline.classes_) == 2:
        return np.asarray(pipeline.decision_function(x))
    return None


def _positive_scores(scores: np.ndarray) -> np.ndarray:
    """A binary classifier's score of its second (positive) class, from probabilities or a decision function."""
    return scores[:, 1] if scores.ndim == 2 else scores


# Each class's (true, false) positive counts by threshold, kept for the evaluation of one set of rows: ROC AUC and
# average precision sort the same scores of the same class.
Curves = dict[int, tuple[np.ndarray, np.ndarray]]


def roc_auc(truth: Any, scores: Any, classes: Any, curves: Curves | None = None) -> float | None:
    """Area under the ROC curve: binary on the positive (second) class; multi-class macro one-vs-rest. None
    where it is undefined (a single class among the rows, or a multi-class model without probabilities).
    `curves`: shared with average_precision on the same truth and scores."""
    scores = np.asarray(scores)
    truth = np.asarray(truth)
    if len(classes) == 2:
        positive = truth == classes[1]
        if positive.all() or not positive.any():
            return None
        if _plain_scores(scores):
            return _curve_roc_auc(*_class_curve(curves, 1, positive, _positive_scores(scores)))
        return float(sk_metrics.roc_auc_score(positive, _positive_scores(scores)))
    if scores.ndim != 2 or len(np.unique(truth)) != len(classes):
        return None
    if _plain_scores(scores, classes, truth) and np.allclose(1, scores.sum(axis=1)):
        per_class = [
            _curve_roc_auc(*_class_curve(curves, k, truth == label, scores[:, k])) for k, label in enumerate(classes)
        ]
        return float(np.average(np.array(per_class, dtype=np.float64)))
    return float(sk_metrics.roc_auc_score(truth, scores, multi_class="ovr", average="macro", labels=list(classes)))


def average_precision(truth: Any, scores: Any, classes: Any, curves: Curves | None = None) -> float | None:
    """Average precision (area under the precision-recall curve): binary on the positive (second) class;
    multi-class macro one-vs-rest over the classes present among the rows. None where undefined.
    `curves`: shared with roc_auc on the same truth and scores."""
    from sklearn.preprocessing import label_binarize

    scores = np.asarray(scores)
    truth = np.asarray(truth)
    if len(classes) == 2:
        positive = truth == classes[1]
        if not positive.any():
            return None
        if _plain_scores(scores):
            return _curve_average_precision(*_class_curve(curves, 1, positive, _positive_scores(scores)))
        return float(sk_metrics.average_precision_score(positive, _positive_scores(scores)))
    if scores.ndim != 2:
        return None
    if _plain_scores(scores, classes, truth):
        # Every label one of the sorted classes: label_binarize's column k is `truth == classes[k]`.
        positives = [truth == label for label in classes]
        present = [k for k, positive in enumerate(positives) if positive.any()]
        if not present:
            return None
        per_class = [_curve_average_precision(*_class_curve(curves, k, positives[k], scores[:, k])) for k in present]
        return float(np.average(np.array(per_class, dtype=np.float64)))
    indicator = label_binarize(truth, classes=list(classes))
    present_columns = indicator.any(axis=0)
    if not present_columns.any():
        return None
    return float(
        sk_metrics.average_precision_score(indicator[:, present_columns], scores[:, present_columns], average="macro")
    )


def _class_curve(
    curves: Curves | None, key: int, positive: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`_curve(positive, score)` of class `key`, computed once per evaluation when `curves` is given."""
    if curves is None:
        return _curve(positive, score)
    if key not in curves:
        curves[key] = _curve(positive, score)
    return curves[key]


# The ranking metrics from one sort per class, as scikit-learn computes them (roc_curve with drop_intermediate,
# auc; precision_recall_curve and its step integral): the same arithmetic on the same counts, so the same values
# (tests/unit/test_training.py compares them exactly), without scikit-learn's checks on each call (~65 ms per
# evaluation of 20 000 rows, paid for challenger and champion). Inputs those checks would refuse (non-finite
# scores, labels not the sorted classes) still go through scikit-learn, which raises as before.


def _plain_scores(scores: np.ndarray, classes: Any = None, truth: Any = None) -> bool:
    """Scores scikit-learn's checks would pass as they are: real and finite, 1-D or 2-D; `classes` (when given)
    sorted, distinct numbers or strings that every value of `truth` is one of."""
    if scores.dtype.kind != "f" or scores.ndim not in (1, 2) or not np.isfinite(scores).all():
        return False
    if classes is None:
        return True
    labels = np.asarray(classes)
    if scores.ndim != 2 or scores.shape[1] != len(labels) or labels.dtype.kind not in "iuU":
        return False
    sorted_unique = bool(np.all(labels[1:] > labels[:-1]))
    return sorted_unique and bool(np.isin(truth, labels).all())


def _curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positive counts at each distinct score, highest score first (scikit-learn's
    confusion_matrix_at_thresholds: the counts do not depend on how tied scores are ordered)."""
    order = np.argsort(score, kind="stable")[::-1]
    ordered = score[order]
    thresholds = np.concatenate([np.nonzero(np.diff(ordered))[0], [len(ordered) - 1]])
    tps = np.cumsum(positive[order].astype(np.float64))[thresholds]
    fps = 1 + thresholds.astype(np.float64) - tps
    return tps, fps


def _curve_roc_auc(tps: np.ndarray, fps: np.ndarray) -> float:
    """roc_auc_score of one class with both positives and negatives among the rows."""
    if fps.shape[0] > 2:
        keep = np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
        tps, fps = tps[keep], fps[keep]
    tps = np.concatenate([[0.0], tps])
    fps = np.concatenate([[0.0], fps])
    return float(sk_metrics.auc(fps / fps[-1], tps / tps[-1]))


def _curve_average_precision(tps: np.ndarray, fps: np.ndarray) -> float:
    """average_precision_score of one class with at least one positive among the rows."""
    predicted = tps + fps
    precision = np.where(predicted != 0, np.divide(tps, predicted), 0.0)
    recall = tps / tps[-1]
    precision = np.concatenate([precision[::-1], [1.0]])
    recall = np.concatenate([recall[::-1], [0.0]])
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def _ranking_metric(function: Any, classes: Any) -> Any:
    def score(truth: Any, scores: Any) -> float:
        value = function(truth, scores, classes)
        return math.nan if value is None else float(value)

    return score


def _metric_function(metric: Metric, classes: Any) -> tuple[Any, str]:
    """The primary metric as (function of truth and model output, the pipeline method that gives that output)."""
    functions = {
        "accuracy": (sk_metrics.accuracy_score, "predict", {}),
        "balanced_accuracy": (sk_metrics.balanced_accuracy_score, "predict", {}),
        "f1_macro": (sk_metrics.f1_score, "predict", {"average": "macro"}),
        # Every class named: a sample of rows may lack one.
        "log_loss": (sk_metrics.log_loss, "predict_proba", {"labels": classes}),
        "roc_auc": (_ranking_metric(roc_auc, classes), "predict_proba", {}),
        "average_precision": (_ranking_metric(average_precision, classes), "predict_proba", {}),
        "r2": (sk_metrics.r2_score, "predict", {}),
        "rmse": (sk_metrics.root_mean_squared_error, "predict", {}),
        "mae": (sk_metrics.mean_absolute_error, "predict", {}),
        "mape": (sk_metrics.mean_absolute_percentage_error, "predict", {}),
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

    def score(output: Any, codes: Any = None) -> float:
        """`codes`: the outputs' class codes when the caller has them (one lookup for a whole batch)."""
        if by_code and response == "predict":
            output = index.get_indexer(pd.Series(output)) if codes is None else codes
            if metric.name == "accuracy":  # the share of equal codes, without accuracy_score's ~7 ms of checks
                return float(sign * np.mean(truth == output))
        return float(sign * function(truth, output))

    baseline = score(getattr(pipeline, response)(x))
    # scikit-learn's permutations: one seed drawn from random_state; each column starts from it and shuffles
    # the already shuffled column again at each repeat. Kept as row positions: copy k of the rows is `x` with
    # column k // repeats taken at positions[k].
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    rows = len(x)
    positions: list[np.ndarray] = []
    for _ in x.columns:
        generator = np.random.RandomState(seed)
        order = np.arange(rows)
        taken = np.arange(rows)
        for _ in range(repeats):
            generator.shuffle(order)
            taken = taken[order]
            positions.append(taken)
    scores_list: list[float] = []
    per_call = max(1, IMPORTANCE_BATCH_ROWS // rows)
    for start in range(0, len(positions), per_call):
        copies = range(start, min(start + per_call, len(positions)))
        predicted = np.asarray(getattr(pipeline, response)(_permuted_copies(x, copies, positions, repeats)))
        codes = index.get_indexer(pd.Series(predicted)) if by_code and response == "predict" else None
        for part in range(len(copies)):
            block = slice(part * rows, (part + 1) * rows)
            scores_list.append(score(predicted[block], None if codes is None else codes[block]))
    scores = np.array(scores_list).reshape(x.shape[1], repeats)
    importances = baseline - scores
    return importances.mean(axis=1), importances.std(axis=1)


def _permuted_copies(x: pd.DataFrame, copies: range, positions: list[np.ndarray], repeats: int) -> pd.DataFrame:
    """The copies of `x` numbered `copies`, one below the other (what concatenating each copy built with
    `x.assign` gives, index 0..n-1), each column taken once: copy k has column k // repeats at positions[k]."""
    rows = len(x)
    natural = np.arange(rows)
    columns = {}
    for number, name in enumerate(x.columns):
        taken = [positions[copy] if copy // repeats == number else natural for copy in copies]
        columns[name] = x[name].take(np.concatenate(taken)).reset_index(drop=True)
    return pd.DataFrame(columns)


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
        matrix = _code_counts(truth, predicted, label_codes)
        if matrix is None:
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


# ------------------------------------------------------------------------------------------ runtime parity

# Held-out rows predicted through each serving runtime at training time (a fixed first slice beyond this).
PARITY_MAX_ROWS = 100_000
_TREE_MODULES = ("sklearn.ensemble", "sklearn.tree", "xgboost", "lightgbm", "catboost")
_SKLEARN_ONLY = (
    "serve it with the scikit-learn runtime (template parameter ServingRuntime=sklearn; on this machine "
    "--serving-runtime sklearn, or SERVING_RUNTIME=sklearn for the local API)"
)


def runtime_parity(
    runtimes: dict[str, RuntimeSupport],
    files: dict[str, bytes],
    pipeline: Any,
    contract: DataContract,
    golden: GoldenSample,
    x_test: pd.DataFrame,
    predictions: Any,
    *,
    encoded: pd.DataFrame | None = None,
    probabilities: np.ndarray | None = None,
) -> tuple[dict[str, RuntimeSupport], dict[str, RuntimeParity]]:
    """Predict the golden rows and the held-out rows through each serving runtime that has an artifact, as
    serving does (the golden rows through the request validator, the held-out rows as the columns it builds),
    and compare with the pipeline's own outputs (`predictions`: the pipeline's on `x_test`, encoded). A runtime
    that differs anywhere beyond the self-test's tolerance is marked unsupported, with the numbers and the
    usual cause, so that nothing promises what the runtime does not do. `encoded` and `probabilities`, when
    given, are `x_test` encoded and the pipeline's probabilities on it (the evaluate stage has both): used as they
    are when every held-out row is compared, the same rows in the same call as predicting them here."""
    rows = x_test.head(PARITY_MAX_ROWS)
    reuse = encoded is not None and len(rows) == len(x_test)
    if not reuse or encoded is None:
        encoded = encode_frame(rows, contract)
    expected_labels = np.asarray(predictions)[: len(rows)]
    expected_scores = None
    if contract.task == "classification" and hasattr(pipeline, "predict_proba"):
        known = probabilities if reuse and probabilities is not None else pipeline.predict_proba(encoded)
        expected_scores = np.asarray(known, dtype=np.float64)
    numeric = [feature.name for feature in contract.features if feature.kind == "numeric"]
    missing = rows[numeric].isna().any(axis=1).to_numpy() if numeric else np.zeros(len(rows), dtype=bool)
    golden_missing = np.array([any(row.get(name) is None for name in numeric) for row in golden.instances], dtype=bool)
    checked = dict(runtimes)
    parity: dict[str, RuntimeParity] = {}
    for runtime, support in runtimes.items():
        if not support.supported or support.artifact not in files:
            continue
        if not runtime_available(runtime):  # type: ignore[arg-type]
            # This process cannot run it (the retrain function's bundle ships no onnxruntime): nothing measured
            # here, and the deployed predict function's self-test still checks the version before promotion.
            logger.info("parity of the %s runtime not measured: its library is not installed here", runtime)
            continue
        try:
            predictor = load_predictor(runtime, files[support.artifact], contract)  # type: ignore[arg-type]
            validator = RequestValidator(contract, number_type=NUMBER_TYPES[runtime])  # type: ignore[index]
            golden_prediction = predictor.predict(validator.records(golden.instances))
            # Held-out rows may hold a category the training rows never had, which a request could not send but the
            # pipeline still answers: the inputs are built without validating each value.
            held_out_prediction = predictor.predict(model_inputs(encoded, contract, NUMBER_TYPES[runtime]))  # type: ignore[index]
        except Exception as error:  # the runtime's own error types: it cannot serve this pipeline
            result = RuntimeParity(exact=False, error=f"the {runtime} runtime could not predict: {error}"[:500])
        else:
            golden_scores = None if golden.probabilities is None else np.asarray(golden.probabilities)
            result = RuntimeParity(
                exact=False,
                golden=agreement(
                    contract.task, golden_prediction, np.asarray(golden.predictions), golden_scores, golden_missing
                ),
                held_out=agreement(contract.task, held_out_prediction, expected_labels, expected_scores, missing),
            )
            result.exact = not (result.golden and result.golden.disagreements) and not (
                result.held_out and result.held_out.disagreements
            )
            if not result.exact:
                result.cause = usual_cause(runtime, pipeline, result)
        parity[runtime] = result
        if not result.exact:
            remedy = "" if runtime == "sklearn" else f"; {_SKLEARN_ONLY}"
            checked[runtime] = replace(support, supported=False, detail=f"{result.describe()}{remedy}"[:2000])
    return checked, parity


def agreement(
    task: Task, prediction: Prediction, labels: np.ndarray, scores: np.ndarray | None, missing: np.ndarray
) -> Agreement:
    """How a runtime's prediction compares with the pipeline's (`labels`, and `scores`: its probabilities),
    with the serving self-test's tolerances; `missing` marks the rows with a missing number."""
    if task == "regression":
        got = np.asarray(prediction.labels, dtype=np.float64).ravel()
        expected = labels.astype(np.float64)
        gaps = np.abs(got - expected)
        differs = ~np.isclose(got, expected, rtol=REGRESSION_RTOL, atol=REGRESSION_ATOL)
        return Agreement(
            rows=len(expected),
            disagreements=int(differs.sum()),
            max_difference=_finite_max(gaps),
            disagreements_with_missing_numbers=int((differs & missing).sum()),
        )
    served = _json_labels(np.asarray(prediction.labels).ravel())
    other_class = np.array([got != want for got, want in zip(served, _json_labels(labels), strict=True)], dtype=bool)
    gap = 0.0
    ties = np.zeros(len(labels), dtype=bool)
    far_apart = np.zeros(len(labels), dtype=bool)
    if scores is not None and prediction.probabilities is not None:
        row_gaps = np.abs(np.asarray(prediction.probabilities, dtype=np.float64) - scores).max(axis=1)
        far_apart = ~(row_gaps <= PROBABILITY_TOLERANCE)
        gap = _finite_max(row_gaps)
        if other_class.any():
            ties[other_class] = [is_tie(row) for row in scores[other_class]]
    other_class &= ~ties
    differs = other_class | far_apart
    return Agreement(
        rows=len(labels),
        disagreements=int(differs.sum()),
        different_classes=int(other_class.sum()),
        ties=int((ties & ~far_apart).sum()),
        max_difference=gap,
        disagreements_with_missing_numbers=int((differs & missing).sum()),
    )


def _json_labels(labels: np.ndarray) -> list[Any]:
    """labels_to_json(labels), without a Python call per label when no label is a NumPy scalar (`tolist` gives
    Python values for every numeric or text array, and object arrays of Python strings hold no NumPy scalar)."""
    values: list[Any] = labels.tolist()
    if labels.dtype == object and any(issubclass(kind, np.generic) for kind in set(map(type, values))):
        return labels_to_json(labels)
    return values


def _finite_max(values: np.ndarray) -> float:
    """The largest difference; infinity when a runtime gave NaN or infinity where the pipeline did not."""
    if values.size == 0:
        return 0.0
    if not np.isfinite(values).all():
        return math.inf
    return round(float(values.max()), 9)


def is_tree_model(estimator: Any) -> bool:
    return type(estimator).__module__.startswith(_TREE_MODULES)


def usual_cause(runtime: str, pipeline: Any, parity: RuntimeParity) -> str:
    """The usual reason a runtime does not reproduce this kind of pipeline, and how to make it exact."""
    if runtime == "sklearn":
        return (
            "the pipeline answers differently for the same rows when they come one request at a time (a step "
            "that depends on the batch, or is not deterministic)"
        )
    estimator = final_estimator(pipeline)
    name = type(estimator).__name__
    rows = [agreement for agreement in (parity.golden, parity.held_out) if agreement is not None]
    disagreements = sum(agreement.disagreements for agreement in rows)
    with_missing = sum(agreement.disagreements_with_missing_numbers for agreement in rows)
    if not is_tree_model(estimator):
        return (
            "a step has no exact ONNX equivalent: ONNX Runtime computes in float32, scikit-learn in float64, and "
            "some step's output changes more than that rounding; serve it with the scikit-learn runtime"
        )
    causes = []
    if with_missing:
        causes.append(
            f"{name} is a tree model trained on missing numbers: scikit-learn's trees learned which branch a "
            "missing value takes, and the ONNX conversion does not carry that; impute the numbers before the "
            "model (SimpleImputer(strategy='median') in the numeric branch of your pipeline)"
        )
    if disagreements > with_missing:
        causes.append(
            ("and on rows without a missing number: " if with_missing else f"{name} is a tree model: ")
            + "ONNX Runtime computes the steps before the trees in float32 (scikit-learn in float64), so a value "
            "near a split threshold goes the other way; trees need no scaling, so leave the numbers unscaled "
            "before the model"
        )
    return "; ".join(causes) + ". Then ONNX reproduces it (docs/own-data.md shows how)"


def servable_by(runtimes: dict[str, RuntimeSupport]) -> str:
    """`onnx and sklearn reproduce it` / `sklearn reproduces it (onnx: no)`: one line for the progress output."""
    exact = [runtime for runtime, support in runtimes.items() if support.supported]
    not_exact = [runtime for runtime, support in runtimes.items() if not support.supported]
    if not exact:
        return "no serving runtime reproduces it"
    said = " and ".join(exact) + (" reproduces it" if len(exact) == 1 else " reproduce it")
    return said + (f" ({', '.join(not_exact)}: no)" if not_exact else "")


def describe_runtimes(manifest: Manifest) -> list[str]:
    """What `train`, `retrain`, `describe` and the report say about serving: per runtime, whether it reproduces
    the pipeline on the golden and the held-out rows, and the usual cause when it does not."""
    lines = []
    for runtime, support in manifest.runtimes.items():
        parity = (manifest.parity or {}).get(runtime)
        if parity is not None:
            lines.append(f"{runtime}: {parity.model_copy(update={'cause': None}).describe()}")
            if parity.cause:
                lines.append(f"  usual cause: {parity.cause}")
        elif support.supported:
            lines.append(f"{runtime}: yes (the golden rows are checked when it loads; held-out rows not recorded)")
        else:
            lines.append(f"{runtime}: NO, {support.detail or 'no artifact for it was stored'}")
    serving = [runtime for runtime, support in manifest.runtimes.items() if support.supported]
    if serving == ["sklearn"]:
        lines.append("serve it with: the scikit-learn runtime only (ServingRuntime=sklearn, --serving-runtime sklearn)")
    elif not serving:
        lines.append("serve it with: no runtime reproduces it; it cannot be promoted")
    else:
        lines.append(f"serve it with: {' or '.join(serving)}")
    return lines
