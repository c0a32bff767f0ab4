"""A version becomes promotable only once its gate has passed it (issue 13): a run killed between publish and
its verdict leaves a candidate nobody can promote by mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from sklambda import registry
from sklambda.errors import VersionRefused
from sklambda.manifest import Manifest
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV
from tests.faults import Crash
from tests.unit.test_store import make_manifest
from training.config import load_config
from training.pipeline import TrainingRun, model_config, run_training

pytestmark = pytest.mark.unit


def test_a_candidate_awaiting_its_verdict_cannot_be_promoted_until_it_passes(store: ModelStore) -> None:
    # Given a version published for a gate to judge
    version = store.publish(make_manifest(), {"model.bin": b"m"}, awaiting_gate=True).version
    assert (store.status("demo", version).status, store.status("demo", version).gate) == ("candidate", "pending")

    # Then promoting it is refused, and nothing moves
    with pytest.raises(VersionRefused, match="no gate verdict"):
        registry.promote(store, "demo", version, alias="champion", by="me", reason="x", check=None)
    assert store.alias("demo", "champion") is None

    # When the gate passes it, it can be promoted
    store.record_gate_passed("demo", version, by="gate", reason="beats nothing")
    assert store.status("demo", version).gate == "passed"
    assert registry.promote(store, "demo", version, alias="champion", by="me", reason="x", check=None).moved


def _run(tmp_path: Path, **options: object) -> TrainingRun:
    store = ModelStore.from_uri(str(tmp_path / "store"))
    config = model_config(load_config(), store)
    return TrainingRun(store=store, data_uri=str(PENGUINS_CSV), config=config, **options)  # type: ignore[arg-type]


def test_a_run_killed_between_publish_and_verdict_leaves_an_unpromotable_candidate(tmp_path: Path) -> None:
    # Given a run that dies during its gate's serving self-test, after publishing (a Lambda timeout, say)
    def killed(_manifest: Manifest) -> None:
        raise Crash("the function timed out")

    run = _run(tmp_path, serving_check=killed)
    with pytest.raises(Crash):
        run_training(run, trigger="cli", by="run 1")

    # Then its version stays a candidate without verdict, and neither the API nor the CLI path can promote it
    store = run.store
    assert store.versions("penguins") == [1]
    assert store.status("penguins", 1).gate == "pending"
    with pytest.raises(VersionRefused, match="no gate verdict"):
        registry.promote(store, "penguins", 1, alias="champion", by="operator", reason="looks fine", check=None)


def test_a_gated_run_that_is_not_asked_to_promote_leaves_a_promotable_candidate(tmp_path: Path) -> None:
    run = _run(tmp_path, promote=False)
    record = run_training(run, trigger="cli", by="run 1")
    assert record.status == "passed"
    store = run.store
    assert store.status("penguins", 1).gate == "passed"
    assert registry.promote(store, "penguins", 1, alias="champion", by="operator", reason="ok", check=None).moved
