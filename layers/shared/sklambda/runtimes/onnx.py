"""ONNX Runtime serving: no scikit-learn, no pickle, nothing executed from the artifact but the graph.

Two input layouts, told apart by the model's own inputs: the current one (training/convert.py) takes every
numeric feature in one float tensor and every categorical feature in one string tensor, so a request costs two
arrays whatever the width; versions converted before take one (rows, 1) tensor per feature, in contract order,
and still load and serve.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from sklambda.contract import DataContract
from sklambda.errors import VersionRefused
from sklambda.request_validation import Columns
from sklambda.runtimes import Prediction

Feeds = Callable[[Columns], dict[str, np.ndarray]]


def _grouped_feeds(session: ort.InferenceSession, contract: DataContract) -> Feeds | None:
    """Feeds for a model with one float input (numeric features) and one string input (categorical features),
    each as wide as the contract has features of its kind; None if the model's inputs are not that."""
    widths = {
        "tensor(float)": sum(feature.kind == "numeric" for feature in contract.features),
        "tensor(string)": sum(feature.kind == "categorical" for feature in contract.features),
    }
    expected = {element: width for element, width in widths.items() if width}
    inputs = {node.type: node for node in session.get_inputs()}
    if len(inputs) != len(session.get_inputs()) or set(inputs) != set(expected):
        return None
    if any(node.shape[-1] != expected[element] or len(node.shape) != 2 for element, node in inputs.items()):
        return None
    numeric = inputs["tensor(float)"].name if "tensor(float)" in inputs else None
    categorical = inputs["tensor(string)"].name if "tensor(string)" in inputs else None
    if numeric is not None and categorical is not None:
        return lambda columns: {numeric: columns.numeric, categorical: columns.categorical}  # type: ignore[dict-item]
    if numeric is not None:
        return lambda columns: {numeric: columns.numeric}  # type: ignore[dict-item]
    assert categorical is not None
    return lambda columns: {categorical: columns.categorical}  # type: ignore[dict-item]


def _per_column_feeds(session: ort.InferenceSession, contract: DataContract) -> Feeds:
    """Feeds for a model converted with one input per feature, in contract order (versions before grouping)."""
    input_names = [node.name for node in session.get_inputs()]
    if len(input_names) != len(contract.features):
        raise VersionRefused(
            f"ONNX model has {len(input_names)} inputs but the contract has {len(contract.features)} features"
        )
    pairs = list(zip(input_names, contract.names, strict=True))
    return lambda columns: {input_name: columns[feature] for input_name, feature in pairs}


class OnnxPredictor:
    def __init__(self, artifact: bytes, contract: DataContract) -> None:
        options = ort.SessionOptions()
        # One thread: Lambda gives a fraction of a core per 1769 MB, and single-row latency suffers from
        # thread pools (measured: n_jobs=-1 made a single random-forest row 5x slower).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(artifact, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for a bad graph
            raise VersionRefused(f"ONNX Runtime cannot load the model: {error}") from error
        self.grouped = (feeds := _grouped_feeds(self.session, contract)) is not None
        self._feeds = feeds or _per_column_feeds(self.session, contract)
        self._outputs = [node.name for node in self.session.get_outputs()]
        self._run = self.session.run
        self._classifier = contract.task == "classification"

    def predict(self, columns: Columns) -> Prediction:
        outputs = self._run(self._outputs, self._feeds(columns))
        if self._classifier:
            return Prediction(labels=np.asarray(outputs[0]).ravel(), probabilities=np.asarray(outputs[1]))
        # float32, as computed: its shortest decimal form is what the reply carries (4012.479, not 4012.47900390625).
        return Prediction(labels=np.asarray(outputs[0]).ravel())
