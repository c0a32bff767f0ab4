"""The champion a run compares with: the version its alias named when the run started, and that version's
outputs on rows of the new table.

The champion is scored as it is served: through its ONNX model when the version has one, so a run unpickles
nothing it did not write itself. Only a version stored for the scikit-learn runtime alone (its pipeline did not
convert) is loaded from its joblib artifact, after the store has checked that artifact's checksum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sklambda.contract_derivation import encode_frame, model_inputs
from sklambda.errors import SklambdaError
from sklambda.manifest import Manifest
from sklambda.runtimes import (
    ARTIFACTS,
    NUMBER_TYPES,
    Prediction,
    Predictor,
    RuntimeName,
    load_predictor,
    runtime_available,
)
from sklambda.store import AliasState, ModelStore


@dataclass
class Champion:
    manifest: Manifest
    # The alias as read at the start of the run: the promotion swaps it only if it is still this.
    state: AliasState
    store: ModelStore
    _scorer: _Scorer | None = field(default=None, init=False, repr=False)
    # The artifact the champion is scored with, on its way from the store (Champion.of(..., prefetch=True)).
    _artifact: Callable[[], bytes] | None = field(default=None, init=False, repr=False)
    # The outputs scored so far in this run, and the index of the rows they are for.
    _scored: Outputs | None = field(default=None, init=False, repr=False)
    _scored_index: pd.Index = field(default_factory=lambda: pd.Index([]), init=False, repr=False)

    @classmethod
    def of(cls, store: ModelStore, name: str, alias: str, *, prefetch: bool = False) -> Champion | None:
        """The version `alias` names now, None without one. `prefetch`: start reading the artifact it is scored
        with in the background (a run scores it in almost every case): the round trip then overlaps the run's
        own work. Nothing read ahead is trusted until scoring: the store checks its checksum (and signature)
        then, and a failed read raises there, as a read at that point would."""
        state = store.alias(name, alias)
        if state is None:
            return None
        champion = cls(store.manifest(name, state.record.version), state, store)
        if prefetch:
            champion._artifact = store.start_reading(name, champion.version, ARTIFACTS[champion.runtime])
        return champion

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def runtime(self) -> RuntimeName:
        """The runtime the champion is scored with: ONNX when the version has it and this process can run it (no
        unpickling); else scikit-learn, whose artifact the store loads only after verifying the manifest's signature
        where signing is configured. The retrain function's bundle ships no onnxruntime (its size budget)."""
        onnx = self.manifest.runtimes.get("onnx")
        return "onnx" if onnx is not None and onnx.supported and runtime_available("onnx") else "sklearn"

    def outputs(self, rows: pd.DataFrame) -> Outputs:
        """The champion's outputs on `rows`: rows of the run's table (encoded here with the champion's contract),
        known by their index. Each row is scored once per run: validation scores a sample of the table, the gate
        the held-out rows, and the rows both need are not scored again."""
        if self._scorer is None:
            self._scorer = _Scorer(self.store, self.manifest, self.runtime, self._artifact)
        if not rows.index.is_unique:
            return self._scorer.outputs(rows)
        if self._scored is None:
            self._scored, self._scored_index = self._scorer.outputs(rows), rows.index
            return self._scored
        new = self._scored_index.get_indexer(rows.index) < 0
        if new.any():
            self._scored = self._scored.extend(self._scorer.outputs(rows[new]))
            self._scored_index = self._scored_index.append(rows.index[new])
        return self._scored.take(self._scored_index.get_indexer(rows.index))


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on fixed rows, behind the methods training.evaluate.evaluate calls on a pipeline (it asks
    for predict and predict_proba separately; the model ran once)."""

    prediction: Prediction
    classes_: np.ndarray | None

    def predict(self, _rows: Any) -> np.ndarray:
        return self.prediction.labels

    @property
    def predict_proba(self) -> Callable[[Any], np.ndarray]:
        """Absent (hasattr is False) for a model without probabilities, as on a pipeline."""
        probabilities = self.prediction.probabilities
        if probabilities is None:
            raise AttributeError("predict_proba")
        return lambda _rows: probabilities

    def extend(self, more: Outputs) -> Outputs:
        """These outputs followed by `more` (of the same model)."""
        probabilities = self.prediction.probabilities
        more_probabilities = more.prediction.probabilities
        return Outputs(
            Prediction(
                labels=np.concatenate([self.prediction.labels, more.prediction.labels]),
                probabilities=None
                if probabilities is None or more_probabilities is None
                else np.vstack([probabilities, more_probabilities]),
            ),
            self.classes_,
        )

    def take(self, positions: np.ndarray) -> Outputs:
        """The outputs of the rows at `positions` (of the rows these outputs are for)."""
        probabilities = self.prediction.probabilities
        return Outputs(
            Prediction(
                labels=self.prediction.labels[positions],
                probabilities=None if probabilities is None else probabilities[positions],
            ),
            self.classes_,
        )


class _Scorer:
    def __init__(
        self, store: ModelStore, manifest: Manifest, runtime: RuntimeName, read: Callable[[], bytes] | None = None
    ) -> None:
        self.manifest = manifest
        # Checksum first (store.artifact), then the runtime; either refuses a bad artifact with VersionRefused.
        # `read`: the artifact's bytes already on their way (store.start_reading).
        self.predictor: Predictor = load_predictor(
            runtime, store.artifact(manifest, ARTIFACTS[runtime], read=read), manifest.contract
        )
        self.classes = np.asarray(manifest.classes, dtype=object) if manifest.classes is not None else None
        self.number_type = NUMBER_TYPES[runtime]  # the numbers as this runtime serves them

    def outputs(self, rows: pd.DataFrame) -> Outputs:
        contract = self.manifest.contract
        encoded = encode_frame(rows, contract)
        columns = model_inputs(encoded, contract, self.number_type)
        try:
            prediction = self.predictor.predict(columns)
        except Exception as error:  # the runtime's own error types
            raise SklambdaError(
                f"champion v{self.manifest.version} cannot score the new rows: {type(error).__name__}: {error}"
            ) from error
        labels = np.asarray(prediction.labels).ravel()
        if self.classes is not None and labels.dtype.kind in "USO":
            labels = labels.astype(object)
        return Outputs(Prediction(labels=labels, probabilities=prediction.probabilities), self.classes)
