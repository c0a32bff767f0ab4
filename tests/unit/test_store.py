"""The model store's guarantees, run against both backends (local folder and S3 under moto)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from sklambda import aws
from sklambda.aws import KmsSigningKey
from sklambda.contract import DataContract, Feature
from sklambda.errors import AliasConflict, IntegrityError, NotFound, VersionRefused
from sklambda.manifest import (
    DataFingerprint,
    GoldenSample,
    Manifest,
    Metric,
    RuntimeSupport,
    StatusRecord,
    sha256_hex,
)
from sklambda.objects import Blob, ObjectStore
from sklambda.signing import ManifestSigning
from sklambda.store import ModelStore

pytestmark = pytest.mark.unit


def make_manifest(name: str = "demo", accuracy: float = 0.9) -> Manifest:
    contract = DataContract(
        features=[Feature(name="x", kind="numeric", value_type="number", nullable=False)],
        target="y",
        task="classification",
        classes=["a", "b"],
    )
    return Manifest(
        name=name,
        version=0,
        task="classification",
        target="y",
        estimator="test",
        data=DataFingerprint(uri="memory://", sha256="0" * 64, rows=10, columns=["x", "y"]),
        contract=contract,
        metric=Metric(name="accuracy", greater_is_better=True),
        metrics={"accuracy": accuracy},
        classes=["a", "b"],
        golden=GoldenSample(instances=[{"x": 1.0}], predictions=["a"]),
        runtimes={"onnx": RuntimeSupport(supported=False, detail="test")},
        libraries={"python": "3.12"},
    )


def test_publish_assigns_increasing_versions_and_records_checksums(store: ModelStore) -> None:
    # Given / When: two versions published
    first = store.publish(make_manifest(), {"model.bin": b"one"})
    second = store.publish(make_manifest(), {"model.bin": b"two"})

    # Then: numbered 1 and 2, each with the sha256 of its file and a verified manifest
    assert (first.version, second.version) == (1, 2)
    assert store.versions("demo") == [1, 2]
    assert first.artifacts == {"model.bin": "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"}
    assert store.artifact(second, "model.bin") == b"two"
    assert store.status("demo", 1).status == "candidate"


class RecordingObjects:
    """An ObjectStore that records each write's key and condition."""

    def __init__(self, inner: ObjectStore, hide_from_listing: str = "") -> None:
        self.inner = inner
        self.hide_from_listing = hide_from_listing
        self.writes: list[tuple[str, str | None, bool]] = []

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        self.writes.append((key, if_match, if_none_match))
        return self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)

    def uri(self, key: str = "") -> str:
        return self.inner.uri(key)

    def get(self, key: str) -> Blob:
        return self.inner.get(key)

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        return self.inner.get_if_changed(key, etag)

    def list(self, prefix: str) -> list[str]:
        # A listing that lags behind (another publisher's claim not visible yet), when asked to hide one
        listed = self.inner.list(prefix)
        return [key for key in listed if not (self.hide_from_listing and key.startswith(self.hide_from_listing))]

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_versions_are_never_overwritten(store: ModelStore) -> None:
    # Given v1, published by another publisher whose claim this one's listing does not show yet
    original = store.publish(make_manifest(), {"model.bin": b"one"})
    recording = RecordingObjects(store.objects, hide_from_listing="demo/versions/000001/")
    racing = ModelStore(recording)

    # When this publisher publishes, believing number 1 is free
    second = racing.publish(make_manifest(), {"model.bin": b"two"})

    # Then it lost the claim on 1 and took 2, v1's bytes are untouched...
    assert second.version == 2
    assert store.artifact(store.manifest("demo", 1), "model.bin") == b"one"
    assert store.manifest("demo", 1) == original
    # ...and every write of a version file it made was create-only (the status file is the one mutable file)
    version_files = [(key, if_none_match) for key, _, if_none_match in recording.writes if "/versions/" in key]
    assert version_files
    assert all(if_none_match for _, if_none_match in version_files), version_files
    # A writer that does not send If-None-Match is stopped by the bucket policy in the cloud (tests/template);
    # should one get through, its bytes are refused on read (test_tampered_artifact_is_refused, and signatures:
    # tests/unit/test_signing.py).


