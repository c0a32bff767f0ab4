"""`python -m training predict`: rows from a file answered exactly as the prediction API answers them (issue 17,
item 3): same validation, same encoding of a missing category ("__missing__"), same runtime, same reply."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from sklambda.contract import MISSING_CATEGORY
from sklambda.contract_derivation import encode_frame, frame_to_instances
from sklambda.runtimes.sklearn import load_pipeline
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from training.cli import main

pytestmark = pytest.mark.unit


def rows_with_gaps(path: Path) -> pd.DataFrame:
    """Labelled penguins, among them rows with a missing sex (a category) and missing measurements."""
    frame = pd.read_csv(PENGUINS_CSV).iloc[[0, 1, 8, 9, 47, 178, 200, 300]].reset_index(drop=True)
    frame.to_csv(path, index=False)
    return frame


def test_predict_prints_what_the_api_answers(
    local_store_copy: Path,
    tmp_path: Path,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a labelled table whose rows include missing categories
    frame = rows_with_gaps(tmp_path / "rows.csv")
    assert frame["sex"].isna().sum() >= 2

    # When the command line predicts it, and the predict function is asked the same rows
    code = main(["predict", "--data", str(tmp_path / "rows.csv"), "--store", str(local_store_copy)])
    captured = capsys.readouterr()
    app = fresh_handler("functions.predict.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins")
    event = load_event("predict")
    event["body"] = json.dumps({"instances": frame_to_instances(frame.drop(columns=["species"]), frame.columns[1:])})
    response = app.lambda_handler(event, lambda_context)

    # Then the command prints the API's reply, request id aside, and says it left the target out
    assert code == 0
    assert response["statusCode"] == 200
    printed, served = json.loads(captured.out), json.loads(response["body"])
    printed.pop("request_id")
    served.pop("request_id")
    assert printed == served
    assert "left out the target column 'species'" in captured.err
    # ... which is the pipeline's answer on the rows as serving encodes them (a missing sex is "__missing__")
    store = ModelStore.from_uri(str(local_store_copy))
    manifest = store.manifest("penguins", 1)
    pipeline = load_pipeline(store.artifact(manifest, "model.joblib"))
    encoded = encode_frame(frame.drop(columns=["species"]), manifest.contract)
    assert (encoded["sex"] == MISSING_CATEGORY).sum() == frame["sex"].isna().sum()
    assert printed["predictions"] == pipeline.predict(encoded).tolist()  # type: ignore[attr-defined]
    np.testing.assert_allclose(printed["probabilities"], pipeline.predict_proba(encoded), atol=1e-4)  # type: ignore[attr-defined]


def test_predict_as_csv_adds_the_answers_to_the_rows(
    local_store_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = rows_with_gaps(tmp_path / "rows.csv")
    command = ["predict", "--data", str(tmp_path / "rows.csv"), "--store", str(local_store_copy)]

    assert main([*command, "--serving-runtime", "sklearn", "--csv"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year,prediction,"
        "probability_Adelie,probability_Chinstrap,probability_Gentoo"
    )
    assert len(lines) == len(frame) + 1
    assert lines[1].startswith("Torgersen,39.1,18.7,181.0,3750.0,male,2007,Adelie,")


def test_rows_that_break_the_contract_get_the_apis_422_body(
    local_store_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a row with an island the model never saw
    frame = pd.read_csv(PENGUINS_CSV).head(3).drop(columns=["species"])
    frame.loc[1, "island"] = "Atlantis"
    frame.to_csv(tmp_path / "rows.csv", index=False)

    # When it is predicted
    code = main(["predict", "--data", str(tmp_path / "rows.csv"), "--store", str(local_store_copy)])

    # Then nothing is answered: the API's 422 body names the row and the field
    assert code == 1
    body = json.loads(capsys.readouterr().out)
    assert body["problem_count"] == 1
    assert body["problems"][0]["row"] == 1
    assert body["problems"][0]["field"] == "island"
    assert body["problems"][0]["message"].startswith("unknown category 'Atlantis'")
