"""Bring your own pipeline: the [pipeline] factory, the custom transformer of the worked example and its ONNX
converter, a pipeline that does not convert (served by scikit-learn only, said plainly), and the configuration's
error messages, each exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import sklambda_examples.ratios_onnx  # noqa: F401 - registers the converter
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklambda_examples.ratios import RatioFeatures
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from sklambda.errors import ConfigError, DataError
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, REPO
from tests.unit.test_predict_imports import loaded_modules
from training.cli import main
from training.config import load_config
from training.dataset import load_table
from training.model import CUSTOM_CODE_HINT
from training.pipeline import train

pytestmark = pytest.mark.unit

EXAMPLE = REPO / "training" / "examples" / "forest_ratios.toml"


def config_file(tmp_path: Path, body: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text('[model]\nname = "mine"\ntarget = "species"\n' + body)
    return path


# ------------------------------------------------------------------------------------------- the custom step


def test_ratio_features_append_one_ratio_per_pair_and_leave_bad_denominators_missing() -> None:
    # Given a table with a zero and a missing denominator
    frame = pd.DataFrame({"a": [6.0, 1.0, 2.0, np.nan], "b": [3.0, 0.0, np.nan, 2.0]})

    # When the ratio a / b is appended
    step = RatioFeatures([("a", "b")]).fit(frame)
    out = step.transform(frame)

    # Then the input passes through and the ratio is missing where it cannot be computed
    np.testing.assert_array_equal(out[:, :2], frame.to_numpy())
    np.testing.assert_array_equal(out[:, 2], [2.0, np.nan, np.nan, np.nan])
    assert step.get_feature_names_out().tolist() == ["a", "b", "a_per_b"]


def test_ratio_features_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"columns \['c'\] are not among its input columns \['a', 'b'\]"):
        RatioFeatures([("a", "c")]).fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    with pytest.raises(ValueError, match="needs named columns: fit it on a DataFrame"):
        RatioFeatures([("a", "b")]).fit(np.ones((2, 2)))


def test_the_onnx_converter_computes_what_scikit_learn_computes() -> None:
    # Given the custom step inside a ColumnTransformer branch, fitted on values that include a zero and a missing
    # denominator
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(10, 3, 200), "b": rng.normal(5, 2, 200), "c": rng.normal(0, 1, 200)})
    frame.loc[::17, "b"] = 0.0
    frame.loc[::23, "a"] = np.nan
    pipeline = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [("numeric", Pipeline([("ratios", RatioFeatures([("a", "b"), ("c", "b")])),
                                           ("impute", SimpleImputer(strategy="median"))]), ["a", "b", "c"])]
                ),
            ),
        ]
    )  # fmt: skip
    expected = pipeline.fit_transform(frame)

    # When it is converted (the registered converter) and run by ONNX Runtime on the same rows
    onnx = convert_sklearn(pipeline, initial_types=[(name, FloatTensorType([None, 1])) for name in "abc"])
    session = ort.InferenceSession(onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {name: frame[[name]].to_numpy(np.float32) for name in "abc"}
    (got,) = session.run(None, feeds)

    # Then the outputs agree to float32 precision, the imputed missing ratios included
    assert got.shape == expected.shape == (200, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- the factory


def test_the_example_pipeline_trains_converts_and_records_where_it_came_from() -> None:
    # Given the second example configuration (its own pipeline: ratio features + a random forest)
    config = load_config(EXAMPLE)

    # When it is trained on the sample data
    trained = train(load_table(str(PENGUINS_CSV)), config)

    # Then nothing of the standard preprocessing was put in front, and it converts to ONNX with its custom step
    manifest = trained.manifest
    assert manifest.estimator == "sklearn.ensemble._forest.RandomForestClassifier"
    assert manifest.training["pipeline"] == {
        "factory": "sklambda_examples.pipelines:forest_with_ratios",
        "steps": [
            "features/numeric/ratios: RatioFeatures",
            "features/numeric/impute: SimpleImputer",
            "features/categorical: OneHotEncoder",
            "model: RandomForestClassifier",
        ],
    }
    assert manifest.runtimes["onnx"].supported, manifest.runtimes["onnx"].detail
    assert manifest.metrics["accuracy"] > 0.95
    # And the ratios matter to it (they carry the bill shape that tells the species apart)
    assert manifest.held_out is not None
    importance = {item.feature: item.mean for item in manifest.held_out.importance}
    assert importance["bill_length_mm"] > 0


def factory_without_converter(*, numeric: list[str], categorical: list[str], max_iter: int = 1000) -> Pipeline:
    """A pipeline with a step skl2onnx cannot convert (a FunctionTransformer with a function)."""
    features = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer()), ("log", FunctionTransformer(np.log1p))]), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )
    return Pipeline([("features", features), ("model", LogisticRegression(max_iter=max_iter))])


def test_a_pipeline_that_does_not_convert_is_served_by_scikit_learn_only_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a configuration whose pipeline has a step without an ONNX converter
    config = config_file(
        tmp_path, f'[pipeline]\nfactory = "{__name__}:factory_without_converter"\nparams = {{ max_iter = 500 }}\n'
    )
    store = tmp_path / "store"

    # When it is trained for the default (ONNX) serving runtime
    code = main(["train", "--data", str(PENGUINS_CSV), "--config", str(config), "--store", str(store)])

    # Then the version is published, recorded as not servable by ONNX Runtime with the reason and what to do,
    # and not promoted: the ONNX runtime refused it
    out = capsys.readouterr().out
    assert code == 0
    manifest = ModelStore.from_uri(str(store)).manifest("mine", 1)
    onnx = manifest.runtimes["onnx"]
    assert not onnx.supported
    assert onnx.detail is not None
    assert onnx.detail.startswith("does not convert to ONNX (")
    assert onnx.detail.endswith(
        "serve it with the scikit-learn runtime (template parameter ServingRuntime=sklearn; on this machine "
        "--serving-runtime sklearn), or register a skl2onnx converter for the step that does not convert and name "
        "its module in [onnx] converters"
    )
    assert "  serving: scikit-learn runtime only (ServingRuntime=sklearn): does not convert to ONNX (" in out
    assert "not promoted (champion unchanged): serving self-test: the serving runtime refused it: mine v1 cannot " \
        "be served by the onnx runtime: does not convert to ONNX" in out  # fmt: skip
    files = ModelStore.from_uri(str(store)).version_files("mine", 1)
    assert "model.joblib" in files
    assert "model.onnx" not in files

    # When it is trained for the scikit-learn serving runtime
    code = main(
        ["train", "--data", str(PENGUINS_CSV), "--config", str(config), "--store", str(store),
         "--serving-runtime", "sklearn"]
    )  # fmt: skip

    # Then it is promoted
    assert code == 0
    assert "promoted to champion" in capsys.readouterr().out


def bare_tree(*, random_state: int) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=4, random_state=random_state)


def test_a_factory_may_return_a_bare_estimator_which_then_gets_no_preprocessing(tmp_path: Path) -> None:
    # Given numeric features only (a tree takes missing numbers as they are) and a factory returning an estimator
    config = load_config(
        config_file(
            tmp_path,
            '[features]\nnumeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]\ncategorical = []\n'
            f'[pipeline]\nfactory = "{__name__}:bare_tree"\n',
        )
    )

    # When it is trained
    trained = train(load_table(str(PENGUINS_CSV)), config)

    # Then the estimator gets the columns as they are (a pass-through selection in the contract's order), with
    # the configured seed, and the pipeline converts to ONNX
    assert [name for name, _ in trained.pipeline.steps] == ["columns", "model"]
    assert trained.pipeline.named_steps["columns"].transformers == [
        ("columns", "passthrough", ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"])
    ]
    assert trained.pipeline.named_steps["model"].random_state == 42
    assert trained.manifest.runtimes["onnx"].supported, trained.manifest.runtimes["onnx"].detail


def regressor_factory() -> Any:
    return LinearRegression()


def not_an_estimator() -> Any:
    return "a string"


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        pytest.param(
            f'factory = "{__name__}:regressor_factory"',
            f"pipeline factory '{__name__}:regressor_factory' is not a classifier, but the task is classification",
            id="wrong-task",
        ),
        pytest.param(
            f'factory = "{__name__}:not_an_estimator"',
            f"pipeline factory '{__name__}:not_an_estimator' returned str, not a scikit-learn estimator",
            id="not-an-estimator",
        ),
        pytest.param(
            'factory = "no_such_package.pipelines:build"',
            "pipeline factory 'no_such_package.pipelines:build': cannot import no_such_package.pipelines: "
            f"No module named 'no_such_package'; {CUSTOM_CODE_HINT}",
            id="not-importable",
        ),
        pytest.param(
            'factory = "sklambda_examples.pipelines:forest_with_ratios"\n'
            'params = { ratios = [["bill_length_mm", "beak_mm"]] }',
            "pipeline factory 'sklambda_examples.pipelines:forest_with_ratios' with params {'ratios': "
            "[['bill_length_mm', 'beak_mm']], 'task': 'classification', 'random_state': 42}: ratios name columns "
            "that are not numeric features: ['beak_mm']",
            id="bad-params",
        ),
    ],
)
def test_a_factory_that_gives_the_wrong_thing_is_a_clear_configuration_error(
    tmp_path: Path, pipeline: str, message: str
) -> None:
    config = load_config(config_file(tmp_path, f"[pipeline]\n{pipeline}\n"))
    with pytest.raises(ConfigError) as caught:
        train(load_table(str(PENGUINS_CSV)), config)
    assert str(caught.value) == message


def test_a_converter_module_that_does_not_import_is_a_clear_configuration_error(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, '[onnx]\nconverters = ["my_transformers.onnx"]\n'))
    with pytest.raises(ConfigError) as caught:
        train(load_table(str(PENGUINS_CSV)), config)
    assert str(caught.value) == (
        "[onnx] converters: cannot import 'my_transformers.onnx': No module named 'my_transformers'; "
        + CUSTOM_CODE_HINT
    )


# ------------------------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            "[evaluation]\ntset_size = 0.3\n",
            "  evaluation.tset_size: unknown key (did you mean 'test_size'?); [evaluation] takes: metric, test_size, "
            "random_state, golden_rows, importance_repeats, importance_rows",
            id="unknown-key",
        ),
        pytest.param(
            "[estimators]\nclassification = 'x:y'\n",
            "  estimators: unknown key (did you mean 'estimator'?); the file takes: model, features, estimator, "
            "pipeline, onnx, evaluation, data, gate, budget",
            id="unknown-section",
        ),
        pytest.param(
            "[evaluation]\ntest_size = 'a fifth'\n",
            "  evaluation.test_size: Input should be a valid number, unable to parse string as a number "
            "(got 'a fifth')",
            id="wrong-type",
        ),
        pytest.param(
            "[evaluation]\ntest_size = 2\n",
            "  evaluation.test_size: Input should be less than 1 (got 2)",
            id="out-of-range",
        ),
        pytest.param(
            "[features]\nnumeric = 'bill_length_mm'\n",
            "  features.numeric.literal['auto']: Input should be 'auto' (got 'bill_length_mm')\n"
            "  features.numeric.list[str]: Input should be a valid list (got 'bill_length_mm')",
            id="wrong-type-union",
        ),
        pytest.param(
            "[pipeline]\nfactory = 'forest_with_ratios'\n",
            "  pipeline.factory: 'forest_with_ratios' is not 'module:function' "
            "(e.g. 'sklearn.ensemble:RandomForestClassifier')",
            id="not-module-function",
        ),
        pytest.param(
            "[pipeline]\nparams = { n_estimators = 10 }\n",
            "  pipeline.factory: required, but missing",
            id="missing-key",
        ),
        pytest.param(
            "[estimator]\nclassification = 'sklearn.ensemble:RandomForestClassifier'\n"
            "[pipeline]\nfactory = 'sklambda_examples.pipelines:forest_with_ratios'\n",
            "  give [estimator] (your estimator after the standard preprocessing) or [pipeline] (your whole "
            "pipeline, its own preprocessing), not both",
            id="both",
        ),
    ],
)
def test_configuration_errors_name_the_key_and_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    path = config_file(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"invalid training configuration in {path}:\n{message}"


def test_a_target_that_is_not_in_the_data_names_the_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s")
    code = main(["train", "--data", str(PENGUINS_CSV), "--name", "mine", "--target", "spieces", "--store", store])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: the training data cannot be used: the target column 'spieces' of model 'mine' is not in the data "
        "(its columns: species, island, bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g, sex, year): "
        "name the column to predict with --target\n"
    )


def test_a_target_that_contradicts_the_configured_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the sample configuration (model "penguins" predicts "species") and no name of the user's own
    code = main(["train", "--data", str(PENGUINS_CSV), "--target", "island", "--store", str(tmp_path / "s")])
    # Then nothing is trained under "penguins" with another target: the error says how to name a model
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --target 'island' contradicts the configuration: its model 'penguins' predicts")
    assert "--name NAME or $MODEL_NAME" in err
    assert not (tmp_path / "s" / "penguins").exists()


def test_a_configured_feature_that_is_not_in_the_data_is_named(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, '[features]\nnumeric = ["bill_length_mm", "beak_mm", "wing_mm"]\n'))
    with pytest.raises(DataError) as caught:
        train(load_table(str(PENGUINS_CSV)), config)
    assert str(caught.value) == "configured feature(s) not in the data: beak_mm, wing_mm"


def test_a_relative_config_path_is_also_found_beside_the_training_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a working directory that is not the checkout (in Lambda it is /var/task; training/ is in a layer)
    monkeypatch.chdir(tmp_path)
    # When the example is named as it is from the checkout's root
    config = load_config("training/examples/forest_ratios.toml")
    # Then it is read from beside the training package
    assert config.model.name == "penguins-ratios"
    with pytest.raises(ConfigError, match=r"training configuration nope\.toml does not exist"):
        load_config("nope.toml")


def test_the_scikit_learn_runtime_loads_the_custom_step_from_the_shared_layer_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the example pipeline trained into a store (under the name the probe serves)
    store = tmp_path / "store"
    args = ["train", "--data", str(PENGUINS_CSV), "--config", str(EXAMPLE), "--name", "penguins", "--store", str(store)]
    assert main(args) == 0

    # When the predict function starts in a fresh interpreter with the scikit-learn runtime and answers
    status, modules = loaded_modules(store, "sklearn")

    # Then it unpickled the custom step from the shared layer's package, without the training package and
    # without skl2onnx (the converter module is training's business)
    assert status == 200
    assert "sklambda_examples" in modules
    assert modules & {"training", "skl2onnx", "onnx"} == set()


def test_a_wrong_estimator_parameter_is_a_configuration_error_not_a_crash(tmp_path: Path) -> None:
    # Given a parameter value scikit-learn refuses (it checks them when fitting)
    config = load_config(
        config_file(
            tmp_path,
            '[estimator]\nclassification = "sklearn.ensemble:RandomForestClassifier"\n'
            '[estimator.params.classification]\nn_estimators = "many"\n',
        )
    )
    # When it is trained, the configuration is blamed, with scikit-learn's words
    with pytest.raises(ConfigError) as caught:
        train(load_table(str(PENGUINS_CSV)), config)
    assert str(caught.value) == (
        "The 'n_estimators' parameter of RandomForestClassifier must be an int in the range [1, inf). Got 'many' "
        "instead. (see [estimator.params] or [pipeline.params] in the configuration)"
    )
