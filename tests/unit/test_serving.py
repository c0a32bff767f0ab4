"""Serving correctness through the real handler: the served predictions equal the scikit-learn pipeline's (a
classifier, a random forest, a regressor), and a tampered or non-parity ONNX artifact is refused at load while
the last good version keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from sklambda.contract import ContractViolation
from sklambda.contract_derivation import encode_frame, frame_to_instances, model_inputs
from sklambda.errors import VersionRefused
from sklambda.manifest import Manifest
from sklambda.request_validation import Columns
from sklambda.runtimes import Prediction, load_predictor
from sklambda.runtimes.sklearn import load_pipeline
from sklambda.serving import (
    PROBABILITY_TOLERANCE,
    REGRESSION_ATOL,
    REGRESSION_RTOL,
    LoadedModel,
    local_self_test,
    served,
)
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, REPO, LambdaContext, load_event
from training.cli import main
from training.config import load_config
from training.dataset import load_table
from training.pipeline import train

pytestmark = pytest.mark.unit

FOREST_CONFIG = REPO / "benchmarks" / "random_forest.toml"


def serve(fresh_handler: Callable[..., ModuleType], store: Path, name: str, **environment: str) -> ModuleType:
    return fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(store),
        MODEL_NAME=name,
        ALIAS_REFRESH_SECONDS="0",
        **environment,
    )


def predict(app: ModuleType, instances: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    event = load_event("predict") | {"body": json.dumps({"instances": instances})}
    response = app.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def get(app: ModuleType, event_name: str) -> dict[str, Any]:
    event = load_event(event_name)
    body: dict[str, Any] = json.loads(app.lambda_handler(event, LambdaContext())["body"])
    return body


def champion(store: Path, name: str) -> tuple[Manifest, Any]:
    models = ModelStore.from_uri(str(store))
    state = models.alias(name, "champion")
    assert state is not None
    manifest = models.manifest(name, state.record.version)
    return manifest, load_pipeline(models.artifact(manifest, "model.joblib"))


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize(
    ("config", "runtime"),
    [(None, "onnx"), (FOREST_CONFIG, "onnx"), (None, "sklearn")],
    ids=["logistic-regression", "random-forest-100", "logistic-regression-sklearn-runtime"],
)
def test_served_classes_and_probabilities_equal_the_pipeline(
    fresh_handler: Callable[..., ModuleType], tmp_path: Path, config: Path | None, runtime: str
) -> None:
    # Given the sample data trained with the default pipeline, or a 100-tree random forest
    store = tmp_path / "store"
    extra = ["--config", str(config)] if config else []
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", str(store), "--name", "penguins", *extra]) == 0
    manifest, pipeline = champion(store, "penguins")
    app = serve(fresh_handler, store, "penguins", MAX_ROWS="1000", SERVING_RUNTIME=runtime)
    # When every row of the data set (with its gaps) is sent through the handler
    frame = pd.read_csv(PENGUINS_CSV)
    status, reply = predict(app, frame_to_instances(frame, manifest.contract.names))
    # Then the served classes are the pipeline's, row for row, and the probabilities agree within the tolerance
    assert status == 200, reply
    encoded = encode_frame(frame, manifest.contract)
    assert reply["predictions"] == pipeline.predict(encoded).tolist()
    gap = np.abs(np.asarray(reply["probabilities"]) - pipeline.predict_proba(encoded)).max()
    assert gap <= PROBABILITY_TOLERANCE


@pytest.mark.parametrize("config", [None, FOREST_CONFIG], ids=["logistic-regression", "random-forest-100"])
def test_the_sklearn_runtime_gives_the_pipelines_own_labels_and_probabilities(config: Path | None) -> None:
    # Given a trained pipeline, and the scikit-learn runtime loaded from its artifact
    trained = train(load_table(str(PENGUINS_CSV)), load_config(config))
    contract = trained.manifest.contract
    predictor = load_predictor("sklearn", trained.files["model.joblib"], contract)
    encoded = encode_frame(pd.read_csv(PENGUINS_CSV), contract)
    # When it predicts the rows as serving builds them (its steps before the estimator run once)
    prediction = predictor.predict(model_inputs(encoded, contract, np.float64))
    # Then the labels and probabilities are the pipeline's predict and predict_proba, the same floats
    assert prediction.labels.tolist() == trained.pipeline.predict(encoded).tolist()
    assert prediction.probabilities is not None
    np.testing.assert_array_equal(prediction.probabilities, trained.pipeline.predict_proba(encoded))


def test_served_regression_equals_the_pipeline(fresh_handler: Callable[..., ModuleType], tmp_path: Path) -> None:
    # Given a regression data set (scikit-learn's diabetes, with a categorical column and gaps) trained as usual
    data = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    data["sex"] = data["sex"].map({1.0: "F", 2.0: "M"})
    data.loc[::9, "bmi"] = np.nan
    csv = tmp_path / "diabetes.csv"
    data.to_csv(csv, index=False)
    store = tmp_path / "store"
    command = ["train", "--data", str(csv), "--store", str(store), "--name", "diabetes", "--target", "progression"]
    assert main(command) == 0
    manifest, pipeline = champion(store, "diabetes")
    app = serve(fresh_handler, store, "diabetes", MAX_ROWS="1000")
    # When every row is sent through the handler
    status, reply = predict(app, frame_to_instances(data, manifest.contract.names))
    # Then the served values are the pipeline's within the regression tolerance, and no classes are claimed
    assert status == 200, reply
    assert "classes" not in reply
    assert "probabilities" not in reply
    expected = pipeline.predict(encode_frame(data, manifest.contract))
    np.testing.assert_allclose(reply["predictions"], expected, rtol=REGRESSION_RTOL, atol=REGRESSION_ATOL)


# ------------------------------------------------------------------------------------------ refusals


def other_onnx() -> bytes:
    """The ONNX of a different model with the same inputs (much weaker regularisation): valid, but not v1."""
    config = load_config()
    params = {"classification": {"C": 0.001, "max_iter": 1000}}
    config = config.model_copy(update={"estimator": config.estimator.model_copy(update={"params": params})})
    return train(load_table(str(PENGUINS_CSV)), config).files["model.onnx"]


def publish_copy_of_v1(store: ModelStore, **files: bytes) -> int:
    """A v2 with v1's manifest (so v1's golden outputs) and v1's files, some replaced."""
    v1 = store.manifest("penguins", 1)
    contents = {file: store.artifact(v1, file) for file in v1.artifacts} | files
    return store.publish(v1.model_copy(update={"manifest_sha256": None}), contents).version


