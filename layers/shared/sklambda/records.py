"""The stored records the predict path reads, without pydantic: the alias, and a version's manifest as serving
sees it (`ServedManifest`).

Why not the pydantic `Manifest` (sklambda.manifest): importing pydantic and building its record classes was
~250 ms of CPU in the predict function's cold start, more than ONNX Runtime's import. These records are plain
dataclasses, the same ones the pydantic `Manifest` holds (one definition), read from JSON by msgspec (a
well-kept library that validates them by their annotations, as pydantic does, in microseconds, and imports in
a few milliseconds).

A served manifest is verified as `ModelStore.manifest` verifies the pydantic one: its checksum, then the model
name and version it was stored under. The checksum is computed over the stored JSON itself (less the checksum,
the signature, and a later field stored as null), which is the pydantic `Manifest.body_sha256` of every
manifest the store writes (tests/unit/test_records.py compares them); it never needs the fields serving does
not read, so those need no second definition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import orjson

from sklambda.contract import DataContract, Label, Task
from sklambda.errors import IntegrityError

if TYPE_CHECKING:
    from sklambda.manifest import Manifest


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


@dataclass(kw_only=True)
class GoldenSample:
    """Held-out rows as a client sends them, with the trained pipeline's own outputs: the serving runtime must
    reproduce them before a version is served."""

    instances: list[dict[str, Any]]
    predictions: list[Label]
    probabilities: list[list[float]] | None = None


@dataclass(kw_only=True)
class RuntimeSupport:
    """Whether a serving runtime can serve this version, and why not."""

    supported: bool
    artifact: str | None = None
    detail: str | None = None
    # ONNX operator sets the graph needs (domain → version): what an ONNX Runtime must support to serve it.
    opset: dict[str, int] | None = None


@dataclass(kw_only=True)
class ManifestSignature:
    """Who published the version: a signature by the store's signing key (an AWS KMS asymmetric key) over the
    manifest's name, version and checksum (sklambda.signing). Not covered by the checksum it signs."""

    key_id: str
    algorithm: str
    # base64 of the signature bytes
    value: str


@dataclass(kw_only=True)
class AliasMove:
    from_version: int | None
    to_version: int
    at: str = field(default_factory=utc_now)
    by: str
    reason: str
    kind: Literal["promote", "rollback"] = "promote"


@dataclass(kw_only=True)
class AliasRecord:
    """One alias. `previous` is the stack that rollback pops; `history` is the audit trail of every move.
    Both change in the same compare-and-swap write as `version`, so they can never disagree with it."""

    alias: str
    version: int
    previous: list[int] = field(default_factory=list)
    history: list[AliasMove] = field(default_factory=list)


# Fields added after manifests were first written: left out of the stored JSON and of the checksum while unset,
# so that every manifest written before them still verifies.
ADDED_LATER = frozenset({"held_out", "parity", "signature"})
# Fields the checksum never covers: the checksum itself, and the signature made over it.
NOT_CHECKSUMMED = frozenset({"manifest_sha256", "signature"})


@dataclass(kw_only=True)
class ServedManifest:
    """What serving reads of a stored manifest: enough to load, self-test and answer for the version. Everything
    else (metrics, lineage, evaluation) stays in the stored bytes, read by pydantic's `Manifest` when asked for
    (GET /model: `served.full()`)."""

    name: str
    version: int
    task: Task
    target: str
    contract: DataContract
    classes: list[Label] | None = None
    golden: GoldenSample
    runtimes: dict[str, RuntimeSupport]
    artifacts: dict[str, str] = field(default_factory=dict)
    manifest_sha256: str | None = None
    signature: ManifestSignature | None = None
    # Not in the JSON: the stored bytes (for `full`) and the checksum computed over them (for a signature check).
    stored: bytes = field(default=b"", repr=False)
    computed_sha256: str = ""

    def body_sha256(self) -> str:
        """The checksum of the stored body, as `Manifest.body_sha256` computes it (what a signature signs)."""
        return self.computed_sha256

    def full(self) -> Manifest:
        """The whole manifest as pydantic's `Manifest` (imports pydantic: not for the request path)."""
        from sklambda.manifest import Manifest

        return Manifest.model_validate_json(self.stored)


_MANIFEST_DECODER = msgspec.json.Decoder(dict[str, Any])


def read_served_manifest(data: bytes, *, name: str, version: int) -> ServedManifest:
    """A stored manifest's bytes as serving reads them: IntegrityError unless they parse, match their own
    checksum, and describe `name` v`version` (a manifest copied from elsewhere verifies on its own)."""
    try:
        stored = _MANIFEST_DECODER.decode(data)
        body = {
            key: value
            for key, value in stored.items()
            if key not in NOT_CHECKSUMMED and not (value is None and key in ADDED_LATER)
        }
        computed = sha256_hex(canonical_json(body))
        # The fields ServedManifest declares, its two computed ones excluded (a stored manifest cannot set them).
        served = msgspec.convert({key: stored[key] for key in _SERVED_FIELDS & stored.keys()}, ServedManifest)
    except (msgspec.ValidationError, msgspec.DecodeError, orjson.JSONEncodeError) as error:
        raise IntegrityError(f"manifest of {name} v{version} is unreadable: {error}") from None
    check_verified(name, version, served.manifest_sha256, computed, served.name, served.version)
    served.stored = data
    served.computed_sha256 = computed
    return served


_SERVED_FIELDS = frozenset(ServedManifest.__dataclass_fields__) - {"stored", "computed_sha256"}


def check_verified(
    name: str, version: int, recorded_sha256: str | None, computed_sha256: str, described_name: str, described: int
) -> None:
    """IntegrityError unless a manifest read from `name` v`version` matches its recorded checksum and describes
    that very version: both readers (this one, and `ModelStore.manifest` with pydantic) refuse alike."""
    if recorded_sha256 != computed_sha256:
        raise IntegrityError(f"manifest of {name} v{version} does not match its checksum")
    if described_name != name or described != version:
        # A manifest copied from elsewhere (another model, an older version) verifies on its own: refuse it.
        raise IntegrityError(
            f"the manifest stored as {name} v{version} describes {described_name} v{described}; refused"
        )


def read_alias(data: bytes) -> AliasRecord:
    """A stored alias record; ValueError if it does not parse (as pydantic's ValidationError is one)."""
    try:
        return msgspec.json.decode(data, type=AliasRecord)
    except msgspec.DecodeError as error:
        raise ValueError(f"the alias record does not parse: {error}") from None
