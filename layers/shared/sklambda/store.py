"""The model store: immutable model versions, checksummed manifests and compare-and-swap aliases.

Layout under the store root (a local folder or s3://bucket/prefix), per model name:

    <name>/versions/000001/claim.json       the version number and when it was taken (a create-only write)
    <name>/versions/000001/model.onnx       artifacts (named model.*), each written create-only (never overwritten)
    <name>/versions/000001/model.joblib
    <name>/versions/000001/manifest.json    written last, with the sha256 of every artifact and of itself, and
                                            (when the store has a signing key) the publisher's signature
    <name>/versions/000001/status.json      candidate / promoted / rejected / retired, with the reason
    <name>/aliases/champion.json            version served under this alias, rollback stack, move history

A version exists for readers only once its manifest is there and verifies, so a crash at any point leaves no
version that looks complete but is not. Aliases move by compare-and-swap on the alias object's etag.

In the cloud, the bucket policy holds S3 to the same rules (template.yaml, ModelBucketPolicy): only the stack's
publishing roles may write under the models prefix, version files only with If-None-Match, aliases and locks only
with If-Match or If-None-Match. Signatures (sklambda.signing) cover what a policy cannot: a pickled artifact loads
only if a publisher signed its manifest.

Deleting a version (retention) runs the other way round: its status becomes a "deleted" tombstone first, then the
manifest goes (the version stops existing for readers), then its artifacts. claim.json and status.json stay, so
the number is never reused and the record of why the version went remains.

What the predict function reads (aliases, served manifests, artifacts) goes through sklambda.records, without
pydantic: the pydantic records (sklambda.manifest) are imported by the methods that write or fully read them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sklambda.errors import (
    AliasConflict,
    IntegrityError,
    InvalidName,
    NotFound,
    PreconditionFailed,
    VersionRefused,
)
from sklambda.locations import open_object_store
from sklambda.objects import ObjectStore
from sklambda.records import (
    AliasMove,
    AliasRecord,
    ServedManifest,
    canonical_json,
    check_verified,
    read_alias,
    read_served_manifest,
    sha256_hex,
)

if TYPE_CHECKING:
    from sklambda.manifest import Manifest, StatusRecord, VersionClaim
    from sklambda.settings import StoreSettings
    from sklambda.signing import ManifestSigning

MANIFEST = "manifest.json"
STATUS = "status.json"
CLAIM = "claim.json"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Artifacts are named model.<kind>: the bucket policy makes `versions/*/model.*` create-only, by name.
ARTIFACT_PREFIX = "model."
# Artifacts whose loading runs code from the file (unpickling): loaded only after the manifest's signature
# verifies, when the store has a signing key.
CODE_ARTIFACT_SUFFIXES = (".joblib", ".pkl", ".pickle")
_MAX_VERSION_CLAIMS = 50
_MAX_HISTORY = 500
# Rollback can step back this many promotions. Bounded because every version on a rollback stack is protected
# from retention: an unbounded stack would keep every version ever promoted.
MAX_ROLLBACK_DEPTH = 10
# Sentinel for "read the alias now" (None already means "the alias must not exist yet").
_READ_NOW = object()


def check_name(kind: str, value: str) -> str:
    if not _NAME_PATTERN.match(value):
        raise InvalidName(f"invalid {kind} {value!r}: use letters, digits, '.', '_' or '-' (at most 128)")
    return value


@dataclass(frozen=True)
class AliasState:
    record: AliasRecord
    etag: str


class ModelStore:
    def __init__(self, objects: ObjectStore, *, signing: ManifestSigning | None = None) -> None:
        self.objects = objects
        # None: manifests are neither signed nor verified (a laptop store without a key).
        self.signing = signing

    @classmethod
    def from_uri(cls, uri: str, *, signing: ManifestSigning | None = None) -> ModelStore:
        return cls(open_object_store(uri), signing=signing)

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> ModelStore:
        """The store the settings name, signing and verifying with their KMS key when one is configured."""
        if not settings.manifest_signing_key:
            return cls.from_uri(settings.model_store_uri)
        from sklambda.signing import kms_signing  # only where a key is configured

        signing = kms_signing(settings.manifest_signing_key, required=settings.manifest_signatures == "required")
        return cls.from_uri(settings.model_store_uri, signing=signing)

    @property
    def uri(self) -> str:
        return self.objects.uri()

    # ------------------------------------------------------------------ keys

    @staticmethod
    def _version_key(name: str, version: int, file: str = "") -> str:
        return f"{check_name('model name', name)}/versions/{version:06d}/{file}"

    @staticmethod
    def _alias_key(name: str, alias: str) -> str:
        return f"{check_name('model name', name)}/aliases/{check_name('alias', alias)}.json"

    @staticmethod
    def _aliases_prefix(name: str) -> str:
        return f"{check_name('model name', name)}/aliases/"

    # ------------------------------------------------------------------ versions

    def publish(self, manifest: Manifest, files: dict[str, bytes], *, awaiting_gate: bool = False) -> Manifest:
        """Store a new version: take the next number, write every file create-only, then the sealed manifest.

        `manifest.version` and `manifest.artifacts` are filled in here. Returns the stored manifest.
        `awaiting_gate`: the version is a candidate a gate still has to judge; it cannot be promoted until
        `record_gate_passed` (a run that dies before its verdict leaves an unpromotable candidate).
        """
        from sklambda.manifest import Manifest, StatusRecord

        if MANIFEST in files:
            raise ValueError(f"{MANIFEST} is written by the store, not passed as a file")
        for file in files:
            if not check_name("file", file).startswith(ARTIFACT_PREFIX):
                raise InvalidName(f"artifact {file!r}: artifacts are named {ARTIFACT_PREFIX}<kind> (e.g. model.onnx)")
        version = self._claim_version(manifest.name)
        for file, data in files.items():
            self.objects.put(
                self._version_key(manifest.name, version, check_name("file", file)), data, if_none_match=True
            )
        stored = manifest.model_copy(
            update={"version": version, "artifacts": {file: sha256_hex(data) for file, data in files.items()}}
        )
        if self.signing is not None:
            stored = self.signing.sign(stored)  # before any version file a reader could see completes it
        self.objects.put(
            self._version_key(manifest.name, version, STATUS),
            _dump(
                StatusRecord(status="candidate", reason="published; waiting for the gate's verdict", gate="pending")
                if awaiting_gate
                else StatusRecord(status="candidate", reason="published")
            ),
            if_none_match=True,
        )
        # The manifest goes last: from this write on, the version is complete and visible.
        sealed = stored.sealed()
        self.objects.put(self._version_key(manifest.name, version, MANIFEST), sealed, if_none_match=True)
        # Written create-only, so the stored bytes are exactly these: parsed here rather than read back.
        return Manifest.model_validate_json(sealed)

    def _claim_version(self, name: str) -> int:
        from sklambda.manifest import VersionClaim

        candidate = max(self._version_numbers(name, complete_only=False), default=0) + 1
        for _ in range(_MAX_VERSION_CLAIMS):
            try:
                self.objects.put(self._version_key(name, candidate, CLAIM), _dump(VersionClaim()), if_none_match=True)
                return candidate
            except PreconditionFailed:
                candidate += 1  # another writer took this number first
        raise PreconditionFailed(f"could not take a version number for {name} after {_MAX_VERSION_CLAIMS} tries")

    def _version_numbers(self, name: str, *, complete_only: bool) -> list[int]:
        prefix = f"{check_name('model name', name)}/versions/"
        numbers: set[int] = set()
        for key in self.objects.list(prefix):
            folder, _, file = key[len(prefix) :].partition("/")
            if folder.isdigit() and (file == MANIFEST or not complete_only):
                numbers.add(int(folder))
        return sorted(numbers)

    def versions(self, name: str) -> list[int]:
        """Version numbers whose manifest has been written (complete versions), oldest first."""
        return self._version_numbers(name, complete_only=True)

    def incomplete_versions(self, name: str) -> list[int]:
        """Version numbers that were started but never completed (a crashed or running publish); not loadable."""
        return [version for version, deleted in self._unlisted_versions(name) if not deleted]

    def deleted_versions(self, name: str) -> list[int]:
        """Version numbers deleted by retention (only their claim and tombstone status remain)."""
        return [version for version, deleted in self._unlisted_versions(name) if deleted]

    def _unlisted_versions(self, name: str) -> list[tuple[int, bool]]:
        complete = set(self.versions(name))
        started = [v for v in self._version_numbers(name, complete_only=False) if v not in complete]
        return [(version, self.status(name, version).deleted) for version in started]

    def version_files(self, name: str, version: int) -> list[str]:
        """The file names stored under a version's folder, complete or not."""
        prefix = self._version_key(name, version)
        return [key[len(prefix) :] for key in self.objects.list(prefix)]

    def claim(self, name: str, version: int) -> VersionClaim | None:
        """When the version number was taken (None if unknown: a claim written before claims carried a time)."""
        from pydantic import ValidationError

        from sklambda.manifest import VersionClaim

        try:
            claim = VersionClaim.model_validate_json(self.objects.get(self._version_key(name, version, CLAIM)).data)
        except (NotFound, ValidationError):
            return None
        return claim

    def models(self) -> list[str]:
        return sorted({key.split("/", 1)[0] for key in self.objects.list("") if "/versions/" in key})

    def manifest(self, name: str, version: int) -> Manifest:
        """The version's manifest, verified against its own checksum. NotFound if the version is incomplete."""
        from pydantic import ValidationError

        from sklambda.manifest import Manifest

        blob = self._manifest_bytes(name, version)
        try:
            manifest = Manifest.model_validate_json(blob)
        except ValidationError as error:
            raise IntegrityError(f"manifest of {name} v{version} is unreadable: {error.error_count()} errors") from None
        check_verified(name, version, manifest.manifest_sha256, manifest.body_sha256(), manifest.name, manifest.version)
        return manifest

    def served_manifest(self, name: str, version: int) -> ServedManifest:
        """What serving reads of the version's manifest, verified as `manifest` verifies it, without pydantic
        (sklambda.records): the predict function's path. NotFound if the version is incomplete."""
        return read_served_manifest(self._manifest_bytes(name, version), name=name, version=version)

    def _manifest_bytes(self, name: str, version: int) -> bytes:
        try:
            return self.objects.get(self._version_key(name, version, MANIFEST)).data
        except NotFound:
            raise NotFound(f"model {name} has no version {version}") from None

    def start_reading(self, name: str, version: int, file: str) -> Callable[[], bytes]:
        """Start reading a version's file in a background thread, for `artifact(..., read=...)`: the predict
        function's cold start then waits for the artifact's round trip to a remote store while the manifest's
        runs, not after it. Nothing read this way is trusted: `artifact` checks the signature and the sha256
        first, as for any read. The returned function waits for the bytes, or raises what the read raised."""
        outcome: list[bytes | Exception] = []

        def read() -> None:
            try:
                outcome.append(self.objects.get(self._version_key(name, version, file)).data)
            except Exception as error:  # re-raised by whoever asks for the bytes
                outcome.append(error)

        thread = threading.Thread(target=read, name=f"read-{file}", daemon=True)
        thread.start()

        def result() -> bytes:
            thread.join()
            if isinstance(outcome[0], Exception):
                raise outcome[0]
            return outcome[0]

        return result

    def artifact(
        self, manifest: Manifest | ServedManifest, file: str, *, read: Callable[[], bytes] | None = None
    ) -> bytes:
        """An artifact's bytes, refused unless they match the sha256 recorded in the manifest. `read`: the bytes of
        this very file (`start_reading(manifest.name, manifest.version, file)`) when they are already on their
        way."""
        expected = manifest.artifacts.get(file)
        if expected is None:
            raise NotFound(f"{manifest.name} v{manifest.version} has no artifact {file!r}")
        if self.signing is not None and file.endswith(CODE_ARTIFACT_SUFFIXES):
            # Unpickling runs code: only what a publisher signed (the signature covers this file's sha256).
            self.signing.verify(manifest)
        if read is None:
            data = self.objects.get(self._version_key(manifest.name, manifest.version, file)).data
        else:
            data = read()
        actual = sha256_hex(data)
        if actual != expected:
            raise IntegrityError(
                f"{manifest.name} v{manifest.version} {file}: sha256 {actual[:12]}… does not match "
                f"the manifest's {expected[:12]}…; refusing to load it"
            )
        return data

    def status(self, name: str, version: int) -> StatusRecord:
        from sklambda.manifest import StatusRecord

        try:
            return StatusRecord.model_validate_json(self.objects.get(self._version_key(name, version, STATUS)).data)
        except NotFound:
            return StatusRecord(status="candidate", reason="no status recorded")

    def set_status(self, name: str, version: int, record: StatusRecord) -> None:
        self.manifest(name, version)  # only complete versions have a status
        self.objects.put(self._version_key(name, version, STATUS), _dump(record))

    def record_gate_passed(self, name: str, version: int, *, by: str, reason: str) -> None:
        """The gate's verdict for a candidate: passed, so the version may be promoted (now or later). A failed
        gate sets the status "rejected" instead."""
        from sklambda.manifest import StatusRecord

        self.set_status(
            name, version, StatusRecord(status="candidate", reason=f"passed the gate: {reason}", by=by, gate="passed")
        )

    def delete_version(self, name: str, version: int) -> list[str]:
        """Delete a version's manifest, then its artifacts. Only a version whose status is already a deleted
        tombstone (`StatusRecord(deleted=True)`, written by retention after its checks) can be deleted.

        A crash leaves either a complete version marked deleted (promote refuses it; the next run deletes it) or
        an invisible version with leftover files (`purge_leftovers`). Returns the deleted file names."""
        status = self.status(name, version)
        if not status.deleted:
            raise VersionRefused(f"{name} v{version} is not marked deleted; only retention deletes versions")
        self.manifest(name, version)  # NotFound if already gone
        self.objects.delete(self._version_key(name, version, MANIFEST))
        return [MANIFEST, *self.purge_leftovers(name, version)]

    def purge_leftovers(self, name: str, version: int) -> list[str]:
        """Delete the files of a version that has no manifest (abandoned publish or interrupted deletion), keeping
        claim.json and status.json so that the number is never reused."""
        if self.objects.list(self._version_key(name, version, MANIFEST)):
            raise VersionRefused(f"{name} v{version} is complete; delete it with delete_version")
        removed = []
        for file in self.version_files(name, version):
            if file not in {CLAIM, STATUS}:
                self.objects.delete(self._version_key(name, version, file))
                removed.append(file)
        return removed

    # ------------------------------------------------------------------ aliases

    def alias(self, name: str, alias: str) -> AliasState | None:
        try:
            blob = self.objects.get(self._alias_key(name, alias))
        except NotFound:
            return None
        return AliasState(read_alias(blob.data), blob.etag)

    def aliases(self, name: str) -> dict[str, AliasRecord]:
        """Every alias of the model, by name."""
        prefix = self._aliases_prefix(name)
        found = {}
        for key in self.objects.list(prefix):
            alias = key[len(prefix) :].removesuffix(".json")
            if key.endswith(".json") and "/" not in alias:
                state = self.alias(name, alias)
                if state is not None:
                    found[alias] = state.record
        return found

    def alias_if_changed(self, name: str, alias: str, etag: str | None) -> AliasState | None:
        """The alias if it changed since `etag` (a cheap conditional read); None if unchanged.

        Raises NotFound when the alias does not exist."""
        blob = self.objects.get_if_changed(self._alias_key(name, alias), etag)
        if blob is None:
            return None
        return AliasState(read_alias(blob.data), blob.etag)

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str = "champion",
        by: str,
        reason: str,
        expected: AliasState | object | None = _READ_NOW,
        check: Callable[[Manifest], None] | None = None,
    ) -> AliasRecord:
        """Point `alias` at `version` with one compare-and-swap.

        `expected` is the alias state the caller based its decision on (the gate's champion); by default the
        alias is read now, before the check. If the alias moved since, AliasConflict is raised and nothing changes.
        `check` may refuse the version (e.g. the serving runtime's load + self-test) before anything is written.
        The version's status becomes "promoted" after the move.
        """
        from sklambda.manifest import StatusRecord

        manifest = self.manifest(name, version)
        self._refuse_unpromotable(name, version)
        current = self.alias(name, alias) if expected is _READ_NOW else expected
        if current is not None and not isinstance(current, AliasState):
            raise TypeError("expected must be an AliasState or None")
        if current is not None and current.record.version == version:
            return current.record
        if check is not None:
            check(manifest)
        # Read again just before the swap: the check can take seconds, and retention may have started to delete.
        self._refuse_unpromotable(name, version)
        move = AliasMove(
            from_version=current.record.version if current else None, to_version=version, by=by, reason=reason
        )
        if current is None:
            record = AliasRecord(alias=alias, version=version, history=[move])
        else:
            record = AliasRecord(
                alias=alias,
                version=version,
                previous=[*current.record.previous, current.record.version][-MAX_ROLLBACK_DEPTH:],
                history=[*current.record.history, move][-_MAX_HISTORY:],
            )
        etag = self._swap(name, alias, record, current)
        self._undo_if_deleted_meanwhile(name, alias, record, etag, current)
        self.objects.put(
            self._version_key(name, version, STATUS),
            _dump(StatusRecord(status="promoted", reason=f"promoted to {alias}: {reason}", by=by)),
        )
        return record

    def _refuse_unpromotable(self, name: str, version: int) -> None:
        status = self.status(name, version)
        if status.deleted:
            raise VersionRefused(f"{name} v{version} is being deleted ({status.reason}); it cannot be promoted")
        if status.status == "rejected":
            raise VersionRefused(f"{name} v{version} was rejected ({status.reason}); it cannot be promoted")
        if status.status == "candidate" and status.gate == "pending":
            raise VersionRefused(
                f"{name} v{version} has no gate verdict (its run stopped after publishing it, or is still gating); "
                "it cannot be promoted: train again, or wait for the run to finish"
            )

    def _undo_if_deleted_meanwhile(
        self, name: str, alias: str, record: AliasRecord, etag: str, before: AliasState | None
    ) -> None:
        """Retention marks a version deleted, then re-reads the aliases, then deletes. If our swap landed after its
        re-read, the mark is already there: put the alias back (by compare-and-swap) so it never names a deleted
        version."""
        status = self.status(name, record.version)
        if not status.deleted:
            return
        if before is None:
            # A new alias has nothing to go back to (and the roles that promote may not delete): it stays, naming
            # a version serving will refuse, as if the alias did not exist, until the next promotion replaces it.
            raise VersionRefused(
                f"{name} v{record.version} is being deleted ({status.reason}); promote another version to {alias!r}"
            )
        undo = AliasMove(
            from_version=record.version,
            to_version=before.record.version,
            by="model store",
            reason=f"undo: v{record.version} is being deleted by retention",
            kind="rollback",
        )
        restored = replace(before.record, history=[*record.history, undo][-_MAX_HISTORY:])
        self.objects.put(self._alias_key(name, alias), _dump(restored), if_match=etag)
        raise VersionRefused(f"{name} v{record.version} is being deleted ({status.reason}); {alias!r} was not moved")

    def rollback(
        self,
        name: str,
        *,
        alias: str = "champion",
        by: str,
        reason: str,
        check: Callable[[Manifest], None] | None = None,
        expected: AliasState | None = None,
        from_version: int | None = None,
    ) -> AliasRecord:
        """Point `alias` back at the version it served before the last promotion (pops the rollback stack).

        A compare-and-swap on the state the decision was made on: with `expected` (the alias state the caller
        judged), the swap happens only if the alias has not moved since, to the etag; with `from_version` (the
        version the caller believes is serving), only if the alias still points there. Otherwise AliasConflict
        is raised and nothing changes, so two callers deciding on one state roll back once, not twice.

        `check` may refuse the target (the serving runtime must still be able to load it). The version rolled
        back from becomes "retired", the target "promoted" again."""
        from sklambda.manifest import StatusRecord

        current = self.alias(name, alias) if expected is None else expected
        if current is None:
            raise NotFound(f"alias {alias!r} of {name} does not exist; nothing to roll back")
        if from_version is not None and current.record.version != from_version:
            raise AliasConflict(
                f"alias {alias!r} of {name} serves v{current.record.version}, not v{from_version}: it moved since the "
                "rollback was decided (perhaps this very rollback, retried); nothing was changed"
            )
        if not current.record.previous:
            raise VersionRefused(f"alias {alias!r} of {name} has no previous version to roll back to")
        target = current.record.previous[-1]
        manifest = self.manifest(name, target)  # the target must still be a complete, verifiable version
        if check is not None:
            check(manifest)
        record = AliasRecord(
            alias=alias,
            version=target,
            previous=current.record.previous[:-1],
            history=[
                *current.record.history,
                AliasMove(
                    from_version=current.record.version, to_version=target, by=by, reason=reason, kind="rollback"
                ),
            ][-_MAX_HISTORY:],
        )
        self._swap(name, alias, record, current)
        left = current.record.version
        self.objects.put(
            self._version_key(name, left, STATUS),
            _dump(StatusRecord(status="retired", reason=f"rolled back from {alias}: {reason}", by=by)),
        )
        self.objects.put(
            self._version_key(name, target, STATUS),
            _dump(StatusRecord(status="promoted", reason=f"{alias} again after rolling back v{left}: {reason}", by=by)),
        )
        return record

    def _swap(self, name: str, alias: str, record: AliasRecord, current: AliasState | None) -> str:
        try:
            if current is None:
                return self.objects.put(self._alias_key(name, alias), _dump(record), if_none_match=True)
            return self.objects.put(self._alias_key(name, alias), _dump(record), if_match=current.etag)
        except PreconditionFailed:
            raise AliasConflict(
                f"alias {alias!r} of {name} was moved by someone else meanwhile; nothing was changed. "
                "Read the alias again and retry if the move still makes sense."
            ) from None


def _dump(record: AliasRecord | StatusRecord | VersionClaim) -> bytes:
    # orjson writes a dataclass (AliasRecord) as its fields, as pydantic's dump does a model's.
    return canonical_json(record if isinstance(record, AliasRecord) else record.model_dump(mode="json"))