def test_a_version_without_manifest_is_not_listed(store: ModelStore) -> None:
    # Given a publish that crashed after writing its artifact, before its manifest
    store.publish(make_manifest(), {"model.bin": b"one"})
    store.objects.put("demo/versions/000002/claim.json", b"{}", if_none_match=True)
    store.objects.put("demo/versions/000002/model.bin", b"half", if_none_match=True)

    # Then it is not a version, and the next publish does not reuse its number
    assert store.versions("demo") == [1]
    assert store.incomplete_versions("demo") == [2]
    with pytest.raises(NotFound):
        store.manifest("demo", 2)
    assert store.publish(make_manifest(), {"model.bin": b"three"}).version == 3


def test_tampered_artifact_is_refused(store: ModelStore) -> None:
    # Given a published version whose artifact bytes are later changed in place
    manifest = store.publish(make_manifest(), {"model.bin": b"original"})
    store.objects.put("demo/versions/000001/model.bin", b"tampered")

    # Then loading it is refused
    with pytest.raises(IntegrityError, match="does not match"):
        store.artifact(manifest, "model.bin")


def test_an_artifact_read_ahead_of_its_manifest_is_checked_like_any_read(store: ModelStore) -> None:
    # Given a published version (the predict function starts reading its artifact before its manifest)
    manifest = store.publish(make_manifest(), {"model.bin": b"original"})
    # When its bytes come from a read started ahead
    ahead = store.start_reading("demo", manifest.version, "model.bin")
    # Then they are the artifact's
    assert store.artifact(manifest, "model.bin", read=ahead) == b"original"
    # And bytes changed in place are refused all the same
    store.objects.put("demo/versions/000001/model.bin", b"tampered")
    with pytest.raises(IntegrityError, match="does not match"):
        store.artifact(manifest, "model.bin", read=store.start_reading("demo", manifest.version, "model.bin"))
    # And a read that failed raises its own error when the bytes are asked for
    missing = store.start_reading("demo", 7, "model.bin")
    with pytest.raises(NotFound):
        missing()


def test_an_edited_manifest_that_was_not_resealed_fails_its_checksum(store: ModelStore) -> None:
    # Given a manifest edited after publish (metrics inflated), without recomputing its checksum
    store.publish(make_manifest(), {"model.bin": b"x"})
    blob = store.objects.get("demo/versions/000001/manifest.json")
    store.objects.put("demo/versions/000001/manifest.json", blob.data.replace(b'"accuracy":0.9', b'"accuracy":1.0'))

    # Then it no longer verifies
    with pytest.raises(IntegrityError, match="checksum"):
        store.manifest("demo", 1)


