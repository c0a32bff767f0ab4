"""What the store records about a model version (manifest) and about an alias (its record and history).

A manifest is written once, after every artifact file, and carries the sha256 of each file and of itself:
a version whose manifest is missing or does not verify is not a version.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sklambda.contract import DataContract, Label, Task
from sklambda.records import (
    ADDED_LATER,
    NOT_CHECKSUMMED,
    AliasMove,
    AliasRecord,
    GoldenSample,
    ManifestSignature,
    RuntimeSupport,
    canonical_json,
    sha256_hex,
    utc_now,
)

VersionStatus = Literal["candidate", "promoted", "rejected", "retired"]


class DataFingerprint(BaseModel):
    uri: str
    sha256: str
    rows: int
    columns: list[str]


class Metric(BaseModel):
    name: str
    greater_is_better: bool


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


class Manifest(BaseModel):
    # The records it holds that serving also reads (contract, golden sample, runtimes, signature) are plain
    # dataclasses (sklambda.records): validated again whenever a manifest is built, as models would be.
    model_config = ConfigDict(revalidate_instances="always")

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
        body = self.model_dump(mode="json", exclude={*NOT_CHECKSUMMED, *self._unset_later_fields()})
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


# Defined in sklambda.records (serving reads them without pydantic), named here too for the writers.
__all__ = [
    "ADDED_LATER",
    "Agreement",
    "AliasMove",
    "AliasRecord",
    "Comparison",
    "DataFingerprint",
    "FeatureImportance",
    "GateVerdict",
    "GoldenSample",
    "HeldOutEvaluation",
    "Manifest",
    "ManifestSignature",
    "Metric",
    "RuntimeParity",
    "RuntimeSupport",
    "StatusRecord",
    "VersionClaim",
    "VersionStatus",
    "canonical_json",
    "sha256_hex",
    "utc_now",
]
