"""What the store records about a model version (manifest) and about an alias (its record and history).

A manifest is written once, after every artifact file, and carries the sha256 of each file and of itself:
a version whose manifest is missing or does not verify is not a version.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from sklambda.contract import DataContract, Label, Task

VersionStatus = Literal["candidate", "promoted", "rejected", "retired"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


class DataFingerprint(BaseModel):
    uri: str
    sha256: str
    rows: int
    columns: list[str]


class Metric(BaseModel):
    name: str
    greater_is_better: bool


class GoldenSample(BaseModel):
    """Held-out rows as a client sends them, with the trained pipeline's own outputs: the serving runtime must
    reproduce them before a version is served."""

    instances: list[dict[str, Any]]
    predictions: list[Label]
    probabilities: list[list[float]] | None = None


class RuntimeSupport(BaseModel):
    """Whether a serving runtime can serve this version, and why not."""

    supported: bool
    artifact: str | None = None
    detail: str | None = None
    # ONNX operator sets the graph needs (domain → version): what an ONNX Runtime must support to serve it.
    opset: dict[str, int] | None = None


class Agreement(BaseModel):
    """How closely a serving runtime reproduced the trained pipeline on a set of rows."""

    rows: int
    # Rows whose answer differs beyond the serving self-test's tolerance: another class or probabilities
    # further apart than it allows (classification), a value further apart (regression).
    disagreements: int
    # Classification: of those, the rows given another class.
    different_classes: int | None = None
    # Classification: rows given another class where the pipeline's own top probabilities tie (it took the
    # first class, the runtime whichever its float32 rounding favoured); not disagreements.
    ties: int = 0
    # The largest difference in any probability (classification) or predicted value (regression).
    max_difference: float
    # Of the disagreeing rows, those with a missing number (a tree model's usual cause: see RuntimeParity.cause).
    disagreements_with_missing_numbers: int = 0

    @property
    def share(self) -> float:
        return self.disagreements / self.rows if self.rows else 0.0

    def describe(self, what: str) -> str:
        """`20 golden rows: all agree` / `600 held-out rows: 18 disagree (3.0%), ...`, the difference named."""
        ties = f", {self.ties:,} tied between classes and broken the other way" if self.ties else ""
        if not self.disagreements:
            return f"{self.rows:,} {what} rows: all agree (largest difference {self.max_difference:.2g}{ties})"
        missing = (
            f", {self.disagreements_with_missing_numbers} of them with a missing number"
            if self.disagreements_with_missing_numbers
            else ""
        )
        classes = f"{self.different_classes:,} with another class, " if self.different_classes is not None else ""
        return (
            f"{self.rows:,} {what} rows: {self.disagreements:,} disagree ({self.share:.1%}: {classes}"
            f"largest difference {self.max_difference:.2g}{missing}{ties})"
        )


class RuntimeParity(BaseModel):
    """Whether a serving runtime reproduces the trained pipeline, measured at training time through the serving
    code on the golden rows and on the held-out rows. `exact` is what `RuntimeSupport.supported` follows."""

    exact: bool
    golden: Agreement | None = None
    held_out: Agreement | None = None
    # Why they differ, when they do (the usual cause for this kind of pipeline) and how to make it exact.
    cause: str | None = None
    # The runtime could not be measured (it does not load, or did not predict): why.
    error: str | None = None

    def describe(self) -> str:
        parts = [
            agreement.describe(what)
            for what, agreement in (("golden", self.golden), ("held-out", self.held_out))
            if agreement is not None
        ]
        if self.error:
            parts.append(self.error)
        verdict = "reproduces the pipeline" if self.exact else "does NOT reproduce the pipeline"
        return f"{verdict}: " + "; ".join(parts) + (f"; usual cause: {self.cause}" if self.cause else "")


class Comparison(BaseModel):
    """The champion this version was compared with, on the same held-out rows."""

    version: int
    metrics: dict[str, float]


class FeatureImportance(BaseModel):
    """How much the held-out score drops when one input column is shuffled (permutation importance)."""

    feature: str
    mean: float
    std: float


class HeldOutEvaluation(BaseModel):
    """What the model report shows about a version without retraining it, computed at training time on the
    held-out rows: a confusion matrix (classification) or a sample of (actual, predicted) pairs (regression),
    and the permutation importance of each input column."""

    rows: int
    # Classification: counts, rows = true class, columns = predicted class, both in the order of `labels`.
    labels: list[Label] | None = None
    confusion: list[list[int]] | None = None
    # Regression: a fixed-seed sample of held-out rows (at most a few hundred).
    actual: list[float] | None = None
    predicted: list[float] | None = None
    importance_metric: str | None = None
    importance_repeats: int = 0
    importance_rows: int = 0
    importance: list[FeatureImportance] = Field(default_factory=list)


class ManifestSignature(BaseModel):
    """Who published the version: a signature by the store's signing key (an AWS KMS asymmetric key) over the
    manifest's name, version and checksum (sklambda.signing). Not covered by the checksum it signs."""

    key_id: str
    algorithm: str
    value: str = Field(description="base64 of the signature bytes")


