"""The prepare and fit stages' parts: build the estimator the configuration names, split off the held-out rows,
fit."""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.model_selection import train_test_split
from sklearn.model_selection._split import _validate_shuffle_split  # private; the sizes train_test_split takes
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError  # not exported publicly; there since 1.2
from sklearn.utils.extmath import _approximate_mode  # private; StratifiedShuffleSplit's per-class counts

from sklambda.contract import Task
from sklambda.errors import ConfigError, DataError
from training.config import TrainingConfig
from training.features import FeatureSet, preprocessing

logger = logging.getLogger(__name__)

MIN_ROWS = 10

# Where code of one's own must live so that the Lambda functions import it too (and unpickle what uses it).
CUSTOM_CODE_HINT = (
    "code of your own must be a package under layers/shared/ (like layers/shared/sklambda_examples), where the "
    "retrain and predict functions find it; on this machine, with layers/shared on PYTHONPATH"
)


def import_callable(spec: str, what: str = "estimator") -> Any:
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{what} {spec!r}: cannot import {module_name}: {error}; {CUSTOM_CODE_HINT}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{what} {spec!r}: {module_name} has no {attribute}") from None
    if not callable(target):
        raise ConfigError(f"{what} {spec!r} is not callable")
    return target


def build_estimator(config: TrainingConfig, task: Task) -> BaseEstimator:
    spec = getattr(config.estimator, task)
    factory = import_callable(spec)
    params = dict(config.estimator.params.get(task, {}))
    # Fixed seeds: the same data and configuration give the same model.
    if "random_state" not in params and _accepts(factory, "random_state"):
        params["random_state"] = config.evaluation.random_state
    try:
        estimator = factory(**params)
    except TypeError as error:
        raise ConfigError(f"estimator {spec!r} with params {params}: {error}") from None
    _check_built(estimator, task, f"estimator {spec!r}")
    return estimator


def _check_built(estimator: Any, task: Task, what: str) -> None:
    if not isinstance(estimator, BaseEstimator):
        raise ConfigError(f"{what} returned {type(estimator).__name__}, not a scikit-learn estimator")
    if task == "classification" and not is_classifier(estimator):
        raise ConfigError(f"{what} is not a classifier, but the task is classification")
    if task == "regression" and not is_regressor(estimator):
        raise ConfigError(f"{what} is not a regressor, but the task is regression")


def build_custom_pipeline(config: TrainingConfig, task: Task, features: FeatureSet) -> Pipeline:
    """[pipeline]: the user's own estimator or Pipeline, with its own preprocessing (nothing put in front)."""
    section = config.pipeline
    assert section is not None
    factory = import_callable(section.factory, "pipeline factory")
    params = dict(section.params)
    offered = {
        "numeric": list(features.numeric),
        "categorical": list(features.categorical),
        "task": task,
        "random_state": config.evaluation.random_state,
    }
    for name, value in offered.items():
        if name not in params and _accepts(factory, name):
            params[name] = value
    shown = {key: value for key, value in params.items() if key not in ("numeric", "categorical")}
    try:
        built = factory(**params)
    except TypeError as error:
        raise ConfigError(f"pipeline factory {section.factory!r} with params {shown}: {error}") from None
    _check_built(built, task, f"pipeline factory {section.factory!r}")
    if isinstance(built, Pipeline):
        return built
    # A bare estimator gets the feature columns as one matrix in the contract's order through a pass-through
    # ColumnTransformer (no value changes): the ONNX graph has one input per feature, and most converters take
    # a single matrix, which the ColumnTransformer's converter builds by joining them.
    columns = ColumnTransformer([("columns", "passthrough", features.names)], verbose_feature_names_out=False)
    return Pipeline([("columns", columns), ("model", built)])


def build_model(config: TrainingConfig, task: Task, features: FeatureSet) -> Pipeline:
    """The unfitted pipeline the configuration describes: [pipeline] as given, or the standard preprocessing in
    front of the [estimator] for the task."""
    if config.pipeline is not None:
        return build_custom_pipeline(config, task, features)
    return build_pipeline(features, build_estimator(config, task))


def final_estimator(pipeline: Any) -> Any:
    """The last step, looking inside nested Pipelines."""
    while isinstance(pipeline, Pipeline):
        pipeline = pipeline.steps[-1][1]
    return pipeline