@pytest.fixture
def signing_key(aws_mock: None) -> Iterator[KmsSigningKey]:
    aws.kms_client.cache_clear()
    kms = boto3.client("kms", region_name="us-east-1")
    yield KmsSigningKey(kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"])
    aws.kms_client.cache_clear()


def test_tampered_manifest_is_refused(store: ModelStore, signing_key: KmsSigningKey) -> None:
    # Given a version published by a store that signs
    signed = ModelStore(store.objects, signing=ManifestSigning(signing_key))
    signed.publish(make_manifest(), {"model.joblib": b"pickle"})

    # When someone with write access replaces the pickle and re-seals the manifest (its checksum recomputed)
    tampered = signed.manifest("demo", 1).model_copy(
        update={"artifacts": {"model.joblib": sha256_hex(b"evil")}, "metrics": {"accuracy": 1.0}}
    )
    store.objects.put("demo/versions/000001/model.joblib", b"evil")
    store.objects.put(
        "demo/versions/000001/manifest.json", tampered.model_copy(update={"manifest_sha256": None}).sealed()
    )

    # Then the checksum alone cannot tell (it proves integrity, not authorship)...
    reread = signed.manifest("demo", 1)
    assert reread.metrics == {"accuracy": 1.0}
    # ...but the signature does: the pickle is refused before anything loads it
    with pytest.raises(IntegrityError, match="signature does not verify"):
        signed.artifact(reread, "model.joblib")


def test_promote_and_rollback_keep_a_history(store: ModelStore) -> None:
    # Given three versions, v1 then v3 promoted
    for _ in range(3):
        store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="tester", reason="first")
    store.promote("demo", 3, by="tester", reason="better")

    # When the alias is rolled back
    record = store.rollback("demo", by="tester", reason="alarm")

    # Then it serves v1 again, and the history shows every move in order
    state = store.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 1 == record.version
    moves = [(move.from_version, move.to_version, move.kind) for move in state.record.history]
    assert moves == [(None, 1, "promote"), (1, 3, "promote"), (3, 1, "rollback")]


def test_rollback_without_previous_version_changes_nothing(store: ModelStore) -> None:
    # Given an alias that was only ever moved once
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="tester", reason="first")
    before = store.alias("demo", "champion")

    # When / Then rollback fails clearly and the alias is untouched
    with pytest.raises(VersionRefused, match="no previous version"):
        store.rollback("demo", by="tester", reason="oops")
    assert store.alias("demo", "champion") == before


def test_promote_missing_or_rejected_version_is_refused(store: ModelStore) -> None:
    # Given v1 champion and a rejected v2
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="tester", reason="first")
    store.set_status("demo", 2, StatusRecord(status="rejected", reason="worse"))

    # When / Then: neither a missing nor a rejected version can be promoted; the alias stays on v1
    with pytest.raises(NotFound):
        store.promote("demo", 7, by="tester", reason="typo")
    with pytest.raises(VersionRefused, match="rejected"):
        store.promote("demo", 2, by="tester", reason="try")
    state = store.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 1


def test_stale_compare_and_swap_loses(store: ModelStore) -> None:
    # Given two writers that both read the alias at v1
    for _ in range(3):
        store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="tester", reason="first")
    seen = store.alias("demo", "champion")

    # When the first moves it to v2 and the second tries v3 from the same state
    store.promote("demo", 2, by="writer-1", reason="a", expected=seen)
    with pytest.raises(AliasConflict):
        store.promote("demo", 3, by="writer-2", reason="b", expected=seen)

    # Then exactly one move happened
    state = store.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 2
    assert [move.by for move in state.record.history] == ["tester", "writer-1"]


def test_creating_an_alias_twice_from_nothing_conflicts(store: ModelStore) -> None:
    # Given two first-ever promotions that both saw no alias
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="first", reason="a", expected=None)

    # Then the second loses
    with pytest.raises(AliasConflict):
        store.promote("demo", 2, by="second", reason="b", expected=None)


def test_alias_if_changed_is_cheap_when_unchanged(store: ModelStore) -> None:
    # Given an alias read once
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.publish(make_manifest(), {"model.bin": b"m"})
    store.promote("demo", 1, by="t", reason="r")
    first = store.alias_if_changed("demo", "champion", None)
    assert first is not None

    # Then a conditional read with its etag says "unchanged", and a move is noticed
    assert store.alias_if_changed("demo", "champion", first.etag) is None
    store.promote("demo", 2, by="t", reason="r")
    moved = store.alias_if_changed("demo", "champion", first.etag)
    assert moved is not None
    assert moved.record.version == 2


def test_invalid_names_are_refused(store: ModelStore) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        store.versions("../etc")
    with pytest.raises(ValueError, match="invalid alias"):
        store.alias("demo", "a/b")


# ------------------------------------------------------------------------------------------- registry guarantees


