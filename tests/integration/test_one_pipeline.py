"""One training pipeline wherever it runs: the command line and the retrain function record the same run for the
same data and configuration; a new user's own table trains under their own name through the documented CLI; a
scheduled or API run with nothing new publishes nothing; the champion is scored without unpickling it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_wine

from sklambda.manifest import Manifest
from sklambda.runs import RunLog, RunRecord
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, load_event
from tests.integration.test_scheduled_retrain import RetrainContext
from training.champion import Champion
from training.cli import main
from training.config import load_config
from training.dataset import load_table
from training.pipeline import nothing_new, train

pytestmark = pytest.mark.integration

# What differs between two runs of the same data and configuration: who, when, how long, which run.
CIRCUMSTANCES = {"run_id", "trigger", "by", "requested_at", "started_at", "finished_at", "duration_seconds", "stages"}


def retrain_function(fresh_handler: Callable[..., ModuleType], store: Path, data: Path, **extra: str) -> ModuleType:
    """The retrain function on a local store (no predict function: it self-tests in process, as on a laptop)."""
    module = fresh_handler(
        "functions.retrain.app",
        MODEL_STORE_URI=str(store),
        MODEL_NAME="penguins",
        DATA_URI=str(data),
        PREDICT_FUNCTION_NAME="",
        RETRAIN_TOPIC_ARN="",
        **extra,
    )
    return module


def scheduled(function: ModuleType) -> dict[str, Any]:
    result: dict[str, Any] = function.lambda_handler(load_event("retrain-schedule"), RetrainContext())
    return result


def newest_run(store: Path, name: str) -> RunRecord:
    return RunLog(ModelStore.from_uri(str(store)).objects, name).list(1)[0]


def what_was_decided(record: RunRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude=CIRCUMSTANCES)


def test_the_command_line_and_the_retrain_function_record_the_same_run(
    tmp_path: Path, fresh_handler: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same data and configuration, and two empty stores
    cli_store, lambda_store = tmp_path / "cli", tmp_path / "lambda"
    function = retrain_function(fresh_handler, lambda_store, PENGUINS_CSV)

    # When the first version is trained by `python -m training train` and by the scheduled function
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", str(cli_store)]) == 0
    scheduled(function)
    # Then both runs recorded the same decision, stage by stage
    by_cli, by_lambda = newest_run(cli_store, "penguins"), newest_run(lambda_store, "penguins")
    assert (by_cli.trigger, by_lambda.trigger) == ("cli", "schedule")
    assert by_cli.status == by_lambda.status == "promoted"
    assert what_was_decided(by_cli) == what_was_decided(by_lambda)
    assert list(by_cli.stages) == list(by_lambda.stages)

    # When each retrains on the same data (`python -m training retrain` and the schedule again)
    assert main(["retrain", "--data", str(PENGUINS_CSV), "--store", str(cli_store)]) == 0
    # Unknown code: the run trains even on the champion's own data (see the "nothing new" tests below)
    monkeypatch.setattr(function, "CODE_VERSION", None)
    scheduled(function)
    # Then again one record, the champion's comparison included
    by_cli, by_lambda = newest_run(cli_store, "penguins"), newest_run(lambda_store, "penguins")
    assert by_cli.version == by_lambda.version == 2
    assert by_cli.champion_version == by_lambda.champion_version == 1
    assert what_was_decided(by_cli) == what_was_decided(by_lambda)


# ------------------------------------------------------------------------------------- a new user's own table


def wine_table(folder: Path) -> Path:
    path = folder / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)  # 13 numbers and `target` (0, 1, 2)
    return path


def diabetes_table(folder: Path) -> Path:
    path = folder / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)  # 10 numbers and `target` (float)
    return path


@pytest.mark.parametrize(("table", "task"), [(wine_table, "classification"), (diabetes_table, "regression")])
@pytest.mark.parametrize("naming", ["MODEL_NAME", "--name"])
def test_a_new_users_table_publishes_under_their_name_and_is_promoted(
    table: Callable[[Path], Path],
    task: str,
    naming: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a table the repo does not ship, the sample configuration untouched, and a name of the user's own
    data = table(tmp_path)
    name = data.stem
    store = tmp_path / "store"
    monkeypatch.setenv("MODEL_STORE_URI", str(store))
    command = ["train", "--data", str(data), "--target", "target"]
    if naming == "MODEL_NAME":
        monkeypatch.setenv("MODEL_NAME", name)
    else:
        command += ["--name", name]

    # When they train it as the README and --help say
    assert main(command) == 0

    # Then it is published under their name and promoted; the sample's penguins cases did not apply to it
    out = capsys.readouterr().out
    assert out.startswith(f"published {name} v1 to {store}")
    assert "promoted to champion: first version" in out
    models = ModelStore.from_uri(str(store))
    assert models.models() == [name]
    manifest = models.manifest(name, 1)
    assert (manifest.task, manifest.target) == (task, "target")
    run = newest_run(store, name)
    assert run.status == "promoted"
    assert not [check.name for check in run.gate if check.name.startswith("case: ")]

    # And retraining it needs no --target (the champion's), and the other commands find it by the same name
    retrain = ["retrain", "--data", str(data)] + ([] if naming == "MODEL_NAME" else ["--name", name])
    assert main(retrain) == 0, capsys.readouterr()
    assert newest_run(store, name).status in {"promoted", "rejected"}
    capsys.readouterr()
    assert main(["runs", *([] if naming == "MODEL_NAME" else ["--name", name])]) == 0
    assert f"training runs of {name} in {store}" in capsys.readouterr().out


def test_commands_that_cannot_choose_a_model_say_how_to_name_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a store holding two models, neither of them the configuration's
    store = tmp_path / "store"
    monkeypatch.setenv("MODEL_STORE_URI", str(store))
    monkeypatch.delenv("MODEL_NAME", raising=False)
    for data in (wine_table(tmp_path), diabetes_table(tmp_path)):
        assert main(["train", "--data", str(data), "--target", "target", "--name", data.stem]) == 0
    capsys.readouterr()
    # When a command that needs one model is given none
    for command in (["versions"], ["runs"], ["report", "--out", str(tmp_path / "r.html")]):
        assert main(command) == 2
        # Then it says how to give one
        assert "name one with --name NAME or $MODEL_NAME" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- nothing new


def test_scheduled_and_api_runs_with_nothing_new_publish_nothing(
    tmp_path: Path, fresh_handler: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the retrain function at a known code version, and a champion it trained
    store = tmp_path / "store"
    function = retrain_function(fresh_handler, store, PENGUINS_CSV)
    monkeypatch.setattr(function, "CODE_VERSION", "0123456789ab")
    assert scheduled(function)["status"] == "promoted"

    # When the schedule fires again on the unchanged data, configuration and code
    second = scheduled(function)
    # Then that run is recorded as skipped, with the reason, and nothing is published
    assert second["status"] == "skipped"
    assert second["reason"].startswith("nothing new since champion v1: the same data (sha256 ")
    assert second["version"] is None
    models = ModelStore.from_uri(str(store))
    assert models.versions("penguins") == [1]

    # And a run asked for over the API (queued, then carried out) is skipped the same way
    monkeypatch.setattr("sklambda.aws.invoke_event", lambda name, payload: queued.append(payload))
    queued: list[dict[str, Any]] = []
    response = function.lambda_handler(load_event("retrain-api"), RetrainContext())
    assert response["statusCode"] == 202
    carried = function.lambda_handler(queued[0], RetrainContext())
    assert carried["status"] == "skipped"
    assert models.versions("penguins") == [1]

    # And new code is new: the next version of the function trains again
    monkeypatch.setattr(function, "CODE_VERSION", "fedcba987654")
    assert scheduled(function)["version"] == 2

    # And `python -m training train`, a person's explicit request, always publishes
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", str(store)]) == 0
    assert models.versions("penguins") == [1, 2, 3]


def test_what_counts_as_new() -> None:
    table = load_table(str(PENGUINS_CSV))
    config = load_config()
    champion = _manifest_for(table.sha256, config.model_dump(mode="json"), "0123456789ab")
    assert nothing_new(champion, table, config, "0123456789ab").startswith("nothing new since champion v1")
    # Any of: other code, unknown or uncommitted code, other data, another configuration value
    assert nothing_new(champion, table, config, "fedcba987654") == ""
    assert nothing_new(champion, table, config, None) == ""
    dirty = champion.model_copy(update={"code_version": "0123456789ab-dirty"})
    assert nothing_new(dirty, table, config, "0123456789ab-dirty") == ""
    other_data = champion.model_copy(update={"data": champion.data.model_copy(update={"sha256": "0" * 64})})
    assert nothing_new(other_data, table, config, "0123456789ab") == ""
    stricter = config.model_copy(update={"gate": config.gate.model_copy(update={"threshold": 0.9})})
    assert nothing_new(champion, table, stricter, "0123456789ab") == ""


def _manifest_for(sha256: str, config: dict[str, Any], code_version: str) -> Manifest:
    trained = train(load_table(str(PENGUINS_CSV)), load_config(), code_version=code_version)
    manifest = trained.manifest
    return manifest.model_copy(
        update={
            "version": 1,
            "data": manifest.data.model_copy(update={"sha256": sha256}),
            "training": {**manifest.training, "config": config},
        }
    )


# --------------------------------------------------------------------------------- no unpickling the champion


def test_retrain_scores_an_onnx_champion_without_unpickling_it(
    local_store_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a champion stored with an ONNX model, and unpickling that would fail loudly
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the champion was unpickled")

    monkeypatch.setattr("joblib.load", refuse)
    # When a retrain validates new data against it and gates the challenger (both score the champion)
    assert main(["retrain", "--data", str(PENGUINS_CSV), "--store", str(local_store_copy)]) == 0
    # Then the run compared with the champion through ONNX Runtime, and never unpickled anything
    run = newest_run(local_store_copy, "penguins")
    assert run.status == "promoted", run.reason
    assert run.champion_metrics is not None
    assert run.metrics is not None
    assert run.champion_metrics["accuracy"] == run.metrics["accuracy"]


def test_a_champion_without_onnx_is_scored_by_its_pipeline(local_store_copy: Path) -> None:
    store = ModelStore.from_uri(str(local_store_copy))
    champion = Champion.of(store, "penguins", "champion")
    assert champion is not None
    assert champion.runtime == "onnx"
    sklearn_only = champion.manifest.model_copy(
        update={"runtimes": {**champion.manifest.runtimes, "onnx": replace(champion.manifest.runtimes["onnx"],
            supported=False)}}
    )  # fmt: skip
    unconverted = Champion(sklearn_only, champion.state, store)
    assert unconverted.runtime == "sklearn"
    rows = pd.read_csv(PENGUINS_CSV).head(5)
    assert list(unconverted.outputs(rows).predict(rows)) == ["Adelie"] * 5
