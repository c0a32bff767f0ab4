"""Registry operations on a model store, one implementation for the command line and the admin API: list
versions, describe one, diff two, promote, roll back, read an alias's history, and apply the retention policy.

Everything returns pydantic models, so the command line prints them as tables and the admin API as JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from sklambda.contract import DataContract, Feature
from sklambda.errors import AliasConflict, ConfigError, NotFound
from sklambda.manifest import AliasMove, AliasRecord, Manifest, Metric, StatusRecord, VersionStatus
from sklambda.runtimes import RuntimeName
from sklambda.store import CLAIM, STATUS, ModelStore

ServingCheck = Callable[[Manifest], None]

# An abandoned publish (files but no manifest) is purged only when its claim is at least this old, whatever the
# policy says: a publish in progress must never lose its files.
MIN_ABANDONED_AGE = timedelta(days=1)


def resolve_model(store: ModelStore, name: str | None) -> str:
    """The model to act on: the one given, else the only model in the store."""
    if name:
        return name
    models = store.models()
    if len(models) == 1:
        return models[0]
    if not models:
        raise NotFound(f"the store at {store.uri} holds no model yet")
    raise ConfigError(f"the store at {store.uri} holds several models ({', '.join(models)}): name one")


def serving_check(store: ModelStore, *, runtime: RuntimeName, predict_function_name: str | None) -> ServingCheck:
    """The check a version must pass before an alias may point at it: the deployed predict function loads and
    self-tests it (cloud), or the same serving code does in this process (laptop, tests)."""
    from sklambda.serving import local_self_test, remote_self_test  # numpy only where a check is built

    if predict_function_name:
        return remote_self_test(predict_function_name)
    return local_self_test(store, runtime)


# ------------------------------------------------------------------------------------------- list, describe


class VersionRow(BaseModel):
    version: int
    created_at: str
    metric: str
    value: float | None
    status: VersionStatus
    reason: str
    # Aliases that point at this version now, and aliases whose rollback would return to it.
    aliases: list[str]
    rollback_target_of: list[str]


class VersionList(BaseModel):
    model: str
    versions: list[VersionRow]
    # Started but never completed (crashed or running publishes): not versions, never loadable.
    incomplete: list[int]
    deleted: list[int]


def list_versions(store: ModelStore, name: str) -> VersionList:
    aliases = store.aliases(name)
    rows = []
    for version in store.versions(name):
        manifest = store.manifest(name, version)
        status = store.status(name, version)
        rows.append(
            VersionRow(
                version=version,
                created_at=manifest.created_at,
                metric=manifest.metric.name,
                value=manifest.metrics.get(manifest.metric.name),
                status=status.status,
                reason=status.reason,
                aliases=sorted(alias for alias, record in aliases.items() if record.version == version),
                rollback_target_of=sorted(
                    alias for alias, record in aliases.items() if record.previous and record.previous[-1] == version
                ),
            )
        )
    return VersionList(
        model=name, versions=rows, incomplete=store.incomplete_versions(name), deleted=store.deleted_versions(name)
    )


class VersionDetail(BaseModel):
    manifest: Manifest
    status: StatusRecord
    aliases: list[str]
    rollback_target_of: list[str]


def describe_version(store: ModelStore, name: str, version: int) -> VersionDetail:
    manifest = store.manifest(name, version)
    aliases = store.aliases(name)
    return VersionDetail(
        manifest=manifest,
        status=store.status(name, version),
        aliases=sorted(alias for alias, record in aliases.items() if record.version == version),
        rollback_target_of=sorted(
            alias for alias, record in aliases.items() if record.previous and record.previous[-1] == version
        ),
    )


def alias_history(store: ModelStore, name: str, alias: str) -> AliasRecord:
    state = store.alias(name, alias)
    if state is None:
        raise NotFound(f"model {name} has no alias {alias!r}")
    return state.record


# ------------------------------------------------------------------------------------------- diff


class MetricChange(BaseModel):
    name: str
    base: float | None
    other: float | None
    change: float | None


class FeatureChange(BaseModel):
    name: str
    changes: list[str]


class VersionDiff(BaseModel):
    model: str
    base: int
    other: int
    metric: Metric
    metrics: list[MetricChange]
    features_added: list[Feature]
    features_removed: list[str]
    features_changed: list[FeatureChange]
    contract: list[str] = Field(description="changes of target, task, classes, unknown-field policy")
    data: list[str]
    libraries: dict[str, tuple[str | None, str | None]]

    @property
    def contract_unchanged(self) -> bool:
        return not (self.features_added or self.features_removed or self.features_changed or self.contract)


def diff_versions(store: ModelStore, name: str, base: int, other: int) -> VersionDiff:
    """What changed from `base` to `other`: held-out metrics, the data contract, the training data, libraries."""
    a, b = store.manifest(name, base), store.manifest(name, other)
    metrics = [
        MetricChange(
            name=metric,
            base=a.metrics.get(metric),
            other=b.metrics.get(metric),
            change=(b.metrics[metric] - a.metrics[metric]) if metric in a.metrics and metric in b.metrics else None,
        )
        for metric in _union(a.metrics, b.metrics)
    ]
    features_a = {feature.name: feature for feature in a.contract.features}
    features_b = {feature.name: feature for feature in b.contract.features}
    changed = [
        FeatureChange(name=feature, changes=changes)
        for feature in features_a.keys() & features_b.keys()
        if (changes := _feature_changes(features_a[feature], features_b[feature]))
    ]
    data = [
        f"{label}: {before} → {after}"
        for label, before, after in (
            ("uri", a.data.uri, b.data.uri),
            ("rows", a.data.rows, b.data.rows),
            ("sha256", a.data.sha256, b.data.sha256),
        )
        if before != after
    ]
    return VersionDiff(
        model=name,
        base=base,
        other=other,
        metric=b.metric,
        metrics=metrics,
        features_added=[features_b[feature] for feature in features_b if feature not in features_a],
        features_removed=[feature for feature in features_a if feature not in features_b],
        features_changed=sorted(changed, key=lambda change: change.name),
        contract=_contract_changes(a.contract, b.contract),
        data=data,
        libraries={
            library: (a.libraries.get(library), b.libraries.get(library))
            for library in _union(a.libraries, b.libraries)
            if a.libraries.get(library) != b.libraries.get(library)
        },
    )


def _union(first: Iterable[str], second: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def _feature_changes(a: Feature, b: Feature) -> list[str]:
    changes = [
        f"{field}: {getattr(a, field)} → {getattr(b, field)}"
        for field in ("kind", "value_type", "nullable")
        if getattr(a, field) != getattr(b, field)
    ]
    categories_a, categories_b = set(a.categories or ()), set(b.categories or ())
    if added := sorted(categories_b - categories_a):
        changes.append(f"categories added: {', '.join(added)}")
    if removed := sorted(categories_a - categories_b):
        changes.append(f"categories removed: {', '.join(removed)}")
    if (a.minimum, a.maximum) != (b.minimum, b.maximum):
        changes.append(f"range seen: [{a.minimum}, {a.maximum}] → [{b.minimum}, {b.maximum}]")
    return changes


def _contract_changes(a: DataContract, b: DataContract) -> list[str]:
    return [
        f"{field}: {getattr(a, field)} → {getattr(b, field)}"
        for field in ("target", "task", "classes", "allow_unknown_fields")
        if getattr(a, field) != getattr(b, field)
    ]


# ------------------------------------------------------------------------------------------- alias moves


class AliasChange(BaseModel):
    model: str
    alias: str
    from_version: int | None
    version: int
    moved: bool
    previous: list[int]
    move: AliasMove | None


def promote(
    store: ModelStore,
    name: str,
    version: int,
    *,
    alias: str,
    by: str,
    reason: str,
    check: ServingCheck | None,
    from_version: int | None = None,
) -> AliasChange:
    """Point `alias` at `version` once `check` (the serving runtime) accepts it; a no-op if it already does.

    `from_version`: the version the caller believes the alias serves; if it serves another one, AliasConflict
    and nothing changes (a retry of a promotion that already landed is the no-op above, not a conflict)."""
    before = store.alias(name, alias)
    if from_version is not None and (before is None or before.record.version not in {from_version, version}):
        serving = f"v{before.record.version}" if before is not None else "nothing yet"
        raise AliasConflict(
            f"alias {alias!r} of {name} serves {serving}, not v{from_version}: it moved since you looked; "
            "nothing was changed"
        )
    record = store.promote(name, version, alias=alias, by=by, reason=reason, expected=before, check=check)
    moved = before is None or before.record != record
    return AliasChange(
        model=name,
        alias=alias,
        from_version=before.record.version if before else None,
        version=record.version,
        moved=moved,
        previous=record.previous,
        move=record.history[-1] if moved else None,
    )


def rollback(
    store: ModelStore,
    name: str,
    *,
    alias: str,
    by: str,
    reason: str,
    check: ServingCheck | None,
    from_version: int | None = None,
) -> AliasChange:
    """Point `alias` back at the version it served before its last promotion.

    `from_version`: the version the caller believes the alias serves (the one to roll back from). When given,
    the rollback happens only if the alias still serves it, so a retried request rolls back once."""
    record = store.rollback(name, alias=alias, by=by, reason=reason, check=check, from_version=from_version)
    move = record.history[-1]
    return AliasChange(
        model=name,
        alias=alias,
        from_version=move.from_version,
        version=record.version,
        moved=True,
        previous=record.previous,
        move=move,
    )


# ------------------------------------------------------------------------------------------- retention


class RetentionPolicy(BaseModel):
    """Keep the newest `keep_last` versions and every version younger than `keep_days`; whatever the numbers,
    never a version an alias points at, was the previous holder of an alias, or is on a rollback stack."""

    keep_last: int = Field(default=10, ge=1)
    keep_days: float = Field(default=30.0, ge=0)


class RetentionDecision(BaseModel):
    version: int
    action: Literal["keep", "delete"]
    reasons: list[str]


class RetentionPlan(BaseModel):
    model: str
    policy: RetentionPolicy
    decisions: list[RetentionDecision]
    # Versions without a manifest whose leftover files can go: abandoned publishes and interrupted deletions.
    purge: list[int]

    @property
    def to_delete(self) -> list[int]:
        return [decision.version for decision in self.decisions if decision.action == "delete"]


class RetentionResult(BaseModel):
    model: str
    deleted: dict[int, list[str]]
    # Planned for deletion but protected by the time it was applied (an alias moved meanwhile).
    spared: list[int]
    purged: dict[int, list[str]]


def protected_versions(store: ModelStore, name: str) -> dict[int, list[str]]:
    """Versions retention must never delete, each with why: the current and the previous holder of every alias
    (the previous champion included) and everything on its rollback stack."""
    protected: dict[int, list[str]] = {}
    for alias, record in store.aliases(name).items():
        protected.setdefault(record.version, []).append(f"current {alias}")
        if record.history and record.history[-1].from_version is not None:
            protected.setdefault(record.history[-1].from_version, []).append(f"previous {alias}")
        for version in record.previous:
            protected.setdefault(version, []).append(f"on the {alias} rollback stack")
    return {version: sorted(set(reasons)) for version, reasons in protected.items()}


def plan_retention(
    store: ModelStore, name: str, policy: RetentionPolicy, *, now: datetime | None = None
) -> RetentionPlan:
    now = now or datetime.now(UTC)
    protected = protected_versions(store, name)
    versions = store.versions(name)
    newest = set(versions[-policy.keep_last :])
    cutoff = now - timedelta(days=policy.keep_days)
    decisions = []
    for version in versions:
        reasons = list(protected.get(version, []))
        if version in newest:
            reasons.append(f"among the newest {policy.keep_last}")
        created = _parse_time(store.manifest(name, version).created_at)
        if created > cutoff:
            reasons.append(f"younger than {policy.keep_days:g} days")
        if reasons:
            decisions.append(RetentionDecision(version=version, action="keep", reasons=reasons))
        else:
            decisions.append(
                RetentionDecision(
                    version=version,
                    action="delete",
                    reasons=[f"older than {policy.keep_days:g} days, not among the newest {policy.keep_last}"],
                )
            )
    abandoned_before = now - max(timedelta(days=policy.keep_days), MIN_ABANDONED_AGE)
    purge = [version for version in store.deleted_versions(name) if _leftovers(store, name, version)]
    for version in store.incomplete_versions(name):
        claim = store.claim(name, version)
        if claim is not None and _parse_time(claim.claimed_at) < abandoned_before and _leftovers(store, name, version):
            purge.append(version)
    return RetentionPlan(model=name, policy=policy, decisions=decisions, purge=sorted(purge))


def apply_retention(store: ModelStore, plan: RetentionPlan, *, by: str) -> RetentionResult:
    """Delete what the plan says, re-checking each version's protection after marking it deleted (a promotion
    that slipped in between either sees the mark and is refused, or is seen here and the version is spared)."""
    name = plan.model
    deleted: dict[int, list[str]] = {}
    spared: list[int] = []
    for version in plan.to_delete:
        before = store.status(name, version)
        reason = f"deleted by retention (keep the newest {plan.policy.keep_last} and {plan.policy.keep_days:g} days)"
        store.set_status(name, version, StatusRecord(status="retired", reason=reason, by=by, deleted=True))
        if version in protected_versions(store, name):
            store.set_status(name, version, before)
            spared.append(version)
            continue
        deleted[version] = store.delete_version(name, version)
    purged = {version: store.purge_leftovers(name, version) for version in plan.purge}
    return RetentionResult(model=name, deleted=deleted, spared=spared, purged=purged)


def _leftovers(store: ModelStore, name: str, version: int) -> bool:
    return any(file not in {CLAIM, STATUS} for file in store.version_files(name, version))


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
