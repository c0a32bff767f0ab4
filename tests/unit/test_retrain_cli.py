"""`python -m training retrain` and `python -m training runs` on a local store: the same run as the Lambda's,
and the run history as a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sklambda.runs import RunLock
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV
from training.champion import Champion
from training.cli import main
from training.config import load_config
from training.dataset import clean
from training.validation import validate_table

pytestmark = pytest.mark.unit


def retrain(store: Path, data: Path | str = PENGUINS_CSV, *extra: str) -> int:
    return main(["retrain", "--data", str(data), "--store", str(store), *extra])


def test_retrain_runs_record_and_the_history_is_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    # Given two runs from the command line: the first promotes, the second (bad data) fails
    assert retrain(store) == 0
    first = capsys.readouterr().out
    broken = tmp_path / "broken.csv"
    pd.read_csv(PENGUINS_CSV).drop(columns=["island"]).to_csv(broken, index=False)
    assert retrain(store, broken) == 1
    second = capsys.readouterr().out

    # Then each run printed its outcome, every gate check and the data problems
    assert "(cli): PROMOTED" in first
    assert "[pass] case: a typical Gentoo" in first
    assert "[pass] serving self-test: loaded and reproduced its outputs" in first
    assert "(cli): FAILED" in second
    assert "data problem: schema drift: column 'island': column is missing" in second

    # When the history is listed
    assert main(["runs", "--store", str(store)]) == 0
    table = capsys.readouterr().out.splitlines()

    # Then it is a table, newest first, with outcome, version, metric of both models and rows
    assert table[0] == f"training runs of penguins in {store}, newest first"
    assert table[1].split() == [
        "run", "trigger", "status", "version", "metric", "challenger", "champion", "rows", "seconds", "reason"
    ]  # fmt: skip
    newest, oldest = table[2].split(), table[3].split()
    assert newest[1:4] == ["cli", "failed", "-"]
    assert oldest[1:8] == ["cli", "promoted", "v1", "accuracy", "1", "-", "344"]
    assert "schema drift" in table[2]
    # And a long reason is cut (…) so that rows stay one line each
    assert all(len(line) <= len(table[1]) + 70 for line in table[2:])

    # And one run shows in full
    run_id = oldest[0]
    assert main(["runs", run_id, "--store", str(store)]) == 0
    assert f"run {run_id} (cli): PROMOTED" in capsys.readouterr().out


def test_retrain_while_another_run_holds_the_lock_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    RunLock(ModelStore.from_uri(str(store)).objects, "penguins", ttl_seconds=600).acquire(
        "20260101T000000000Z-0badf00d", "a run on another machine"
    )
    assert retrain(store) == 2
    assert "run 20260101T000000000Z-0badf00d (a run on another machine) is in progress" in capsys.readouterr().err
    assert ModelStore.from_uri(str(store)).versions("penguins") == []


def test_retrain_refuses_what_would_not_fit_the_given_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert retrain(tmp_path / "store", PENGUINS_CSV, "--max-memory-mb", "100") == 1
    out = capsys.readouterr().out
    assert "refusing to train 344 rows x 8 columns here" in out
    assert "MB available" in out


def test_no_runs_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--store", str(tmp_path / "empty")]) == 0
    assert "no training runs of penguins" in capsys.readouterr().out


def test_retrain_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["retrain", "--help"])
    out = capsys.readouterr().out
    for option in ("--data", "--name", "--config", "--store", "--alias", "--max-seconds", "--max-memory-mb"):
        assert option in out


# ------------------------------------------------------------------------------------------- validation


def test_without_a_champion_only_rows_and_classes_are_checked() -> None:
    config = load_config()
    frame, _ = clean(pd.read_csv(PENGUINS_CSV), "species")
    assert validate_table(frame, config, None) == []
    problems = validate_table(frame.head(20).assign(species="Adelie"), config, None)
    assert problems == [
        "too few rows: 20 with a target, at least 50 needed ([data].min_rows)",
        "the target 'species' has a single class ('Adelie'): nothing to learn",
    ]


def test_new_classes_and_newly_missing_values_are_drift(trained_store: Path) -> None:
    store = ModelStore.from_uri(str(trained_store))
    champion = Champion.of(store, "penguins", "champion")
    frame, _ = clean(pd.read_csv(PENGUINS_CSV), "species")
    frame.loc[:99, "species"] = "Emperor"
    frame.loc[:49, "year"] = None
    problems = validate_table(frame, load_config(), champion)
    assert any("the target 'species': 100 of 344 rows (29%) have classes the champion never predicted" in p
               for p in problems)  # fmt: skip
    assert any("column 'year': 50 of 344 rows (15%) are missing; the champion never saw it missing" in p
               for p in problems)  # fmt: skip
