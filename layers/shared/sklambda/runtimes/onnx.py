"""ONNX Runtime serving: no scikit-learn, no pickle, nothing executed from the artifact but the graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from sklambda.contract import Columns, DataContract
from sklambda.errors import VersionRefused
from sklambda.runtimes import Prediction


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
        input_names = [node.name for node in self.session.get_inputs()]
        if len(input_names) != len(contract.features):
            raise VersionRefused(
                f"ONNX model has {len(input_names)} inputs but the contract has {len(contract.features)} features"
            )
        # Inputs were created in contract order at conversion time.
        self._inputs = list(zip(input_names, contract.names, strict=True))
        self._outputs = [node.name for node in self.session.get_outputs()]
        self._classifier = contract.task == "classification"

    def predict(self, columns: Columns) -> Prediction:
        feeds = {input_name: columns[feature] for input_name, feature in self._inputs}
        outputs = self.session.run(self._outputs, feeds)
        if self._classifier:
            return Prediction(labels=np.asarray(outputs[0]).ravel(), probabilities=np.asarray(outputs[1]))
        # float32, as computed: its shortest decimal form is what the reply carries (4012.479, not 4012.47900390625).
        return Prediction(labels=np.asarray(outputs[0]).ravel())
