"""A run reads its champion while it records itself and loads its table, and renews its lease while it writes
the gate's verdict: the round trips overlap, the guarantees stay (a tampered champion artifact is refused when
it is scored, a run that lost its lease does not promote)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sklambda.errors import RunInProgress
from sklambda.manifest import Manifest
from sklambda.runs import Lease, RunLog
from sklambda.serving import local_self_test
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV
from training.config import load_config
from training.pipeline import TrainingRun, model_config, run_training

pytestmark = pytest.mark.unit


def _run(store: ModelStore) -> TrainingRun:
    config = model_config(load_config(), store)
    return TrainingRun(
        store=store, data_uri=str(PENGUINS_CSV), config=config, serving_check=local_self_test(store, "onnx")
    )


@pytest.fixture
def with_champion(tmp_path: Path) -> ModelStore:
    store = ModelStore.from_uri(str(tmp_path / "store"))
    assert run_training(_run(store), trigger="cli", by="first").status == "promoted"
    return store


def test_a_champion_artifact_changed_in_the_store_fails_the_run_when_it_is_scored(
    with_champion: ModelStore, tmp_path: Path
) -> None:
    # Given the champion's ONNX file replaced in the store after it was published
    artifact = tmp_path / "store" / "penguins" / "versions" / "000001" / "model.onnx"
    artifact.write_bytes(b"not the model the manifest checksums")
    # When a run reads the champion ahead of scoring it
    record = run_training(_run(with_champion), trigger="schedule", by="second")
    # Then the checksum refuses it: the run fails, nothing is published, v1 stays champion
    assert record.status == "failed"
    assert "does not match" in record.reason
    assert record.version is None
    alias = with_champion.alias("penguins", "champion")
    assert alias is not None
    assert alias.record.version == 1


def test_a_run_that_lost_its_lease_before_promoting_does_not_promote(
    with_champion: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run whose lease another run takes over while the gate's verdict is written
    def taken_over(lease: Lease) -> None:
        raise RunInProgress("another-run", "someone else")

    monkeypatch.setattr(Lease, "renew", taken_over)
    # When it passes its gate
    record = run_training(_run(with_champion), trigger="schedule", by="second")
    # Then it fails without promoting, and its version cannot be promoted by mistake
    assert record.status == "failed"
    assert record.version == 2
    alias = with_champion.alias("penguins", "champion")
    assert alias is not None
    assert alias.record.version == 1
    assert with_champion.status("penguins", 2).status == "rejected"


def test_a_run_is_recorded_as_running_while_it_trains(tmp_path: Path) -> None:
    # Given a run whose serving check looks at the run records (the record is written in the background)
    store = ModelStore.from_uri(str(tmp_path / "store"))
    seen: list[str] = []

    def look(manifest: Manifest) -> None:
        seen.extend(record.status for record in RunLog(store.objects, "penguins").list())

    run = replace(_run(store), serving_check=look)
    # When it runs, then it was recorded as running meanwhile, and its final record replaced that
    record = run_training(run, trigger="cli", by="first")
    assert seen == ["running"]
    assert [saved.status for saved in RunLog(store.objects, "penguins").list()] == [record.status] == ["promoted"]
