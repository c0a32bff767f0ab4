"""Serving runtimes: turn a stored version's artifact into a predictor.

Each runtime module imports its own heavy library, so a process only pays for the runtime it uses:
`onnx` needs onnxruntime + numpy (the predict function's default), `sklearn` needs scikit-learn + pandas.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sklambda.contract import DataContract
from sklambda.request_validation import Columns
from sklambda.runtime_names import RuntimeName as RuntimeName  # the settings read it without importing numpy

RUNTIMES: tuple[RuntimeName, ...] = ("onnx", "sklearn")
ARTIFACTS: dict[RuntimeName, str] = {"onnx": "model.onnx", "sklearn": "model.joblib"}
# The numbers each runtime takes: the ONNX graph's inputs are float32; the scikit-learn pipeline gets the
# request's numbers as parsed (float64), as training gave it the table's, so that it answers exactly as trained.
NUMBER_TYPES: dict[RuntimeName, type[np.floating[Any]]] = {"onnx": np.float32, "sklearn": np.float64}


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray
    # One row per input row, one column per class (classifiers only), in the order of `classes`.
    probabilities: np.ndarray | None = None


class Predictor(Protocol):
    def predict(self, columns: Columns) -> Prediction: ...


_MODULES: dict[RuntimeName, str] = {"onnx": "sklambda.runtimes.onnx", "sklearn": "sklambda.runtimes.sklearn"}


def preload(runtime: RuntimeName) -> threading.Thread:
    """Import the runtime's library in a background thread, so that it loads while the model's bytes are fetched
    (the fetch mostly waits on the network). `load_predictor` then finds it imported, or waits for the import
    to finish; an import error shows there, not here."""

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(_MODULES[runtime])

    thread = threading.Thread(target=load, name=f"preload-{runtime}", daemon=True)
    thread.start()
    return thread


# The library each runtime needs, importable or not in this process (the retrain bundle has no onnxruntime).
_LIBRARIES: dict[RuntimeName, str] = {"onnx": "onnxruntime", "sklearn": "sklearn"}


def runtime_available(runtime: RuntimeName) -> bool:
    """Whether this process can load the runtime's library (without importing it)."""
    return importlib.util.find_spec(_LIBRARIES[runtime]) is not None


def load_predictor(runtime: RuntimeName, artifact: bytes, contract: DataContract) -> Predictor:
    if runtime == "onnx":
        from sklambda.runtimes.onnx import OnnxPredictor

        return OnnxPredictor(artifact, contract)
    if runtime == "sklearn":
        from sklambda.runtimes.sklearn import SklearnPredictor

        return SklearnPredictor(artifact, contract)
    raise ValueError(f"unknown serving runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
