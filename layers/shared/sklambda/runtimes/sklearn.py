"""scikit-learn serving, the fallback for pipelines that do not convert to ONNX.

Unpickling runs code from the artifact, so the store's checksum check happens before this is called, and an
artifact pickled under another scikit-learn version is refused rather than served with a warning.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.pipeline import Pipeline

from sklambda.contract import DataContract
from sklambda.errors import VersionRefused
from sklambda.request_validation import Columns
from sklambda.runtimes import Prediction


def load_pipeline(artifact: bytes) -> object:
    """Unpickle a fitted pipeline; a scikit-learn version mismatch is an error, not a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            return joblib.load(io.BytesIO(artifact))
        except InconsistentVersionWarning as warning:
            raise VersionRefused(
                f"the model was pickled with scikit-learn {warning.original_sklearn_version}, this process has "
                f"{warning.current_sklearn_version}; retrain it, or serve it through ONNX"
            ) from None


class SklearnPredictor:
    def __init__(self, artifact: bytes, contract: DataContract) -> None:
        self.pipeline = load_pipeline(artifact)
        self._names = contract.names
        self._classifier = contract.task == "classification"

    def predict(self, columns: Columns) -> Prediction:
        # One DataFrame construction, numbers already float64 (as in training; the request validator gives this
        # runtime float64): a second pass to cast columns costs as much again in pandas.
        frame = pd.DataFrame(
            {
                name: column.ravel() if column.dtype == object else column.ravel().astype(np.float64, copy=False)
                for name, column in ((name, columns[name]) for name in self._names)
            },
            copy=False,
        )
        if self._classifier:
            labels, probabilities = labels_and_probabilities(self.pipeline, frame)
            return Prediction(labels=labels, probabilities=probabilities)
        labels = np.asarray(self.pipeline.predict(frame))  # type: ignore[attr-defined]
        return Prediction(labels=labels.astype(np.float64).ravel())


def labels_and_probabilities(pipeline: Any, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """pipeline.predict(frame) and pipeline.predict_proba(frame), with a Pipeline's steps before its estimator run
    once: each of the two runs them again first (20 000 rows through the sample's one-hot encoding cost more than
    the logistic regression's predict)."""
    if isinstance(pipeline, Pipeline) and len(pipeline.steps) >= 2:
        steps = pipeline[:-1].transform(frame)
        estimator = pipeline.steps[-1][1]
        return np.asarray(estimator.predict(steps)), np.asarray(estimator.predict_proba(steps))
    return np.asarray(pipeline.predict(frame)), np.asarray(pipeline.predict_proba(frame))
