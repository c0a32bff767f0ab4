"""The pydantic-free reader the predict path uses (sklambda.records) against the pydantic one the writers use
(sklambda.manifest, `ModelStore.manifest`): the same records, the same checksum, the same refusals."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sklambda.contract import DataContract, Feature, Task
from sklambda.errors import IntegrityError
from sklambda.manifest import (
    AliasMove,
    AliasRecord,
    DataFingerprint,
    GoldenSample,
    Manifest,
    ManifestSignature,
    Metric,
    RuntimeParity,
    RuntimeSupport,
)
from sklambda.records import canonical_json, read_alias, read_served_manifest, sha256_hex
from sklambda.store import MANIFEST, ModelStore

pytestmark = pytest.mark.unit

SERVED_FIELDS = ("name", "version", "task", "target", "contract", "classes", "golden", "runtimes", "artifacts")


def stored_bytes(store: ModelStore, name: str, version: int) -> bytes:
    return store.objects.get(f"{name}/versions/{version:06d}/{MANIFEST}").data


def reseal(stored: dict[str, Any]) -> bytes:
    """A manifest as a writer with store access could write it: any content, with a checksum that matches."""
    body = {key: value for key, value in stored.items() if key not in {"manifest_sha256", "signature"}}
    return canonical_json(stored | {"manifest_sha256": sha256_hex(canonical_json(body))})


def test_a_trained_version_reads_the_same_through_both_readers(trained_store: Path) -> None:
    # Given the sample model as `python -m training train` stored it
    store = ModelStore.from_uri(str(trained_store))
    full = store.manifest("penguins", 1)
    # When serving reads it without pydantic
    served = store.served_manifest("penguins", 1)
    # Then every field serving reads equals the pydantic manifest's, and the checksum is the one it computes
    for name in SERVED_FIELDS:
        assert getattr(served, name) == getattr(full, name), name
    assert served.manifest_sha256 == served.body_sha256() == full.body_sha256() == full.manifest_sha256
    # And the rest of the manifest is there when GET /model asks for it
    assert served.full() == full


def test_every_stored_field_is_under_the_checksum_whether_serving_reads_it_or_not(local_store_copy: Path) -> None:
    # Given the stored manifest of a trained version
    store = ModelStore.from_uri(str(local_store_copy))
    stored = orjson.loads(stored_bytes(store, "penguins", 1))
    for key in sorted(set(stored) - {"manifest_sha256"}):
        # When any one top-level field is altered without re-sealing
        altered = copy.deepcopy(stored)
        altered[key] = {} if isinstance(stored[key], dict) and stored[key] else {"altered": True}
        data = canonical_json(altered)
        # Then both readers refuse it as not matching its checksum
        with pytest.raises(IntegrityError, match=r"does not match its checksum|unreadable"):
            read_served_manifest(data, name="penguins", version=1)
        store.objects.put("penguins/versions/000001/manifest.json", data)
        with pytest.raises(IntegrityError):
            store.manifest("penguins", 1)

    # And a key added inside a record, which pydantic's reader drops before it checks, is refused by serving
    extra = copy.deepcopy(stored)
    extra["data"]["note"] = "added"
    with pytest.raises(IntegrityError, match="does not match its checksum"):
        read_served_manifest(canonical_json(extra), name="penguins", version=1)


def test_a_resealed_manifest_of_the_wrong_shape_is_unreadable(trained_store: Path) -> None:
    # Given manifests re-sealed by someone with write access: valid checksums around values of the wrong type
    stored = orjson.loads(stored_bytes(ModelStore.from_uri(str(trained_store)), "penguins", 1))
    broken: list[dict[str, Any]] = []
    for path, value in [
        (("contract", "features", 0, "kind"), "text"),
        (("contract", "features", 0, "name"), 7),
        (("golden", "instances"), "rows"),
        (("golden", "predictions"), [None]),
        (("runtimes", "onnx", "supported"), None),
        (("version",), "1"),
        (("task",), "ranking"),
    ]:
        record = copy.deepcopy(stored)
        *parents, last = path
        holder: Any = record
        for part in parents:
            holder = holder[part]
        holder[last] = value
        broken.append(record)
    del (missing := copy.deepcopy(stored))["golden"]
    broken.append(missing)
    for record in broken:
        # When serving reads one, then it is refused as unreadable (not a crash later, on a request)
        with pytest.raises(IntegrityError, match="unreadable"):
            read_served_manifest(reseal(record), name="penguins", version=1)


def test_a_manifest_stored_under_another_name_or_number_is_refused(trained_store: Path) -> None:
    # Given v1's manifest, intact, stored as v2 of the model or as another model
    data = stored_bytes(ModelStore.from_uri(str(trained_store)), "penguins", 1)
    # Then serving refuses it in both places, as the pydantic reader does
    for name, version in [("penguins", 2), ("other", 1)]:
        with pytest.raises(IntegrityError, match="describes penguins v1; refused"):
            read_served_manifest(data, name=name, version=version)


def test_not_json_is_unreadable() -> None:
    for data in [b"", b"{", b"[]", b'{"name": "x"}', b"\xff"]:
        with pytest.raises(IntegrityError, match="unreadable"):
            read_served_manifest(data, name="x", version=1)


def test_a_later_field_stored_as_null_and_a_newer_writers_field_verify(trained_store: Path) -> None:
    # Given a manifest whose later field (parity) is stored as null, and one with a field this code does not know,
    # each sealed over what it stores
    stored = orjson.loads(stored_bytes(ModelStore.from_uri(str(trained_store)), "penguins", 1))
    with_null_body = {key: value for key, value in stored.items() if key not in {"manifest_sha256", "parity"}}
    with_null = canonical_json(
        {**stored, "parity": None, "manifest_sha256": sha256_hex(canonical_json(with_null_body))}
    )
    newer = reseal({**stored, "explanations": {"method": "shap"}})
    # Then serving reads both: the null later field is left out of the checksum as the pydantic manifest leaves it
    # out, and a newer writer's field is covered by the checksum without serving having to know it
    assert Manifest.model_validate_json(with_null).body_sha256() == orjson.loads(with_null)["manifest_sha256"]
    assert read_served_manifest(with_null, name="penguins", version=1).version == 1
    assert read_served_manifest(newer, name="penguins", version=1).version == 1


labels = st.one_of(
    st.text(max_size=8), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)
numbers = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-1000, 1000))


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True))
    features = []
    for name in names:
        if draw(st.booleans()):
            low, high = draw(numbers), draw(numbers)
            features.append(
                Feature(
                    name=name,
                    kind="numeric",
                    value_type="number",
                    nullable=draw(st.booleans()),
                    minimum=low,
                    maximum=high,
                )
            )
        else:
            categories = draw(st.lists(st.text(max_size=10), min_size=1, max_size=5, unique=True))
            features.append(
                Feature(
                    name=name,
                    kind="categorical",
                    value_type=draw(st.sampled_from(["string", "number", "boolean"])),
                    nullable=draw(st.booleans()),
                    categories=categories,
                )
            )
    task: Task = draw(st.sampled_from(["classification", "regression"]))
    classes = draw(st.lists(labels, min_size=2, max_size=4, unique_by=repr)) if task == "classification" else None
    rows = draw(st.integers(1, 3))
    instances = [
        {name: draw(st.one_of(st.none(), st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False)))
         for name in names}
        for _ in range(rows)
    ]  # fmt: skip
    predictions = [draw(st.sampled_from(classes)) if classes else draw(st.floats(-1e9, 1e9)) for _ in range(rows)]
    probabilities = (
        [draw(st.lists(st.floats(0, 1), min_size=len(classes), max_size=len(classes))) for _ in range(rows)]
        if classes
        else None
    )
    contract = DataContract(features=features, target="y", task=task, classes=classes)
    return Manifest(
        name="m",
        version=draw(st.integers(1, 10**6)),
        task=task,
        target="y",
        estimator="any",
        data=DataFingerprint(uri="memory://", sha256="0" * 64, rows=rows, columns=[*names, "y"]),
        contract=contract,
        metric=Metric(name="score", greater_is_better=True),
        metrics={"score": draw(st.floats(allow_nan=False, allow_infinity=False))},
        classes=classes,
        golden=GoldenSample(instances=instances, predictions=predictions, probabilities=probabilities),
        runtimes={"onnx": RuntimeSupport(supported=draw(st.booleans()), artifact="model.onnx", opset={"": 17})},
        libraries={"python": "3.12"},
        artifacts={"model.onnx": "a" * 64},
        parity=draw(st.one_of(st.none(), st.just({"onnx": RuntimeParity(exact=True)}))),
        signature=draw(
            st.one_of(st.none(), st.just(ManifestSignature(key_id="k", algorithm="ECDSA_SHA_256", value="c2ln")))
        ),
    )


@settings(max_examples=150, deadline=None)
@given(manifests())
def test_any_manifest_the_store_writes_reads_the_same_through_both_readers(manifest: Manifest) -> None:
    # Given any manifest as the store seals it (features of any name, labels of any JSON type, numbers of any size)
    sealed = manifest.sealed()
    # When serving reads it without pydantic, and pydantic reads it
    served = read_served_manifest(sealed, name=manifest.name, version=manifest.version)
    full = Manifest.model_validate_json(sealed)
    # Then both verify it with the same checksum, and serving reads what the pydantic manifest holds
    assert served.body_sha256() == full.body_sha256() == full.manifest_sha256
    for name in (*SERVED_FIELDS, "signature"):
        assert getattr(served, name) == getattr(full, name), name


def test_aliases_read_the_same_through_both_readers() -> None:
    # Given an alias record as the store writes it
    record = AliasRecord(
        alias="champion",
        version=3,
        previous=[1, 2],
        history=[AliasMove(from_version=None, to_version=1, by="me", reason="first"),
                 AliasMove(from_version=2, to_version=3, by="ci", reason="better", kind="rollback")],
    )  # fmt: skip
    data = canonical_json(record)
    # Then serving reads it back equal, and pydantic (the admin API's replies hold it) reads the same
    assert read_alias(data) == record
    from pydantic import TypeAdapter

    assert TypeAdapter(AliasRecord).validate_json(data) == record
    # And a record that does not parse is a ValueError, which the serving cache reports as an unreadable alias
    for broken in [b"{", b'{"alias": "champion"}', b'{"alias": "a", "version": 1, "history": [{"to_version": 2}]}',
                   b'{"alias": "a", "version": true}']:  # fmt: skip
        with pytest.raises(ValueError, match="alias record does not parse"):
            read_alias(broken)
