"""Runtimes said truthfully (issue 17, item 1): the reported case, a [pipeline] with a ColumnTransformer
(StandardScaler + OneHotEncoder) and a RandomForestClassifier on a table with numeric gaps, trained for the
scikit-learn runtime. Each runtime's agreement with the trained pipeline on the golden and the held-out rows is
recorded and printed as measured, ONNX is labelled not servable (with the usual cause), promotion for the ONNX
runtime is refused before the alias moves, and the documented fix (impute, no scaling before the trees) makes
ONNX exact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklambda.api import RequestLimits, model_description
from sklambda.contract import DataContract
from sklambda.contract_derivation import encode_frame, model_inputs
from sklambda.errors import VersionRefused
from sklambda.runtimes import Prediction, load_predictor
from sklambda.serving import check_parity, is_tie, load_version, served
from sklambda.store import ModelStore
from training.cli import main
from training.config import load_config
from training.dataset import load_table
from training.evaluate import agreement
from training.pipeline import train

pytestmark = pytest.mark.unit

NUMERIC = ["tenure", "monthly_charges", "support_calls"]


def scaled_forest(*, numeric: Sequence[str], categorical: Sequence[str], random_state: int = 0) -> Pipeline:
    """The reported pipeline: numbers scaled (gaps left in), categories one-hot, then a forest."""
    features = ColumnTransformer(
        [("numeric", StandardScaler(), list(numeric)), ("categorical", OneHotEncoder(), list(categorical))]
    )
    forest = RandomForestClassifier(n_estimators=40, random_state=random_state, n_jobs=1)
    return Pipeline([("features", features), ("model", forest)])


def imputed_forest(*, numeric: Sequence[str], categorical: Sequence[str], random_state: int = 0) -> Pipeline:
    """The documented fix (docs/own-data.md): impute the numbers, do not scale them, before the forest."""
    features = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), list(numeric)),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(categorical)),
        ]
    )
    forest = RandomForestClassifier(n_estimators=40, random_state=random_state, n_jobs=1)
    return Pipeline([("features", features), ("model", forest)])


@pytest.fixture(scope="module")
def churn_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few thousand generated customers, numbers and categories, about 8% of each number missing."""
    rng = np.random.default_rng(17)
    rows = 3000
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows).astype(float),
            "monthly_charges": rng.normal(70, 20, rows).round(2),
            "support_calls": rng.poisson(2, rows).astype(float),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "region": rng.choice(["north", "south", "east", "west"], rows),
        }
    )
    logit = (
        -1 + 0.04 * (50 - frame.tenure) + 0.02 * (frame.monthly_charges - 70) + 0.4 * frame.support_calls
    ) + 0.8 * (frame.plan == "basic")
    frame["churned"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    for column in NUMERIC:
        frame.loc[rng.random(rows) < 0.08, column] = np.nan
    path = tmp_path_factory.mktemp("churn") / "churn.csv"
    frame.to_csv(path, index=False)
    return path


def config_file(tmp_path: Path, factory: str) -> Path:
    path = tmp_path / f"{factory}.toml"
    path.write_text(
        f'[model]\nname = "churn"\ntarget = "churned"\n[pipeline]\nfactory = "{__name__}:{factory}"\n'
        "[evaluation]\nimportance_repeats = 0\n"
    )
    return path


def onnx_disagreements(
    trained_files: dict[str, bytes], pipeline: Pipeline, x_test: pd.DataFrame, contract: DataContract
) -> int:
    """Counted here without the training code's parity check: ONNX Runtime fed as the serving code feeds it."""
    encoded = encode_frame(x_test, contract)
    prediction = load_predictor("onnx", trained_files["model.onnx"], contract).predict(model_inputs(encoded, contract))
    assert prediction.probabilities is not None
    expected = pipeline.predict_proba(encoded)
    # Where the pipeline's two probabilities are equal it has no class to reproduce (it takes the first).
    tie = np.abs(expected[:, 0] - expected[:, 1]) <= 1e-4
    other_class = (prediction.labels.ravel() != pipeline.predict(encoded)) & ~tie
    far_apart = np.abs(prediction.probabilities - expected).max(axis=1) > 1e-4
    return int((other_class | far_apart).sum())


def test_the_reported_forest_with_gaps_is_described_truthfully(
    churn_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the reported pipeline, trained on the table with gaps for the scikit-learn serving runtime
    config = config_file(tmp_path, "scaled_forest")
    store_root = tmp_path / "store"
    command = ["train", "--data", str(churn_csv), "--config", str(config), "--store", str(store_root)]

    # When it is trained and published without promotion
    assert main([*command, "--serving-runtime", "sklearn", "--no-promote"]) == 0
    out = capsys.readouterr().out

    # Then the manifest records, per runtime, its agreement on the golden and the held-out rows as measured
    store = ModelStore.from_uri(str(store_root))
    manifest = store.manifest("churn", 1)
    assert manifest.parity is not None
    onnx, sklearn = manifest.parity["onnx"], manifest.parity["sklearn"]
    assert onnx.held_out is not None
    assert sklearn.held_out is not None
    assert sklearn.golden is not None
    assert sklearn.exact
    assert sklearn.held_out.disagreements == 0
    assert sklearn.golden.disagreements == 0
    assert not onnx.exact
    assert onnx.held_out.rows == 600
    trained = train(load_table(str(churn_csv)), load_config(config))
    assert onnx.held_out.disagreements == onnx_disagreements(
        trained.files, trained.pipeline, trained.x_test, trained.manifest.contract
    )
    assert onnx.held_out.disagreements > 30
    assert onnx.held_out.disagreements_with_missing_numbers > 0
    assert 0 < onnx.held_out.max_difference <= 1
    # ... the ONNX runtime is not offered for it, with the usual cause named; scikit-learn is
    assert not manifest.runtimes["onnx"].supported
    assert manifest.runtimes["sklearn"].supported
    assert onnx.cause is not None
    assert "tree model trained on missing numbers" in onnx.cause
    assert "SimpleImputer" in onnx.cause
    # ... and `train` prints exactly that
    held_out = onnx.held_out
    assert (
        f"    onnx: does NOT reproduce the pipeline: {onnx.golden.describe('golden') if onnx.golden else ''}; "
        f"{held_out.rows:,} held-out rows: {held_out.disagreements:,} disagree ({held_out.share:.1%}: " in out
    )
    assert "      usual cause: RandomForestClassifier is a tree model trained on missing numbers" in out
    assert "    sklearn: reproduces the pipeline: 20 golden rows: all agree" in out
    assert "    serve it with: the scikit-learn runtime only (ServingRuntime=sklearn, --serving-runtime sklearn)" in out
    assert "ONNX Runtime (the default) or scikit-learn" not in out

    # When someone promotes it for the ONNX runtime (the default of the predict function)
    promote = ["promote", "1", "--store", str(store_root), "--name", "churn", "--reason", "try"]
    code = main([*promote, "--serving-runtime", "onnx"])

    # Then the laptop refuses before the alias moves, saying what the cloud's self-test would say
    error = capsys.readouterr().err
    assert code == 2
    assert "churn v1 cannot be served by the onnx runtime: does NOT reproduce the pipeline" in error
    assert store.alias("churn", "champion") is None
    # ... and for the scikit-learn runtime it is promoted
    assert main([*promote, "--serving-runtime", "sklearn"]) == 0

    # And `describe`, the report and GET /model say the same
    capsys.readouterr()
    assert main(["describe", "1", "--store", str(store_root), "--name", "churn"]) == 0
    described = capsys.readouterr().out
    assert "    onnx: does NOT reproduce the pipeline: " in described
    assert "  runtimes              sklearn: model.joblib\n" in described
    served = load_version(store, store.served_manifest("churn", manifest.version), "sklearn")
    body = model_description(served, RequestLimits(max_body_bytes=1_048_576, max_json_depth=10, max_rows=5000))
    assert body["runtimes"]["onnx"]["supported"] is False
    assert body["runtimes"]["onnx"]["parity"]["held_out"]["disagreements"] == held_out.disagreements
    assert body["runtimes"]["sklearn"]["parity"]["exact"] is True
    report = tmp_path / "report.html"
    assert main(["report", "--store", str(store_root), "--name", "churn", "--out", str(report)]) == 0
    assert "onnx: does NOT reproduce the pipeline" in report.read_text()


def test_imputing_before_the_forest_makes_onnx_exact(
    churn_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the documented fix: the same forest, numbers imputed and not scaled
    config = config_file(tmp_path, "imputed_forest")
    store_root = tmp_path / "store"

    # When it is trained for the default (ONNX) serving runtime
    code = main(["train", "--data", str(churn_csv), "--config", str(config), "--store", str(store_root)])

    # Then ONNX reproduces it on every golden and held-out row, and it is promoted
    out = capsys.readouterr().out
    assert code == 0
    manifest = ModelStore.from_uri(str(store_root)).manifest("churn", 1)
    assert manifest.parity is not None
    onnx = manifest.parity["onnx"]
    assert onnx.exact
    assert onnx.held_out is not None
    assert onnx.held_out.disagreements == 0
    assert onnx.held_out.max_difference < 1e-4
    assert manifest.runtimes["onnx"].supported
    assert "    onnx: reproduces the pipeline: 20 golden rows: all agree" in out
    assert "    serve it with: onnx or sklearn" in out
    assert "  promoted to champion" in out


# ------------------------------------------------------------------------------------------- the comparison


def test_a_tie_between_classes_broken_the_other_way_is_not_a_disagreement() -> None:
    # Given the pipeline's answers: a tie (0.5, 0.5; it takes the first class), a clear row, and a far-off row
    labels = np.array(["no", "yes", "no"], dtype=object)
    scores = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    # When a float32 runtime breaks the tie the other way, agrees on the clear row and is 0.3 off on the last
    served = Prediction(
        labels=np.array(["yes", "yes", "no"], dtype=object),
        probabilities=np.array([[0.49999994, 0.50000006], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32),
    )
    result = agreement("classification", served, labels, scores, np.array([False, False, True]))

    # Then only the far-off row disagrees (it has a missing number); the tie is counted apart
    assert result.disagreements == 1
    assert result.different_classes == 0
    assert result.ties == 1
    assert result.disagreements_with_missing_numbers == 1
    assert result.max_difference == pytest.approx(0.3, abs=1e-6)
    assert result.describe("held-out") == (
        "3 held-out rows: 1 disagree (33.3%: 0 with another class, largest difference 0.3, 1 of them with a missing "
        "number, 1 tied between classes and broken the other way)"
    )
    assert is_tie([0.5, 0.5])
    assert not is_tie([0.4, 0.6])


def test_regression_agreement_uses_the_self_tests_tolerance() -> None:
    expected = np.array([100.0, 2.0, 5.0])
    served = Prediction(labels=np.array([100.004, 2.5, 5.00001], dtype=np.float32))

    result = agreement("regression", served, expected, None, np.zeros(3, dtype=bool))

    assert result.disagreements == 1  # 2.5 for 2.0; 100.004 is within rtol 1e-4 of 100
    assert result.different_classes is None
    assert result.max_difference == pytest.approx(0.5)


def test_the_self_test_accepts_a_golden_tie_broken_the_other_way(trained_store: Path) -> None:
    # Given golden rows whose first row the pipeline scored as a tie between two classes (it took the first)
    manifest = ModelStore.from_uri(str(trained_store)).manifest("penguins", 1)
    assert manifest.golden.probabilities is not None
    assert manifest.classes is not None
    probabilities = [list(row) for row in manifest.golden.probabilities]
    probabilities[0] = [0.5, 0.5, 0.0]
    predictions = [manifest.classes[0], *manifest.golden.predictions[1:]]
    golden = replace(manifest.golden, probabilities=probabilities, predictions=predictions)
    tied = served(manifest.model_copy(update={"golden": golden}))

    class Runtime:
        """Answers the golden probabilities, with `first` as the first row's class."""

        def __init__(self, first: object, row: int = 0) -> None:
            self.labels: list[object] = list(predictions)
            self.labels[row] = first

        def predict(self, columns: object) -> Prediction:
            return Prediction(labels=np.array(self.labels, dtype=object), probabilities=np.array(probabilities))

    # When a runtime breaks the tie the other way, then the self-test passes; another class elsewhere fails it
    check_parity(Runtime(manifest.classes[1]), tied)
    other = next(label for label in manifest.classes if label != predictions[1])
    with pytest.raises(VersionRefused, match="1 of 20 golden classes differ"):
        check_parity(Runtime(other, row=1), tied)