def test_a_tampered_artifact_is_refused_and_the_last_good_version_keeps_serving(
    fresh_handler: Callable[..., ModuleType], local_store_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a function serving v1, and a v2 whose model.onnx is changed on disk after publishing
    app = serve(fresh_handler, local_store_copy, "penguins")
    store = ModelStore.from_uri(str(local_store_copy))
    assert predict(app, json.loads(load_event("predict")["body"])["instances"])[1]["model"]["version"] == 1
    version = publish_copy_of_v1(store)
    onnx = local_store_copy / "penguins" / "versions" / f"{version:06d}" / "model.onnx"
    onnx.chmod(0o600)
    onnx.write_bytes(onnx.read_bytes()[:-8] + b"tampered")
    # When the alias is moved to v2 without any check
    store.promote("penguins", version, by="test", reason="tampered")
    capsys.readouterr()
    status, reply = predict(app, json.loads(load_event("predict")["body"])["instances"])
    # Then v2 is refused (its bytes do not match the manifest's sha256) and v1 answers
    assert (status, reply["model"]["version"]) == (200, 1)
    health = get(app, "health")
    assert health["model"]["version"] == 1
    assert "refused penguins v2" in health["problem"]
    assert "do not match their checksums" in health["problem"]
    # (the detail, which file and which checksum, only in the log)
    assert "does not match the manifest's" not in health["problem"]
    assert '"ModelLoadRefused"' in capsys.readouterr().out


def test_a_non_parity_artifact_is_refused_at_load_and_at_promotion(
    fresh_handler: Callable[..., ModuleType], local_store_copy: Path
) -> None:
    # Given a function serving v1, and a v2 whose ONNX is a valid, checksummed graph of another model
    app = serve(fresh_handler, local_store_copy, "penguins")
    store = ModelStore.from_uri(str(local_store_copy))
    version = publish_copy_of_v1(store, **{"model.onnx": other_onnx()})
    # When promotion asks the serving runtime first (as the gate and the promote paths do)
    with pytest.raises(VersionRefused, match="failed its self-test: 5 of 20 golden classes differ"):
        store.promote("penguins", version, by="test", reason="gated", check=local_self_test(store, "onnx"))
    # Then the alias did not move
    state = store.alias("penguins", "champion")
    assert state is not None
    assert state.record.version == 1
    # And when the alias is forced onto it anyway, the function refuses to load it and keeps serving v1
    store.promote("penguins", version, by="test", reason="forced")
    status, reply = predict(app, json.loads(load_event("predict")["body"])["instances"])
    assert (status, reply["model"]["version"]) == (200, 1)
    assert "failed its self-test" in get(app, "health")["problem"]
    # And once the alias is back on a good version, the problem is gone
    store.rollback("penguins", by="test", reason="back to v1")
    assert get(app, "health") == {
        "status": "ok",
        "model": {"name": "penguins", "version": 1, "runtime": "onnx"},
        "problem": None,
    }


def test_a_version_the_runtime_cannot_serve_is_refused(local_store_copy: Path) -> None:
    # Given a version recorded as not convertible to ONNX (the sklearn runtime would serve it)
    store = ModelStore.from_uri(str(local_store_copy))
    v1 = store.manifest("penguins", 1)
    runtimes = v1.runtimes | {"onnx": replace(v1.runtimes["onnx"], supported=False, detail="no")}
    files = {"model.joblib": store.artifact(v1, "model.joblib")}
    stored = store.publish(v1.model_copy(update={"runtimes": runtimes, "manifest_sha256": None}), files)
    # When the ONNX serving check runs, then it refuses; the sklearn runtime accepts it
    with pytest.raises(VersionRefused, match="cannot be served by the onnx runtime: no"):
        local_self_test(store, "onnx")(stored)
    local_self_test(store, "sklearn")(stored)


def test_rows_the_model_cannot_score_are_a_422_naming_them(local_store_copy: Path) -> None:
    # Given a model whose output for some rows is not finite (float32 overflow inside the model)
    store = ModelStore.from_uri(str(local_store_copy))
    manifest = store.manifest("penguins", 1)

    class Overflowing:
        def predict(self, columns: Any) -> Prediction:
            probabilities = np.array([[0.2, 0.3, 0.5], [np.nan, np.nan, np.nan], [0.1, np.inf, 0.0]])
            labels = np.array(["Gentoo", "Adelie", "Adelie"], dtype=object)
            return Prediction(labels=labels, probabilities=probabilities)

    model = LoadedModel(manifest, "onnx", Overflowing(), 0.0, validator=None)  # type: ignore[arg-type]
    # When it predicts
    with pytest.raises(ContractViolation) as refused:
        model.predict(Columns(None, None, {}))
    # Then those rows are named, not answered with null probabilities
    assert [problem.row for problem in refused.value.problems] == [1, 2]
    assert refused.value.problems[0].message.startswith("the model gives no finite output for this row")


# ------------------------------------------------------------------------------------------ input layouts


def test_the_onnx_artifact_takes_one_tensor_per_kind_of_feature(local_store_copy: Path) -> None:
    import onnxruntime as ort

    # Given the sample model as training stores it (5 numeric and 2 categorical features)
    store = ModelStore.from_uri(str(local_store_copy))
    v1 = store.manifest("penguins", 1)
    contract = v1.contract
    # When its ONNX artifact is opened
    session = ort.InferenceSession(store.artifact(v1, "model.onnx"), providers=["CPUExecutionProvider"])
    # Then it has two inputs, as wide as the contract has features of each kind
    widths = {node.type: node.shape[1] for node in session.get_inputs()}
    assert widths == {
        "tensor(float)": sum(feature.kind == "numeric" for feature in contract.features),
        "tensor(string)": sum(feature.kind == "categorical" for feature in contract.features),
    }


def test_a_version_converted_with_one_input_per_column_still_loads_and_serves(local_store_copy: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    from sklambda.runtimes.onnx import OnnxPredictor
    from sklambda.serving import load_version

    # Given a v2 whose ONNX was converted as before inputs were grouped: one (rows, 1) input per feature
    store = ModelStore.from_uri(str(local_store_copy))
    v1 = store.manifest("penguins", 1)
    pipeline = load_pipeline(store.artifact(v1, "model.joblib"))
    initial_types = [
        (feature.name, FloatTensorType([None, 1]) if feature.kind == "numeric" else StringTensorType([None, 1]))
        for feature in v1.contract.features
    ]
    options = {id(pipeline.steps[-1][1]): {"zipmap": False}}  # type: ignore[attr-defined]
    per_column = convert_sklearn(pipeline, initial_types=initial_types, options=options).SerializeToString()
    version = publish_copy_of_v1(store, **{"model.onnx": per_column})
    # When it is loaded by the serving runtime (checksum, session, parity self-test)
    loaded = load_version(store, store.served_manifest("penguins", version), "onnx")
    # Then it serves, through its per-column inputs, the same outputs as the grouped v1
    assert isinstance(loaded.predictor, OnnxPredictor)
    assert not loaded.predictor.grouped
    grouped = load_version(store, served(v1), "onnx")
    assert isinstance(grouped.predictor, OnnxPredictor)
    assert grouped.predictor.grouped
    rows = json.loads(load_event("predict")["body"])["instances"]
    old, new = (model.predict(model.validator.records(rows)) for model in (loaded, grouped))
    assert old.labels.tolist() == new.labels.tolist()
    assert old.probabilities is not None
    assert new.probabilities is not None
    np.testing.assert_allclose(old.probabilities, new.probabilities, atol=1e-6)


@pytest.mark.parametrize("size", [1, 3, 64, 65, 3000])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_the_finite_check_agrees_with_numpy_at_every_size(size: int, bad: float | None) -> None:
    # Given scores of a small or large request, all finite or with one NaN / infinity
    from sklambda.serving import _all_finite

    scores = np.linspace(-3e38, 3e38, size, dtype=np.float32).reshape(-1, 1 if size % 3 else 3)
    if bad is not None:
        scores.flat[size // 2] = bad
    # Then the check says what np.isfinite says
    assert _all_finite(scores) == bool(np.isfinite(scores).all()) == (bad is None)
