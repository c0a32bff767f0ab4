"""A version's manifest, as `python -m training train` writes it, records everything the registry promises."""

from __future__ import annotations

import hashlib
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV

pytestmark = pytest.mark.unit


def test_the_manifest_records_everything_needed_to_trust_and_reproduce_a_version(trained_store: Path) -> None:
    # Given the sample model trained and published from the command line
    store = ModelStore.from_uri(str(trained_store))
    manifest = store.manifest("penguins", 1)  # verified against its own checksum on read

    # Then it names the version, when it was made, what it is
    assert (manifest.name, manifest.version, manifest.task, manifest.target) == (
        "penguins",
        1,
        "classification",
        "species",
    )
    assert datetime.fromisoformat(manifest.created_at).tzinfo is not None
    assert manifest.estimator.startswith("sklearn.")
    # And the training data: where, its fingerprint (sha256 over the file's bytes), how many rows were used
    assert manifest.data.uri == str(PENGUINS_CSV)
    file_digest = hashlib.sha256(PENGUINS_CSV.read_bytes()).digest()
    assert manifest.data.sha256 == hashlib.sha256(b"penguins.csv\0" + file_digest).hexdigest()
    assert manifest.data.rows == len(pd.read_csv(PENGUINS_CSV).dropna(subset=["species"]))
    # And the feature contract: names, types, categories and ranges seen in training
    features = {feature.name: feature for feature in manifest.contract.features}
    assert set(features) == {
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
        "year",
    }
    assert features["island"].categories == ["Biscoe", "Dream", "Torgersen"]
    assert (features["island"].kind, features["island"].value_type) == ("categorical", "string")
    mass = features["body_mass_g"]
    assert (mass.kind, mass.value_type) == ("numeric", "number")
    assert mass.minimum is not None and mass.maximum is not None  # noqa: PT018 - both bounds are one fact
    assert 2700 <= mass.minimum < mass.maximum <= 6300
    # And the held-out metrics, with the one the gate compares
    assert manifest.metric.name == "accuracy"
    assert {"accuracy", "balanced_accuracy", "f1_macro", "log_loss"} <= set(manifest.metrics)
    # And the library versions it was trained with, the serving runtime's included, and the ONNX opset it needs
    for library in ("scikit-learn", "numpy", "onnxruntime", "skl2onnx"):
        assert manifest.libraries[library] == metadata.version(library)
    assert manifest.libraries["python"].startswith("3.12.")
    assert manifest.runtimes["onnx"].supported
    assert manifest.runtimes["onnx"].opset is not None
    assert manifest.runtimes["onnx"].opset["ai.onnx"] >= 1
    # And the code version (a git checkout here)
    assert manifest.code_version is not None
    # And the sha256 of every artifact, which the stored bytes match
    assert set(manifest.artifacts) == {"model.onnx", "model.joblib", "model.baseline.json"}
    for file, digest in manifest.artifacts.items():
        on_disk = (trained_store / "penguins" / "versions" / "000001" / file).read_bytes()
        assert hashlib.sha256(on_disk).hexdigest() == digest
    # And the champion it was compared with (none for a first version), and its status with the reason
    assert manifest.compared_with is None
    status = store.status("penguins", 1)
    assert (status.status, status.reason) == ("promoted", "first version: no champion to compare with")


def test_a_later_version_records_the_champion_it_was_compared_with(local_store_copy: Path) -> None:
    from training.cli import main

    assert main(["train", "--data", str(PENGUINS_CSV), "--store", str(local_store_copy)]) == 0
    manifest = ModelStore.from_uri(str(local_store_copy)).manifest("penguins", 2)
    assert manifest.compared_with is not None
    assert manifest.compared_with.version == 1
    assert manifest.compared_with.metrics["accuracy"] == manifest.metrics["accuracy"]
