"""The model store's guarantees, run against both backends (local folder and S3 under moto)."""

from __future__ import annotations

import pytest

from sklambda.contract import DataContract, Feature
from sklambda.errors import AliasConflict, IntegrityError, NotFound, PreconditionFailed, VersionRefused
from sklambda.manifest import DataFingerprint, GoldenSample, Manifest, Metric, RuntimeSupport, StatusRecord
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


def test_versions_are_never_overwritten(store: ModelStore) -> None:
    # Given a published version
    manifest = store.publish(make_manifest(), {"model.bin": b"one"})

    # When something tries to write its files again
    with pytest.raises(PreconditionFailed):
        store.objects.put("demo/versions/000001/model.bin", b"evil", if_none_match=True)

    # Then the stored bytes are unchanged
    assert store.artifact(manifest, "model.bin") == b"one"


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


def test_tampered_manifest_is_refused(store: ModelStore) -> None:
    # Given a manifest edited after publish (metrics inflated)
    store.publish(make_manifest(), {"model.bin": b"x"})
    blob = store.objects.get("demo/versions/000001/manifest.json")
    store.objects.put("demo/versions/000001/manifest.json", blob.data.replace(b'"accuracy":0.9', b'"accuracy":1.0'))

    # Then it no longer verifies
    with pytest.raises(IntegrityError, match="checksum"):
        store.manifest("demo", 1)


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