# Fields added after manifests were first written: left out of the stored JSON and of the checksum while unset,
# so that every manifest written before them still verifies.
ADDED_LATER = frozenset({"held_out", "parity", "signature"})
# Fields the checksum never covers: the checksum itself, and the signature made over it.
_NOT_CHECKSUMMED = frozenset({"manifest_sha256", "signature"})


class Manifest(BaseModel):
    schema_version: int = 1
    name: str
    version: int
    created_at: str = Field(default_factory=utc_now)
    task: Task
    target: str
    estimator: str
    data: DataFingerprint
    contract: DataContract
    metric: Metric
    metrics: dict[str, float]
    classes: list[Label] | None = None
    golden: GoldenSample
    runtimes: dict[str, RuntimeSupport]
    libraries: dict[str, str]
    code_version: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    compared_with: Comparison | None = None
    held_out: HeldOutEvaluation | None = None
    # Per serving runtime, measured at training time (versions trained before this was recorded: None).
    parity: dict[str, RuntimeParity] | None = None
    artifacts: dict[str, str] = Field(default_factory=dict, description="file name → sha256")
    manifest_sha256: str | None = None
    signature: ManifestSignature | None = None

    def _unset_later_fields(self) -> set[str]:
        return {name for name in ADDED_LATER if getattr(self, name) is None}

    def body_sha256(self) -> str:
        body = self.model_dump(mode="json", exclude={*_NOT_CHECKSUMMED, *self._unset_later_fields()})
        return sha256_hex(canonical_json(body))

    def sealed(self) -> bytes:
        """The bytes to store: the manifest with its own checksum filled in."""
        sealed = self.model_copy(update={"manifest_sha256": self.body_sha256()})
        return canonical_json(sealed.model_dump(mode="json", exclude=self._unset_later_fields()))

    @property
    def primary_metric(self) -> float:
        return self.metrics[self.metric.name]


GateVerdict = Literal["pending", "passed"]


class StatusRecord(BaseModel):
    """A version's lifecycle state, the one mutable file of a version (the alias records what serves)."""

    status: VersionStatus
    reason: str
    updated_at: str = Field(default_factory=utc_now)
    by: str = "unknown"
    # Set by retention before it deletes the version's files: such a version can no longer be promoted.
    deleted: bool = False
    # A candidate's gate verdict: "pending" from publish until the pipeline records "passed" (a failed gate makes
    # the version "rejected"). A pending candidate cannot be promoted: its run may have died before the verdict.
    # None: a status written before verdicts were recorded (promotable, as it was then).
    gate: GateVerdict | None = None


class VersionClaim(BaseModel):
    """Written create-only to take a version number; tells retention how old an abandoned publish is."""

    claimed_at: str = Field(default_factory=utc_now)


class AliasMove(BaseModel):
    from_version: int | None
    to_version: int
    at: str = Field(default_factory=utc_now)
    by: str
    reason: str
    kind: Literal["promote", "rollback"] = "promote"


class AliasRecord(BaseModel):
    """One alias. `previous` is the stack that rollback pops; `history` is the audit trail of every move.
    Both change in the same compare-and-swap write as `version`, so they can never disagree with it."""

    alias: str
    version: int
    previous: list[int] = Field(default_factory=list)
    history: list[AliasMove] = Field(default_factory=list)
