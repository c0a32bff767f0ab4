"""Registry operations (list, describe, diff, promote, roll back, retention) against both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sklambda import registry
from sklambda.contract import DataContract, Feature
from sklambda.errors import ConfigError, NotFound, VersionRefused
from sklambda.manifest import DataFingerprint, GoldenSample, Manifest, Metric, RuntimeSupport, VersionClaim
from sklambda.registry import RetentionPolicy
from sklambda.store import ModelStore

pytestmark = pytest.mark.unit

NOW = datetime(2030, 6, 1, tzinfo=UTC)


def manifest(
    *,
    accuracy: float = 0.9,
    created: datetime = NOW,
    islands: tuple[str, ...] = ("Biscoe", "Dream"),
    mass_max: float = 6000.0,
    extra_feature: bool = False,
    rows: int = 100,
    sklearn: str = "1.9.1",
) -> Manifest:
    features = [
        Feature(name="island", kind="categorical", value_type="string", nullable=False, categories=list(islands)),
        Feature(name="mass", kind="numeric", value_type="number", nullable=True, minimum=2700.0, maximum=mass_max),
    ]
    if extra_feature:
        features.append(Feature(name="year", kind="numeric", value_type="number", nullable=False))
    return Manifest(
        name="demo",
        version=0,
        created_at=created.isoformat().replace("+00:00", "Z"),
        task="classification",
        target="species",
        estimator="test",
        data=DataFingerprint(uri="data.csv", sha256=f"{rows:064d}", rows=rows, columns=["island", "mass", "species"]),
        contract=DataContract(features=features, target="species", task="classification", classes=["a", "b"]),
        metric=Metric(name="accuracy", greater_is_better=True),
        metrics={"accuracy": accuracy, "f1_macro": accuracy - 0.1},
        classes=["a", "b"],
        golden=GoldenSample(instances=[{"island": "Biscoe", "mass": 3000.0}], predictions=["a"]),
        runtimes={"onnx": RuntimeSupport(supported=False, detail="test")},
        libraries={"python": "3.12.1", "scikit-learn": sklearn, "numpy": "2.5.5"},
    )


def publish(store: ModelStore, **options: object) -> int:
    return store.publish(manifest(**options), {"model.bin": repr(options).encode()}).version  # type: ignore[arg-type]


def test_list_versions_shows_metric_status_and_aliases(store: ModelStore) -> None:
    # Given v1, v2 promoted in turn, v3 a candidate, and a publish that never finished
    for accuracy in (0.8, 0.9, 0.95):
        publish(store, accuracy=accuracy)
    store.promote("demo", 1, by="t", reason="first")
    store.promote("demo", 2, by="t", reason="better")
    store.objects.put("demo/versions/000004/claim.json", b"{}", if_none_match=True)

    # When listing
    listing = registry.list_versions(store, "demo")

    # Then each complete version has its row; the unfinished one is only reported as incomplete
    rows = [(r.version, r.metric, r.value, r.status, r.aliases, r.rollback_target_of) for r in listing.versions]
    assert rows == [
        (1, "accuracy", 0.8, "promoted", [], ["champion"]),
        (2, "accuracy", 0.9, "promoted", ["champion"], []),
        (3, "accuracy", 0.95, "candidate", [], []),
    ]
    assert listing.incomplete == [4]
    assert listing.deleted == []


def test_describe_gives_manifest_status_and_aliases(store: ModelStore) -> None:
    publish(store)
    store.promote("demo", 1, by="alice", reason="first")
    detail = registry.describe_version(store, "demo", 1)
    assert detail.manifest.version == 1
    assert detail.manifest.artifacts["model.bin"] == detail.manifest.artifacts["model.bin"].lower()
    assert (detail.status.status, detail.status.by, detail.aliases) == ("promoted", "alice", ["champion"])
    with pytest.raises(NotFound, match="model demo has no version 2"):
        registry.describe_version(store, "demo", 2)


def test_diff_reports_metrics_contract_data_and_libraries(store: ModelStore) -> None:
    # Given two versions trained on different data, with a new category, a wider range, a new feature, a new library
    publish(store, accuracy=0.9)
    publish(store, accuracy=0.95, islands=("Biscoe", "Dream", "Torgersen"), mass_max=6300.0, extra_feature=True,
            rows=120, sklearn="1.9.2")  # fmt: skip

    # When diffing them
    diff = registry.diff_versions(store, "demo", 1, 2)

    # Then every change is named
    assert [(m.name, m.base, m.other, round(m.change or 0, 6)) for m in diff.metrics] == [
        ("accuracy", 0.9, 0.95, 0.05),
        ("f1_macro", 0.8, 0.85, 0.05),
    ]
    assert [f.name for f in diff.features_added] == ["year"]
    assert diff.features_removed == []
    assert [(c.name, c.changes) for c in diff.features_changed] == [
        ("island", ["categories added: Torgersen"]),
        ("mass", ["range seen: [2700.0, 6000.0] → [2700.0, 6300.0]"]),
    ]
    assert diff.data == ["rows: 100 → 120", f"sha256: {'0' * 61}100 → {'0' * 61}120"]
    assert diff.libraries == {"scikit-learn": ("1.9.1", "1.9.2")}
    assert not diff.contract_unchanged
    # And a version compared with itself has no changes
    same = registry.diff_versions(store, "demo", 1, 1)
    assert same.contract_unchanged
    assert not same.data
    assert not same.libraries


def test_promote_through_the_registry_reports_the_move(store: ModelStore) -> None:
    publish(store)
    publish(store)
    first = registry.promote(store, "demo", 1, alias="champion", by="t", reason="first", check=None)
    second = registry.promote(store, "demo", 2, alias="champion", by="t", reason="next", check=None)
    again = registry.promote(store, "demo", 2, alias="champion", by="t", reason="again", check=None)
    assert (first.from_version, first.version, first.moved) == (None, 1, True)
    assert (second.from_version, second.version, second.previous, second.moved) == (1, 2, [1], True)
    assert (again.moved, again.move) == (False, None)
    back = registry.rollback(store, "demo", alias="champion", by="t", reason="alarm", check=None)
    assert (back.from_version, back.version, back.previous) == (2, 1, [])
    assert back.move is not None
    assert back.move.kind == "rollback"


def test_resolve_model_needs_a_name_only_when_ambiguous(store: ModelStore) -> None:
    with pytest.raises(NotFound, match="holds no model yet"):
        registry.resolve_model(store, None)
    publish(store)
    assert registry.resolve_model(store, None) == "demo"
    other = manifest().model_copy(update={"name": "other"})
    store.publish(other, {"model.bin": b"x"})
    with pytest.raises(ConfigError, match=r"several models \(demo, other\)"):
        registry.resolve_model(store, None)
    assert registry.resolve_model(store, "other") == "other"


# ------------------------------------------------------------------------------------------- retention


def old_store(store: ModelStore, count: int) -> None:
    """`count` versions, each a day older than the next, the newest 10 days before NOW."""
    for number in range(count):
        publish(store, created=NOW - timedelta(days=10 + count - number))


def test_retention_keeps_newest_young_and_every_protected_version(store: ModelStore) -> None:
    # Given 8 old versions: champion history 1 → 2 → 5, then rolled back to 2 (so 5 is the previous champion),
    # and a staging alias on 3
    old_store(store, 8)
    for version in (1, 2, 5):
        store.promote("demo", version, by="t", reason="r")
    store.rollback("demo", by="t", reason="alarm")
    store.promote("demo", 3, alias="staging", by="t", reason="r")

    # When planning with keep_last=2 and 5 days (every version is older than that)
    plan = registry.plan_retention(store, "demo", RetentionPolicy(keep_last=2, keep_days=5), now=NOW)

    # Then only 4 and 6 go; each kept version says why
    assert plan.to_delete == [4, 6]
    reasons = {d.version: d.reasons for d in plan.decisions if d.action == "keep"}
    assert reasons == {
        1: ["on the champion rollback stack"],
        2: ["current champion"],
        3: ["current staging"],
        5: ["previous champion"],
        7: ["among the newest 2"],
        8: ["among the newest 2"],
    }


def test_retention_keeps_versions_younger_than_the_policy(store: ModelStore) -> None:
    old_store(store, 4)  # created 14, 13, 12 and 11 days before NOW
    plan = registry.plan_retention(store, "demo", RetentionPolicy(keep_last=1, keep_days=12.5), now=NOW)
    assert plan.to_delete == [1, 2]
    assert plan.decisions[2].reasons == ["younger than 12.5 days"]
    assert plan.decisions[3].reasons == ["among the newest 1", "younger than 12.5 days"]


def test_retention_dry_run_deletes_nothing_and_apply_deletes_the_plan(store: ModelStore) -> None:
    # Given 4 old versions, champion on 4
    old_store(store, 4)
    store.promote("demo", 4, by="t", reason="r")
    files_before = store.objects.list("demo/")

    # When only planning (the dry run)
    plan = registry.plan_retention(store, "demo", RetentionPolicy(keep_last=1, keep_days=0), now=NOW)

    # Then nothing changed
    assert plan.to_delete == [1, 2, 3]
    assert store.objects.list("demo/") == files_before

    # When applying it
    result = registry.apply_retention(store, plan, by="ops")

    # Then the versions are gone (tombstones kept), the champion serves on, and statuses say why
    assert sorted(result.deleted) == [1, 2, 3]
    assert store.versions("demo") == [4]
    assert store.deleted_versions("demo") == [1, 2, 3]
    tombstone = store.status("demo", 1)
    assert (tombstone.status, tombstone.deleted, tombstone.by) == ("retired", True, "ops")
    assert "deleted by retention" in tombstone.reason
    state = store.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 4


def test_retention_spares_a_version_promoted_after_the_plan(store: ModelStore) -> None:
    # Given a plan that deletes v1 and v2, then v1 promoted before the plan is applied
    old_store(store, 3)
    plan = registry.plan_retention(store, "demo", RetentionPolicy(keep_last=1, keep_days=0), now=NOW)
    assert plan.to_delete == [1, 2]
    store.promote("demo", 1, by="t", reason="r")

    # When the plan is applied
    result = registry.apply_retention(store, plan, by="ops")

    # Then v1 is spared with its status restored, and v2 is deleted
    assert (result.spared, list(result.deleted)) == ([1], [2])
    assert store.versions("demo") == [1, 3]
    assert store.status("demo", 1).status == "promoted"
    assert not store.status("demo", 1).deleted


def test_retention_purges_abandoned_publishes_but_not_recent_ones(store: ModelStore) -> None:
    # Given two publishes that never finished: one claimed 3 days ago, one an hour ago (maybe still running)
    old_store(store, 1)
    for version, age in ((2, timedelta(days=3)), (3, timedelta(hours=1))):
        claim = VersionClaim(claimed_at=(NOW - age).isoformat())
        store.objects.put(f"demo/versions/{version:06d}/claim.json", claim.model_dump_json().encode())
        store.objects.put(f"demo/versions/{version:06d}/model.bin", b"half written")

    # When retention runs with a 2-day policy
    plan = registry.plan_retention(store, "demo", RetentionPolicy(keep_last=1, keep_days=2), now=NOW)
    result = registry.apply_retention(store, plan, by="ops")

    # Then only the old one's files go (its claim stays, so the number is never reused)
    assert result.purged == {2: ["model.bin"]}
    assert store.version_files("demo", 2) == ["claim.json"]
    assert store.version_files("demo", 3) == ["claim.json", "model.bin"]
    assert store.versions("demo") == [1]


def test_retention_finishes_an_interrupted_deletion(store: ModelStore) -> None:
    # Given a deletion that crashed after the manifest went, before the artifacts did
    old_store(store, 2)
    store.promote("demo", 2, by="t", reason="r")
    from sklambda.manifest import StatusRecord

    store.set_status("demo", 1, StatusRecord(status="retired", reason="deleted by retention", deleted=True))
    store.objects.delete("demo/versions/000001/manifest.json")

    # When retention runs again
    plan = registry.plan_retention(store, "demo", RetentionPolicy(keep_last=1, keep_days=0), now=NOW)
    registry.apply_retention(store, plan, by="ops")

    # Then the leftover artifact is gone too
    assert plan.purge == [1]
    assert store.version_files("demo", 1) == ["claim.json", "status.json"]


def test_retention_policy_must_keep_at_least_one_version() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RetentionPolicy(keep_last=0)


def test_a_refused_check_is_reported_by_the_registry(store: ModelStore) -> None:
    publish(store)

    def refuse(manifest: Manifest) -> None:
        raise VersionRefused("the onnx runtime cannot load it")

    with pytest.raises(VersionRefused, match="cannot load it"):
        registry.promote(store, "demo", 1, alias="champion", by="t", reason="r", check=refuse)
    assert store.aliases("demo") == {}
