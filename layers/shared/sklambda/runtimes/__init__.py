"""Serving runtimes: turn a stored version's artifact into a predictor.

Each runtime module imports its own heavy library, so a process only pays for the runtime it uses:
`onnx` needs onnxruntime + numpy (the predict function's default), `sklearn` needs scikit-learn + pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from sklambda.contract import Columns, DataContract

RuntimeName = Literal["onnx", "sklearn"]
RUNTIMES: tuple[RuntimeName, ...] = ("onnx", "sklearn")
ARTIFACTS: dict[RuntimeName, str] = {"onnx": "model.onnx", "sklearn": "model.joblib"}


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray
    # One row per input row, one column per class (classifiers only), in the order of `classes`.
    probabilities: np.ndarray | None = None


class Predictor(Protocol):
    def predict(self, columns: Columns) -> Prediction: ...


def load_predictor(runtime: RuntimeName, artifact: bytes, contract: DataContract) -> Predictor:
    if runtime == "onnx":
        from sklambda.runtimes.onnx import OnnxPredictor

        return OnnxPredictor(artifact, contract)
    if runtime == "sklearn":
        from sklambda.runtimes.sklearn import SklearnPredictor

        return SklearnPredictor(artifact, contract)
    raise ValueError(f"unknown serving runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
