"""Serving: find the version an alias names, load it once, prove it reproduces its golden outputs, cache it.

Used by the predict function and by the retrain gate (which asks this same code to load and self-test a
candidate before any alias moves).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sklambda import metric_names
from sklambda.contract import MAX_PROBLEMS_REPORTED, ContractViolation, Problem
from sklambda.errors import IntegrityError, ModelUnavailable, NotFound, StoreUnavailable, VersionRefused
from sklambda.records import ServedManifest, read_served_manifest
from sklambda.request_validation import Columns, RequestValidator
from sklambda.runtimes import ARTIFACTS, NUMBER_TYPES, Prediction, Predictor, RuntimeName, load_predictor
from sklambda.store import ModelStore

if TYPE_CHECKING:
    from sklambda.manifest import Manifest

logger = logging.getLogger(__name__)

# The parity self-test: classes must agree exactly; scores within these bounds (ONNX computes in float32,
# scikit-learn in float64; measured gaps on the sample models are below 1e-6).
PROBABILITY_TOLERANCE = 1e-4
REGRESSION_RTOL = 1e-4
REGRESSION_ATOL = 1e-4

EventSink = Callable[..., None]
# Up to this many scores, the finite check is a Python loop over them (see _all_finite).
_FEW_SCORES = 64
_NOT_SCORED = "the model gives no finite output for this row: its values are too far from the training data"


@dataclass(frozen=True)
class LoadedModel:
    # What serving reads of the manifest (no pydantic on the predict path); `manifest.full()` has the rest.
    manifest: ServedManifest
    runtime: RuntimeName
    predictor: Predictor
    load_seconds: float
    # The contract compiled for requests, with this deployment's unknown-fields setting.
    validator: RequestValidator

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def predict(self, columns: Columns) -> Prediction:
        """Predict validated rows; rows the model gives no finite output for are refused (ContractViolation):
        values valid one by one can still be too extreme together for float32 arithmetic."""
        prediction = self.predictor.predict(columns)
        scores = prediction.probabilities if prediction.probabilities is not None else prediction.labels
        if scores.dtype.kind == "f" and not _all_finite(scores):
            rows = np.flatnonzero(~np.isfinite(scores).reshape(len(scores), -1).all(axis=1))
            raise ContractViolation(
                [Problem(row=int(row), message=_NOT_SCORED) for row in rows[:MAX_PROBLEMS_REPORTED]], total=len(rows)
            )
        return prediction


def _all_finite(scores: np.ndarray) -> bool:
    """np.isfinite(scores).all(), for less on the few scores of a small request: two numpy calls cost more than
    the Python test of a handful of floats."""
    if scores.size <= _FEW_SCORES:
        return all(map(math.isfinite, scores.ravel().tolist()))
    return bool(np.isfinite(scores).all())


def load_version(
    store: ModelStore,
    manifest: ServedManifest,
    runtime: RuntimeName,
    *,
    allow_unknown_fields: bool | None = None,
    read: Callable[[], bytes] | None = None,
) -> LoadedModel:
    """Load a version for `runtime`: checksum first, then the runtime, then the parity self-test. `read`: the
    artifact's bytes already on their way (`ModelStore.start_reading`), checked like any read.

    Raises VersionRefused / IntegrityError when the version must not be served."""
    started = time.perf_counter()
    support = manifest.runtimes.get(runtime)
    if support is None or not support.supported:
        detail = support.detail if support is not None else "no artifact for it was stored"
        raise VersionRefused(f"{manifest.name} v{manifest.version} cannot be served by the {runtime} runtime: {detail}")
    artifact = store.artifact(manifest, ARTIFACTS[runtime], read=read)
    predictor = load_predictor(runtime, artifact, manifest.contract)
    validator = RequestValidator(
        manifest.contract, allow_unknown_fields=allow_unknown_fields, number_type=NUMBER_TYPES[runtime]
    )
    check_parity(predictor, manifest, validator)
    return LoadedModel(manifest, runtime, predictor, time.perf_counter() - started, validator)


def check_parity(predictor: Predictor, manifest: ServedManifest, validator: RequestValidator | None = None) -> None:
    """Re-predict the golden rows through the real serving path and compare with the pipeline's outputs:
    classes must agree exactly, probabilities within PROBABILITY_TOLERANCE, regression values within
    REGRESSION_RTOL/ATOL. Raises VersionRefused otherwise."""
    where = f"{manifest.name} v{manifest.version} failed its self-test"
    columns = (validator or RequestValidator(manifest.contract)).records(manifest.golden.instances)
    try:
        prediction = predictor.predict(columns)
        problem = _parity_problem(prediction, manifest)
    except Exception as error:  # the runtime's own error types (onnxruntime raises InvalidArgument for a graph
        # whose inputs are not the contract's), or outputs of the wrong kind: either way it cannot serve
        raise VersionRefused(f"{where}: the runtime could not predict the golden rows: {error}") from error
    if problem is not None:
        raise VersionRefused(f"{where}: {problem}")


def _parity_problem(prediction: Prediction, manifest: ServedManifest) -> str | None:
    golden = manifest.golden
    rows = len(golden.predictions)
    if manifest.task == "regression":
        got = np.asarray(prediction.labels, dtype=np.float64).ravel()
        expected = np.asarray(golden.predictions, dtype=np.float64)
        if got.shape != expected.shape:
            return f"{got.size} predictions for {rows} rows"
        if not np.allclose(got, expected, rtol=REGRESSION_RTOL, atol=REGRESSION_ATOL):
            return f"predictions differ by up to {float(np.max(np.abs(got - expected))):.3g}"
        return None
    labels = labels_to_json(np.asarray(prediction.labels).ravel())
    if len(labels) != rows:
        return f"{len(labels)} predictions for {rows} rows"
    # A row whose golden probabilities tie between its top classes has no class to reproduce: scikit-learn
    # takes the first, a float32 runtime whichever its rounding favours (the probabilities are compared below).
    ties = [False] * rows if golden.probabilities is None else [is_tie(row) for row in golden.probabilities]
    mismatches = sum(
        1 for got, want, tie in zip(labels, golden.predictions, ties, strict=True) if got != want and not tie
    )
    if mismatches:
        return f"{mismatches} of {rows} golden classes differ"
    if golden.probabilities is None:
        return None
    if prediction.probabilities is None:
        return "the runtime gives no probabilities"
    scores = np.asarray(prediction.probabilities, dtype=np.float64)
    golden_scores = np.asarray(golden.probabilities, dtype=np.float64)
    if scores.shape != golden_scores.shape:
        return f"probabilities of shape {scores.shape}, expected {golden_scores.shape}"
    gap = float(np.max(np.abs(scores - golden_scores)))
    if not gap <= PROBABILITY_TOLERANCE:
        return f"probabilities differ by {gap:.2g} (> {PROBABILITY_TOLERANCE})"
    return None


def is_tie(probabilities: Any) -> bool:
    """Whether a row's two highest class probabilities are equal within PROBABILITY_TOLERANCE."""
    top = np.sort(np.asarray(probabilities, dtype=np.float64))[-2:]
    return top.size == 2 and bool(top[1] - top[0] <= PROBABILITY_TOLERANCE)


