"""Training stages and the command line, on the sample data and on tables the repo does not ship."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import fastparquet
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_diabetes, load_wine
from sklearn.inspection import permutation_importance
from sklearn.linear_model import Ridge
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    make_scorer,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, label_binarize

from sklambda.contract_derivation import encode_frame
from sklambda.errors import ConfigError, DataError
from sklambda.manifest import Metric
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV
from training import evaluate as evaluate_module
from training import lineage
from training import model as model_module
from training.cli import main
from training.config import load_config
from training.dataset import clean, load_table
from training.evaluate import evaluate
from training.features import infer_task, select_features
from training.model import split
from training.pipeline import train

pytestmark = pytest.mark.unit


def test_clean_drops_rows_without_target_and_blank_text() -> None:
    frame = pd.DataFrame({"y": ["a", None, "b"], "text": [" x ", "", "  "]})
    cleaned, report = clean(frame, "y")
    assert cleaned["y"].tolist() == ["a", "b"]
    assert cleaned["text"].tolist() == ["x", None]
    assert report.describe() == "2 of 3 rows kept (dropped 1 rows without a target)"


@pytest.mark.parametrize("dtype", [object, "str"])
def test_clean_strips_text_columns_as_value_by_value_and_leaves_the_table_alone(dtype: object) -> None:
    # Given text columns (pandas' string dtype as read from a CSV, or plain objects) with blanks, padding and
    # missing values, and an object column mixing text with numbers
    text = [" Dream ", "", None, "Biscoe", float("nan"), "  ", "Biscoe"]
    frame = pd.DataFrame(
        {
            "y": pd.Series(["a", "b", "c", None, "a", "b", "c"], dtype=dtype),  # type: ignore[call-overload]
            "island": pd.Series(text, dtype=dtype),  # type: ignore[call-overload]
            "mixed": pd.Series([" x ", 1, True, None, "", 2.5, "x"], dtype=object),
            "mass": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0],
        }
    )
    before = frame.copy()
    # When cleaning it
    cleaned, _ = clean(frame, "y")
    # Then each text value is stripped (blank: missing, as None) as stripping value by value gives
    kept = frame["y"].notna().to_numpy()

    def stripped(value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return None if pd.isna(value) else value  # type: ignore[call-overload]

    for name in ("y", "island", "mixed"):
        assert cleaned[name].dtype == object
        assert cleaned[name].tolist() == [stripped(value) for value in frame[name][kept].tolist()]
    assert cleaned["mass"].tolist()[:2] == [1.0, 2.0]
    # And the caller's table is unchanged
    pd.testing.assert_frame_equal(frame, before)


def test_clean_names_the_columns_when_the_target_is_missing() -> None:
    with pytest.raises(DataError, match="target column 'nope' is not in the data; columns are: a, b"):
        clean(pd.DataFrame({"a": [1], "b": [2]}), "nope")


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b"], "classification"),
        ([0, 1, 1, 0], "classification"),
        ([1.5, 2.25, 3.0], "regression"),
        (list(range(100)), "regression"),
        ([True, False], "classification"),
    ],
)
def test_task_inference(values: list[object], task: str) -> None:
    assert infer_task(pd.Series(values), "auto") == task


def test_auto_features_leave_out_identifiers() -> None:
    config = load_config().with_overrides(target="y")
    frame = pd.DataFrame(
        {"id": [f"row-{i}" for i in range(100)], "x": range(100), "c": ["a", "b"] * 50, "y": [0, 1] * 50}
    )
    features = select_features(frame, config)
    assert (features.numeric, features.categorical) == (["x"], ["c"])
    assert features.left_out == {"id": "100 distinct values > max_categories 50"}


def test_sample_model_trains_converts_and_records_everything() -> None:
    trained = train(load_table(str(PENGUINS_CSV)), load_config())
    manifest = trained.manifest
    assert manifest.task == "classification"
    assert manifest.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert manifest.metrics["accuracy"] > 0.95
    assert [f.name for f in manifest.contract.features] == [
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "year",
        "island",
        "sex",
    ]
    assert manifest.contract.feature("sex").nullable
    assert manifest.runtimes["onnx"].supported
    assert set(trained.files) == {"model.joblib", "model.onnx", "model.baseline.json"}
    assert manifest.data.rows == 344
    assert len(manifest.data.sha256) == 64
    assert len(manifest.golden.instances) == 20
    assert manifest.golden.probabilities is not None
    assert {"python", "scikit-learn", "numpy", "onnx"} <= set(manifest.libraries)


@pytest.mark.parametrize("config_file", [None, PENGUINS_CSV.parents[2] / "benchmarks" / "random_forest.toml"])
def test_golden_outputs_are_the_pipelines_on_those_rows_alone(config_file: Path | None) -> None:
    # Given a trained pipeline (its golden outputs taken from the evaluation of every held-out row)
    trained = train(load_table(str(PENGUINS_CSV)), load_config(config_file))
    golden = trained.manifest.golden
    # When its golden rows are predicted on their own
    rows = encode_frame(trained.x_test.head(len(golden.instances)), trained.manifest.contract)
    # Then the labels and probabilities are the same floats
    assert golden.predictions == trained.pipeline.predict(rows).tolist()
    assert golden.probabilities == trained.pipeline.predict_proba(rows).tolist()


def test_same_data_and_config_give_the_same_metrics() -> None:
    first = train(load_table(str(PENGUINS_CSV)), load_config()).manifest
    second = train(load_table(str(PENGUINS_CSV)), load_config()).manifest
    assert first.metrics == second.metrics
    assert first.golden == second.golden


def test_config_errors_are_readable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "x"\ntarget = "y"\ncolour = "red"\n[evaluation]\ntest_size = 2\n')
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "model.colour: unknown key" in str(caught.value)
    assert "evaluation.test_size: Input should be less than 1" in str(caught.value)


def _wine_csv(path: Path) -> Path:
    data = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    data["cultivar"] = data["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    data["vineyard"] = np.where(data["alcohol"] > 13, "hill", "valley")
    data.loc[::7, "magnesium"] = np.nan
    data.to_csv(path, index=False)
    return path


def _diabetes_csv(path: Path) -> Path:
    data = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    data["sex"] = data["sex"].map({1.0: "F", 2.0: "M"})
    data.loc[::9, "bmi"] = np.nan
    data.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("make_csv", "target", "task", "metric"),
    [(_wine_csv, "cultivar", "classification", "accuracy"), (_diabetes_csv, "progression", "regression", "r2")],
)
def test_cli_trains_a_table_the_repo_does_not_ship(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_csv: object, target: str, task: str, metric: str
) -> None:
    # Given a CSV with numeric and categorical columns and gaps
    csv = make_csv(tmp_path / "table.csv")  # type: ignore[operator]
    store_root = tmp_path / "store"

    # When it is trained from the command line
    code = main(["train", "--data", str(csv), "--target", target, "--name", "mine", "--store", str(store_root)])

    # Then a version is published and promoted, with the task inferred and the ONNX runtime accepted
    assert code == 0
    assert "published mine v1" in capsys.readouterr().out
    store = ModelStore.from_uri(str(store_root))
    manifest = store.manifest("mine", 1)
    assert manifest.task == task
    assert manifest.metric.name == metric
    assert manifest.runtimes["onnx"].supported
    alias = store.alias("mine", "champion")
    assert alias is not None
    assert alias.record.version == 1


def test_cli_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--data",
        "--target",
        "--task",
        "--name",
        "--config",
        "--store",
        "--alias",
        "--serving-runtime",
        "--no-promote",
    ):
        assert option in out


def test_cli_reports_missing_data_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", str(tmp_path / "nope.csv"), "--store", str(tmp_path / "s")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_trains_from_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given the sample table as Parquet
    parquet = tmp_path / "penguins.parquet"
    fastparquet.write(str(parquet), pd.read_csv(PENGUINS_CSV))

    # When it is trained
    code = main(["train", "--data", str(parquet), "--store", str(tmp_path / "store")])

    # Then it gives the same data fingerprint rows and a promoted version
    assert code == 0
    manifest = ModelStore.from_uri(str(tmp_path / "store")).manifest("penguins", 1)
    assert manifest.data.rows == 344
    assert manifest.data.uri == str(parquet)


def _penguin_split() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    config = load_config()
    frame, _ = clean(pd.read_csv(PENGUINS_CSV), "species")
    features = select_features(frame, config)
    parts = split(frame, features, "species", "classification", config)
    return parts.x_train, parts.y_train, parts.x_test, parts.y_test


def test_split_stratifies_exactly_as_by_the_labels() -> None:
    # Given the sample data, split by the classes' positions (the training code)
    x_train, _, x_test, _ = _penguin_split()
    # When splitting it by the label strings themselves, as scikit-learn documents
    config = load_config()
    frame, _ = clean(pd.read_csv(PENGUINS_CSV), "species")
    names = select_features(frame, config).names
    by_labels = train_test_split(
        frame[names], frame["species"], test_size=0.2, random_state=42, stratify=frame["species"]
    )
    # Then the rows on each side are the same, in the same order
    assert x_train.index.tolist() == by_labels[0].index.tolist()
    assert x_test.index.tolist() == by_labels[1].index.tolist()


@pytest.mark.parametrize("seed", range(12))
def test_stratified_split_takes_the_rows_train_test_split_takes(seed: int) -> None:
    # Given labels of a few classes, some rare, and a test share, a seed
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 7))
    rows = int(rng.integers(20, 5000))
    codes = rng.choice(classes, size=rows, p=rng.dirichlet(np.ones(classes)))
    codes[: 2 * classes] = np.repeat(np.arange(classes), 2)  # every class at least twice
    codes = rng.permutation(codes)
    test_size = float(rng.choice([0.1, 0.2, 0.25, 0.33]))
    # When our split and scikit-learn's stratified split take their rows
    indices = model_module.stratified_split_indices(codes, test_size, seed)
    rows_index = np.arange(rows)
    train, test = train_test_split(rows_index, test_size=test_size, random_state=seed, stratify=codes)
    # Then they are the same rows, in the same order
    assert indices is not None
    np.testing.assert_array_equal(indices[0], train)
    np.testing.assert_array_equal(indices[1], test)


def test_stratified_split_leaves_what_scikit_learn_refuses_to_it() -> None:
    # Three classes cannot all be on the test side of a 5-row test set of two rows per class: scikit-learn's error
    assert model_module.stratified_split_indices(np.repeat(np.arange(3), 2), 0.2, 0) is None
    with pytest.raises(ValueError, match="test_size"):
        train_test_split(np.arange(6), test_size=0.2, random_state=0, stratify=np.repeat(np.arange(3), 2))


def test_split_of_integer_and_gapped_labels_is_scikit_learns() -> None:
    # Given integer labels, one of them missing in some rows (a Categorical's code -1)
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.random(400), "y": rng.choice([3.0, 1.0, 7.0, np.nan], size=400)})
    config = load_config()
    features = select_features(frame.assign(y=frame["y"].fillna(0)), config.with_overrides(target="y"))
    # When the training code splits it
    parts = split(frame, features, "y", "classification", config)
    # Then the rows are those of train_test_split stratified by the sorted classes' positions
    stratify = pd.Categorical(frame["y"], categories=sorted(frame["y"].dropna().unique().tolist())).codes
    expected = train_test_split(frame[features.names], test_size=0.2, random_state=42, stratify=stratify)
    assert parts.x_train.index.tolist() == expected[0].index.tolist()
    assert parts.x_test.index.tolist() == expected[1].index.tolist()


def test_evaluate_scores_as_scikit_learn_does_on_the_labels() -> None:
    # Given a fitted pipeline and its held-out rows
    trained = train(load_table(str(PENGUINS_CSV)), load_config())
    x, y = encode_frame(trained.x_test, trained.manifest.contract), trained.y_test
    # When evaluating it (on the labels' positions among the classes)
    scores = evaluate(trained.pipeline, x, y, "classification")
    # Then the scores are scikit-learn's on the labels themselves
    predicted = trained.pipeline.predict(x)
    expected = {
        "accuracy": accuracy_score(y, predicted),
        "balanced_accuracy": balanced_accuracy_score(y, predicted),
        "f1_macro": f1_score(y, predicted, average="macro"),
        "log_loss": log_loss(y, trained.pipeline.predict_proba(x), labels=trained.pipeline.classes_),
        "roc_auc": roc_auc_score(y, trained.pipeline.predict_proba(x), multi_class="ovr", average="macro"),
        "average_precision": average_precision_score(
            label_binarize(y, classes=trained.pipeline.classes_), trained.pipeline.predict_proba(x), average="macro"
        ),
    }
    assert scores == {name: round(float(value), 6) for name, value in expected.items()}


def test_evaluate_refuses_a_class_the_model_never_saw_as_before() -> None:
    # Given held-out rows with a class the model never saw
    trained = train(load_table(str(PENGUINS_CSV)), load_config())
    x, y = encode_frame(trained.x_test, trained.manifest.contract), trained.y_test.copy()
    y.iloc[0] = "Macaroni"
    # When evaluating: then log_loss refuses it, as it does on the labels
    with pytest.raises(ValueError, match=re.escape("y_true contains values {'Macaroni'} not belonging to the passed")):
        evaluate(trained.pipeline, x, y, "classification")


def test_code_version_is_the_built_stamp_where_there_is_no_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the training package as `sam build` packs it (outside any git checkout, CODE_VERSION beside it)
    stamp = tmp_path / "CODE_VERSION"
    stamp.write_text("0123456789ab\n")
    monkeypatch.setattr(lineage, "STAMPED_VERSION_FILE", stamp)
    monkeypatch.setattr(lineage, "PACKAGE_DIR", tmp_path)
    # Then the stamp is the code version; without it, a folder outside git has none
    assert lineage.code_version() == "0123456789ab"
    stamp.unlink()
    assert lineage.code_version() is None


def test_code_version_in_a_checkout_is_its_commit() -> None:
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", lineage.code_version() or ""), lineage.code_version()


@pytest.mark.parametrize(
    ("task", "metric_name"), [("classification", "accuracy"), ("classification", "log_loss"), ("regression", "rmse")]
)
def test_permutation_importances_equal_scikit_learns(task: str, metric_name: str) -> None:
    # Given a fitted pipeline with categorical and numeric inputs, and its held-out rows
    if task == "classification":
        trained = train(load_table(str(PENGUINS_CSV)), load_config(None))
        pipeline, x, y = trained.pipeline, encode_frame(trained.x_test, trained.manifest.contract), trained.y_test
    else:
        data = load_diabetes(as_frame=True)
        frame = data.frame.assign(sex=np.where(data.frame["sex"] > 0, "a", "b"))
        x, y = frame.drop(columns="target"), frame["target"]
        pipeline = make_pipeline(
            make_column_transformer((OneHotEncoder(), ["sex"]), remainder="passthrough"), Ridge()
        ).fit(x[:300], y[:300])
        x, y = x[300:], y[300:]
    metric = Metric(name=metric_name, greater_is_better=metric_name == "accuracy")
    function, response = evaluate_module._metric_function(metric, getattr(pipeline, "classes_", None))
    scorer = make_scorer(function, response_method=response, greater_is_better=metric.greater_is_better)
    # When both compute it with the same seed
    expected = permutation_importance(pipeline, x, y, scoring=scorer, n_repeats=4, random_state=7)
    means, stds = evaluate_module.permutation_importances(pipeline, x, y, metric, repeats=4, random_state=7)
    # Then they agree: same permutations, same scores (ours only batches the pipeline calls)
    np.testing.assert_allclose(means, expected.importances_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stds, expected.importances_std, rtol=1e-9, atol=1e-12)
    assert np.abs(means).max() > 0


def test_permuted_copies_are_scikit_learns_shuffles_one_below_the_other() -> None:
    # Given a table of numbers, text and missing values, and scikit-learn's shuffling of each column
    rng = np.random.default_rng(1)
    x = pd.DataFrame(
        {"n": rng.random(30), "t": rng.choice(["a", "b", None], size=30).astype(object), 3: rng.integers(0, 9, 30)},
        index=rng.permutation(np.arange(100, 130)),
    )
    repeats, seed = 3, 11
    expected = []
    for name in x.columns:
        generator, order, column = np.random.RandomState(seed), np.arange(len(x)), x[name]
        for _ in range(repeats):
            generator.shuffle(order)
            column = column.iloc[order].set_axis(x.index)
            copy = x.copy()
            copy[name] = column
            expected.append(copy)
    positions = []
    for _ in x.columns:
        generator, order, taken = np.random.RandomState(seed), np.arange(len(x)), np.arange(len(x))
        for _ in range(repeats):
            generator.shuffle(order)
            taken = taken[order]
            positions.append(taken)
    # When the copies are built as row positions, in batches
    for copies in (range(0, 9), range(2, 5), range(8, 9)):
        built = evaluate_module._permuted_copies(x, copies, positions, repeats)
        # Then each batch is the concatenation of those copies, value for value and type for type
        pd.testing.assert_frame_equal(built, pd.concat([expected[k] for k in copies], ignore_index=True))


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_equal_scikit_learns_exactly(classes: int, seed: int) -> None:
    # Given held-out labels (as class codes) and probabilities with many ties (rounded), some classes rare
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(20, 3000))
    truth = rng.choice(classes, size=rows, p=np.linspace(1, 3, classes) / np.linspace(1, 3, classes).sum())
    raw = rng.random((rows, classes)) + np.eye(classes)[truth] * rng.random()
    scores = np.round(raw / raw.sum(axis=1, keepdims=True), int(rng.integers(1, 6)))
    scores = scores / scores.sum(axis=1, keepdims=True)
    labels = np.arange(classes)
    # When our ranking metrics and scikit-learn's score them
    if classes == 2:
        expected_auc = roc_auc_score(truth == 1, scores[:, 1])
        expected_ap = average_precision_score(truth == 1, scores[:, 1])
    else:
        expected_auc = roc_auc_score(truth, scores, multi_class="ovr", average="macro", labels=list(labels))
        indicator = label_binarize(truth, classes=list(labels))
        present = indicator.any(axis=0)
        expected_ap = average_precision_score(indicator[:, present], scores[:, present], average="macro")
    # Then the values are the same floats, not merely close, each alone or sharing the sorted scores
    assert evaluate_module.roc_auc(truth, scores, labels) == float(expected_auc)
    assert evaluate_module.average_precision(truth, scores, labels) == float(expected_ap)
    curves: evaluate_module.Curves = {}
    assert evaluate_module.roc_auc(truth, scores, labels, curves) == float(expected_auc)
    assert evaluate_module.average_precision(truth, scores, labels, curves) == float(expected_ap)
    assert curves


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(8))
def test_log_loss_equals_scikit_learns_exactly(dtype: type, seed: int) -> None:
    # Given class codes and probabilities (some exactly 0 or 1, so clipped), as a pipeline or ONNX gives them
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 6))
    rows = int(rng.integers(1, 3000))
    truth = rng.integers(0, classes, size=rows)
    raw = rng.random((rows, classes)) ** 3
    raw[rng.random((rows, classes)) < 0.05] = 0.0
    raw[rng.integers(0, rows, size=max(1, rows // 50)), 0] = 1e9
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    probabilities: np.ndarray = (raw / raw.sum(axis=1, keepdims=True)).astype(dtype)
    labels = np.arange(classes)
    # When ours and scikit-learn's score them
    ours = evaluate_module._log_loss(truth, probabilities, labels)
    # Then the value is the same float
    assert ours is not None
    assert ours == log_loss(truth, probabilities, labels=labels)


def test_log_loss_leaves_what_scikit_learn_checks_to_it() -> None:
    truth, labels = np.array([0, 1, 1]), np.arange(2)
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert evaluate_module._log_loss(truth, good, labels) is not None
    assert evaluate_module._log_loss(truth, good * 0.5, labels) is None  # not probabilities: scikit-learn warns
    assert evaluate_module._log_loss(truth, good + 0.5, labels) is None  # above 1: scikit-learn raises
    assert evaluate_module._log_loss(np.array([0, 1, 2]), good, labels) is None  # a label that is not a class
    assert evaluate_module._log_loss(truth, good, np.array(["a", "b"])) is None  # labels, not codes
    assert evaluate_module._log_loss(truth, np.where(good == 0.5, np.nan, good), labels) is None


def test_ranking_metrics_refuse_what_scikit_learn_refuses() -> None:
    # Given multi-class scores that are not probabilities, and binary scores with a NaN
    truth = np.array([0, 1, 2, 0, 1, 2])
    # Then scikit-learn's error is raised as before
    with pytest.raises(ValueError, match="probabilities"):
        evaluate_module.roc_auc(truth, np.full((6, 3), 0.5), np.arange(3))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_module.roc_auc(truth % 2, np.array([0.1, 0.2, np.nan, 0.4, 0.5, 0.6]), np.arange(2))


@pytest.mark.parametrize("seed", range(8))
def test_counted_metrics_equal_scikit_learns_exactly(seed: int) -> None:
    # Given class codes with a class nobody predicts and, at some seeds, a class only predicted
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 6))
    rows = int(rng.integers(5, 2000))
    truth = rng.integers(0, classes - (seed % 2), size=rows)
    predicted = np.where(rng.random(rows) < 0.7, truth, rng.integers(0, classes, size=rows))
    predicted[predicted == 0] = 1 % classes
    codes = np.arange(classes)
    # When they are counted once and scored from the counts
    counts = evaluate_module._code_counts(truth, predicted, codes)
    assert counts is not None
    present = evaluate_module._present(counts)
    # Then every value is scikit-learn's, the same float
    np.testing.assert_array_equal(counts, confusion_matrix(truth, predicted, labels=codes))
    assert float(np.mean(truth == predicted)) == accuracy_score(truth, predicted)
    assert evaluate_module._f1_macro(present) == f1_score(truth, predicted, average="macro")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert evaluate_module._balanced_accuracy(present) == balanced_accuracy_score(truth, predicted)


def test_counted_metrics_step_aside_for_labels_that_are_not_codes() -> None:
    codes = np.arange(2)
    assert evaluate_module._code_counts(np.array(["a", "b"], dtype=object), np.array(["a", "a"]), codes) is None
    assert evaluate_module._code_counts(np.array([0, 2]), np.array([0, 1]), codes) is None
    assert evaluate_module._code_counts(np.array([0, 1]), np.array([0, 1]), np.array(["a", "b"])) is None