def publish_versions(store: ModelStore, count: int) -> None:
    for number in range(count):
        store.publish(make_manifest(), {"model.bin": f"model {number}".encode()})


def snapshot(store: ModelStore, name: str = "demo") -> dict[str, object]:
    """Everything a failed operation must leave unchanged: the alias (etag included) and every status."""
    return {
        "alias": store.alias(name, "champion"),
        "statuses": {v: store.status(name, v) for v in store.versions(name)},
    }


def test_any_alias_name_works_and_all_are_listed(store: ModelStore) -> None:
    # Given versions promoted to two different aliases
    publish_versions(store, 2)
    store.promote("demo", 1, alias="champion", by="t", reason="r")
    store.promote("demo", 2, alias="staging", by="t", reason="r")

    # Then each alias points at its own version and both are listed
    assert {alias: record.version for alias, record in store.aliases("demo").items()} == {"champion": 1, "staging": 2}


def test_promote_and_rollback_record_statuses_with_reasons(store: ModelStore) -> None:
    # Given v1 champion, then v2 promoted
    publish_versions(store, 2)
    store.promote("demo", 1, by="alice", reason="first")
    store.promote("demo", 2, by="bob", reason="better recall")
    assert store.status("demo", 2).model_dump(include={"status", "reason", "by"}) == {
        "status": "promoted",
        "reason": "promoted to champion: better recall",
        "by": "bob",
    }

    # When the alias is rolled back
    store.rollback("demo", by="carol", reason="alarm fired")

    # Then the version rolled back from is retired, and the target is promoted again, each with the reason
    left, back = store.status("demo", 2), store.status("demo", 1)
    assert (left.status, left.reason, left.by) == ("retired", "rolled back from champion: alarm fired", "carol")
    assert (back.status, back.by) == ("promoted", "carol")
    assert "alarm fired" in back.reason


def test_promote_refused_by_the_check_changes_nothing(store: ModelStore) -> None:
    # Given v1 champion and a v2 the serving runtime cannot load
    publish_versions(store, 2)
    store.promote("demo", 1, by="t", reason="first")
    before = snapshot(store)

    def refuse(manifest: Manifest) -> None:
        raise VersionRefused(f"v{manifest.version} failed its self-test")

    # When promoting v2 through that check
    with pytest.raises(VersionRefused, match="v2 failed its self-test"):
        store.promote("demo", 2, by="t", reason="try", check=refuse)

    # Then neither the alias (same etag) nor any status changed
    assert snapshot(store) == before


def test_failed_promotions_and_rollbacks_change_nothing(store: ModelStore) -> None:
    # Given v1 champion (never moved since) and a rejected v2
    publish_versions(store, 2)
    store.promote("demo", 1, by="t", reason="first")
    store.set_status("demo", 2, StatusRecord(status="rejected", reason="worse"))
    before = snapshot(store)

    # When promoting a missing version, a rejected one, and rolling back with no previous version
    with pytest.raises(NotFound, match="model demo has no version 9"):
        store.promote("demo", 9, by="t", reason="typo")
    with pytest.raises(VersionRefused, match=r"demo v2 was rejected \(worse\); it cannot be promoted"):
        store.promote("demo", 2, by="t", reason="try")
    with pytest.raises(VersionRefused, match="has no previous version to roll back to"):
        store.rollback("demo", by="t", reason="oops")
    # And rolling back an alias that does not exist
    with pytest.raises(NotFound, match="alias 'staging' of demo does not exist"):
        store.rollback("demo", alias="staging", by="t", reason="oops")

    # Then nothing changed, and no alias appeared
    assert snapshot(store) == before
    assert set(store.aliases("demo")) == {"champion"}