def remote_self_test(function_name: str) -> Callable[[Manifest], None]:
    """A serving check that asks the deployed predict function (its runtime, its code) to load and self-test a
    version; used by the retrain gate in the cloud, where the retrain function has no serving runtime."""
    from sklambda.aws import invoke_json  # boto3 only where this check is used

    def check(manifest: Manifest) -> None:
        result = invoke_json(function_name, {"self_test": {"name": manifest.name, "version": manifest.version}})
        if not result.get("ok"):
            raise VersionRefused(str(result.get("detail", "the predict function refused it")))

    return check


def local_self_test(store: ModelStore, runtime: RuntimeName) -> Callable[[Manifest], None]:
    """A serving check that runs the serving code in this process."""

    def check(manifest: Manifest) -> None:
        load_version(store, served(manifest), runtime)

    return check


def served(manifest: Manifest) -> ServedManifest:
    """A stored manifest (pydantic) as serving reads it: through the bytes the store holds, so that a self-test
    in this process reads exactly what the predict function would."""
    return read_served_manifest(manifest.sealed(), name=manifest.name, version=manifest.version)


def labels_to_json(labels: np.ndarray) -> list[Any]:
    return [label.item() if isinstance(label, np.generic) else label for label in labels.tolist()]


# Why a version was refused, said without its detail (the log has it).
_PUBLIC_REFUSALS: dict[type[Exception], str] = {
    IntegrityError: "its files do not match their checksums (see the logs)",
    VersionRefused: "this runtime cannot serve it, or it failed its self-test (see the logs)",
    NotFound: "some of its files are missing (see the logs)",
}


def _ignore_event(name: str, **details: Any) -> None:
    """Default event sink: the handlers pass one that emits metrics."""