def _accepts(factory: Any, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


# Models that split on thresholds gain nothing from scaling, and with it ONNX (float32) and scikit-learn (float64)
# scale a value to slightly different numbers, which can fall on either side of a split: measured on the sample
# data, a 100-tree forest behind a scaler differed by 0.05 in probability, without one by 4e-7.
_THRESHOLD_MODELS = (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)


def build_pipeline(features: FeatureSet, estimator: BaseEstimator) -> Pipeline:
    scale = not isinstance(estimator, _THRESHOLD_MODELS)
    return Pipeline([("features", preprocessing(features, scale=scale)), ("model", estimator)])


@dataclass(frozen=True)
class Split:
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def split(frame: pd.DataFrame, features: FeatureSet, target: str, task: Task, config: TrainingConfig) -> Split:
    if len(frame) < MIN_ROWS:
        raise DataError(f"only {len(frame)} rows with a target; at least {MIN_ROWS} are needed")
    y = frame[target]
    x = frame[features.names]
    test_size, random_state = config.evaluation.test_size, config.evaluation.random_state
    if task == "classification":
        # By the classes' positions in sorted order: the same split as by the labels themselves (scikit-learn
        # orders the classes by np.unique either way), without sorting every label string (~70 ms per 100 000
        # rows). Each distinct label is hashed once (factorize) and only the distinct labels are sorted.
        codes, distinct = pd.factorize(y)
        counts = np.bincount(codes[codes >= 0], minlength=len(distinct))
        if len(distinct) < 2:
            only = f" ({distinct[0]!r})" if len(distinct) else ""
            raise DataError(f"the target {target!r} has a single class{only}; nothing to learn")
        # Stratify when every class can appear on both sides; rare classes otherwise make the split fail.
        if counts.min() >= 2:
            positions = pd.Index(sorted(distinct.tolist())).get_indexer(distinct)
            stratify = np.where(codes >= 0, positions[codes], -1)  # a missing label: -1, as a Categorical's code
            indices = stratified_split_indices(stratify, test_size, random_state)
            if indices is not None:
                train, test = indices
                return Split(x.take(train), x.take(test), y.take(train), y.take(test))
            x_train, x_test, y_train, y_test = train_test_split(
                x, y, test_size=test_size, random_state=random_state, stratify=stratify
            )
            return Split(x_train, x_test, y_train, y_test)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, random_state=random_state)
    return Split(x_train, x_test, y_train, y_test)


def stratified_split_indices(
    codes: np.ndarray, test_size: float, random_state: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The (train, test) row positions `train_test_split(..., stratify=codes)` takes: StratifiedShuffleSplit's
    first split, the same draws from the same generator in the same order, but each class's rows gathered as
    arrays (scikit-learn extends a list one NumPy integer at a time: ~45 ms per 100 000 rows).
    tests/unit/test_training.py compares the two. None where scikit-learn would refuse the sizes: its own error
    is then raised by train_test_split."""
    n_train, n_test = _validate_shuffle_split(len(codes), test_size, None, default_test_size=0.25)
    classes, y_indices, class_counts = np.unique(codes, return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or n_train < len(classes) or n_test < len(classes):
        return None
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = check_random_state(random_state)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        permuted = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.append(permuted[: n_i[i]])
        test.append(permuted[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def fit(pipeline: Pipeline, x: pd.DataFrame, y: pd.Series) -> float:
    started = time.perf_counter()
    try:
        pipeline.fit(x, y)
    except InvalidParameterError as error:
        # scikit-learn checks parameters when fitting, not when an estimator is made: a wrong value in the
        # configuration's params surfaces here, and is the configuration's fault, not a crash.
        raise ConfigError(f"{error} (see [estimator.params] or [pipeline.params] in the configuration)") from None
    seconds = time.perf_counter() - started
    logger.info("fitted %s on %d rows in %.2f s", type(final_estimator(pipeline)).__name__, len(x), seconds)
    return seconds


def predict_with_probabilities(
    pipeline: Any, x: pd.DataFrame, *, probabilities: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """What `pipeline.predict(x)` and `pipeline.predict_proba(x)` give (None where the model has no probabilities,
    or `probabilities` is off), with the steps before the estimator run once: a Pipeline's predict and predict_proba
    each transform the rows through those same steps first (the one-hot encoding of 20 000 rows costs more than a
    logistic regression's predict). Not argmax of the probabilities: a classifier's own predict decides."""
    wanted = probabilities and hasattr(pipeline, "predict_proba")
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2 or not wanted:
        return np.asarray(pipeline.predict(x)), pipeline.predict_proba(x) if wanted else None
    steps = pipeline[:-1].transform(x)
    estimator = pipeline.steps[-1][1]
    probabilities_ = estimator.predict_proba(steps)
    if type(estimator) in _PREDICT_IS_ARGMAX and estimator.n_outputs_ == 1:
        # scikit-learn's own predict for these, word for word: every tree is not run a second time.
        return estimator.classes_.take(np.argmax(probabilities_, axis=1), axis=0), probabilities_
    return np.asarray(estimator.predict(steps)), probabilities_


# Classifiers whose predict is `classes_.take(argmax(predict_proba(X), axis=1))` for one output (scikit-learn's
# ForestClassifier.predict); exact types only: a subclass may predict otherwise. tests/unit/test_training.py
# checks that the labels are the estimator's predict.
_PREDICT_IS_ARGMAX = (RandomForestClassifier, ExtraTreesClassifier)