def test_rollback_stack_is_bounded(store: ModelStore) -> None:
    # Given more promotions than the rollback depth
    from sklambda.store import MAX_ROLLBACK_DEPTH

    publish_versions(store, MAX_ROLLBACK_DEPTH + 3)
    for version in store.versions("demo"):
        store.promote("demo", version, by="t", reason="next")

    # Then rollback can step back MAX_ROLLBACK_DEPTH promotions, and history still has every move
    state = store.alias("demo", "champion")
    assert state is not None
    assert state.record.previous == list(range(3, MAX_ROLLBACK_DEPTH + 3))
    assert len(state.record.history) == MAX_ROLLBACK_DEPTH + 3


def test_a_version_number_is_claimed_with_its_time(store: ModelStore) -> None:
    publish_versions(store, 1)
    claim = store.claim("demo", 1)
    assert claim is not None
    assert claim.claimed_at.endswith("Z")


def test_only_a_version_marked_deleted_can_be_deleted(store: ModelStore) -> None:
    # Given two versions
    publish_versions(store, 2)

    # When deleting one that was not marked first
    with pytest.raises(VersionRefused, match="not marked deleted"):
        store.delete_version("demo", 1)

    # Then it is still there; once marked, it goes, and only its claim and tombstone status remain
    assert store.versions("demo") == [1, 2]
    store.set_status("demo", 1, StatusRecord(status="retired", reason="retention", deleted=True))
    assert store.delete_version("demo", 1) == ["manifest.json", "model.bin"]
    assert store.versions("demo") == [2]
    assert store.deleted_versions("demo") == [1]
    assert store.incomplete_versions("demo") == []
    assert store.version_files("demo", 1) == ["claim.json", "status.json"]
    assert store.status("demo", 1).reason == "retention"
    # And its number is never reused
    assert store.publish(make_manifest(), {"model.bin": b"new"}).version == 3


def test_a_version_marked_deleted_cannot_be_promoted(store: ModelStore) -> None:
    # Given v1 champion and v2 marked deleted by retention (its files are still there)
    publish_versions(store, 2)
    store.promote("demo", 1, by="t", reason="first")
    store.set_status("demo", 2, StatusRecord(status="retired", reason="deleted by retention", deleted=True))
    before = snapshot(store)

    # Then promoting it is refused and nothing changes
    with pytest.raises(VersionRefused, match="is being deleted"):
        store.promote("demo", 2, by="t", reason="try")
    assert snapshot(store) == before


class _DeletesDuringSwap:
    """An object store that marks the promoted version deleted right after the alias write lands, as a
    retention run would if it marked the version between promote's last status read and its swap."""

    def __init__(self, store: ModelStore, version: int) -> None:
        self._inner = store.objects
        self._store = store
        self._version = version

    def __getattr__(self, attribute: str) -> object:
        return getattr(self._inner, attribute)

    def put(self, key: str, data: bytes, **conditions: object) -> str:
        etag = self._inner.put(key, data, **conditions)  # type: ignore[arg-type]
        if key.endswith("aliases/champion.json") and b'"version":%d' % self._version in data:
            status = StatusRecord(status="retired", reason="deleted by retention", deleted=True)
            self._inner.put(f"demo/versions/{self._version:06d}/status.json", status.model_dump_json().encode())
        return etag


def test_promotion_racing_with_retention_puts_the_alias_back(store: ModelStore) -> None:
    # Given v1 champion, and retention marking v2 deleted just as a promotion of v2 swaps the alias
    publish_versions(store, 2)
    store.promote("demo", 1, by="t", reason="first")
    racing = ModelStore(_DeletesDuringSwap(store, 2))  # type: ignore[arg-type]

    # When v2 is promoted
    with pytest.raises(VersionRefused, match="is being deleted"):
        racing.promote("demo", 2, by="t", reason="try")

    # Then the alias points at v1 again, and the history shows the move and its undo
    state = store.alias("demo", "champion")
    assert state is not None
    assert (state.record.version, state.record.previous) == (1, [])
    assert [(m.from_version, m.to_version, m.kind) for m in state.record.history] == [
        (None, 1, "promote"),
        (1, 2, "promote"),
        (2, 1, "rollback"),
    ]