@dataclass
class ModelCache:
    """One loaded model per warm container, keyed by version; the alias is re-read at most every
    `refresh_seconds` with a conditional read. A failing store or a refused version leaves the last good
    model serving (and says so through `on_event` and `problem`)."""

    store: ModelStore
    name: str
    alias: str
    runtime: RuntimeName
    refresh_seconds: float
    clock: Callable[[], float] = time.monotonic
    on_event: EventSink = _ignore_event
    allow_unknown_fields: bool | None = None
    _model: LoadedModel | None = field(default=None, init=False)
    _alias_etag: str | None = field(default=None, init=False)
    _next_check: float = field(default=float("-inf"), init=False)
    # Why the last refresh did not leave the alias's version serving: the store failed, or the version it
    # names was refused (kept until the alias moves again).
    _store_problem: str | None = field(default=None, init=False)
    _public_store_problem: str | None = field(default=None, init=False)
    _refused: str | None = field(default=None, init=False)
    _public_refused: str | None = field(default=None, init=False)

    @property
    def loaded(self) -> LoadedModel | None:
        return self._model

    @property
    def problem(self) -> str | None:
        """Why the alias's version is not the one serving, in detail (store location, S3 error): for logs."""
        return self._store_problem or self._refused

    @property
    def public_problem(self) -> str | None:
        """The same, said without anything private, for public replies (GET /health)."""
        if self._store_problem is not None:
            return self._public_store_problem
        return self._public_refused

    def get(self) -> LoadedModel:
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + self.refresh_seconds
            self._refresh()
        if self._model is None:
            raise ModelUnavailable(self.problem or "no model loaded yet", public=self.public_problem)
        return self._model

    def recheck(self) -> None:
        """Re-read the alias on the next `get`, whatever the refresh interval. For a process resumed from a
        snapshot (Lambda SnapStart): the alias may have moved long after the snapshot was taken."""
        self._next_check = float("-inf")

    def prime(self) -> None:
        """Load the alias's version now (at init), if it can be; a request retries later if not."""
        with contextlib.suppress(ModelUnavailable):
            self.get()

    def _refresh(self) -> None:
        try:
            state = self.store.alias_if_changed(self.name, self.alias, self._alias_etag)
        except NotFound:
            self._public_store_problem = f"model {self.name!r} has no {self.alias!r} alias yet: train one"
            self._store_problem = f"model {self.name!r} has no {self.alias!r} alias yet in {self.store.uri}: train one"
            return
        except StoreUnavailable as error:
            self._store_failed(error)
            return
        except ValueError as error:  # an alias object that does not parse (sklambda.records.read_alias)
            self._store_problem = f"the {self.alias!r} alias of {self.name!r} is unreadable: {error}"
            self._public_store_problem = f"the {self.alias!r} alias of {self.name!r} is unreadable; see the logs"
            self.on_event(metric_names.MODEL_LOAD_REFUSED, error=self._store_problem)
            return
        self._store_problem = self._public_store_problem = None
        if state is None:
            return
        if self._model is not None and state.record.version == self._model.version:
            self._alias_etag = state.etag
            self._refused = self._public_refused = None
            return
        try:
            # The artifact's read starts before the manifest's (its key follows from the alias): a cold start waits
            # for one round trip to the store here, not two in a row. load_version checks it as any read.
            artifact = self.store.start_reading(self.name, state.record.version, ARTIFACTS[self.runtime])
            manifest = self.store.served_manifest(self.name, state.record.version)
            model = load_version(
                self.store, manifest, self.runtime, allow_unknown_fields=self.allow_unknown_fields, read=artifact
            )
        except StoreUnavailable as error:
            # Transient: keep the old etag so the next refresh tries this version again.
            self._store_failed(error)
            return
        except (IntegrityError, VersionRefused, NotFound) as error:
            # Permanent for this alias state: remember the etag, keep serving the last good model.
            self._alias_etag = state.etag
            self._refused = f"refused {self.name} v{state.record.version}: {error}"
            self._public_refused = f"refused {self.name} v{state.record.version}: {_PUBLIC_REFUSALS[type(error)]}"
            logger.error("refused to load %s v%s: %s", self.name, state.record.version, error)
            self.on_event(metric_names.MODEL_LOAD_REFUSED, version=state.record.version, error=str(error))
            return
        self._alias_etag = state.etag
        self._model = model
        self._refused = self._public_refused = None
        logger.info("serving %s v%s (%s, loaded in %.3f s)", self.name, model.version, self.runtime, model.load_seconds)
        self.on_event(metric_names.MODEL_LOADED, version=model.version, seconds=model.load_seconds)

    def _store_failed(self, error: StoreUnavailable) -> None:
        self._store_problem = f"the model store is unavailable: {error}"
        self._public_store_problem = "the model store is unavailable; retrying"
        self.on_event(metric_names.STORE_UNAVAILABLE, error=str(error))
        if self._model is not None:
            self.on_event(metric_names.SERVING_LAST_GOOD_MODEL, version=self._model.version)
