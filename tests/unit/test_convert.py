"""Shortcuts that must not change a result: the ONNX conversion without skl2onnx's option walk gives the same model,
and labels with probabilities in one pass are the pipeline's own predict and predict_proba."""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge

from sklambda.contract_derivation import derive_contract, encode_frame
from tests.conftest import PENGUINS_CSV
from training import convert
from training.dataset import clean
from training.features import FeatureSet
from training.model import build_pipeline, predict_with_probabilities

pytestmark = pytest.mark.unit


def test_a_forest_converts_to_the_same_graph_without_skl2onnx_walking_its_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a fitted forest pipeline on the sample data (numbers and categories)
    frame, _ = clean(pd.read_csv(PENGUINS_CSV), "species")
    features = FeatureSet(
        numeric=["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"], categorical=["island", "sex"]
    )
    contract = derive_contract(
        frame, numeric=features.numeric, categorical=features.categorical, target="species", task="classification"
    )
    pipeline = build_pipeline(features, RandomForestClassifier(n_estimators=5, random_state=0))
    pipeline.fit(encode_frame(frame, contract), frame["species"])

    # When converting it with the shortcut, and with skl2onnx resolving the options itself
    fast, support = convert.to_onnx(pipeline, contract)
    monkeypatch.setattr(convert, "_options_taken_as_given", lambda _options: contextlib.nullcontext())
    slow, _ = convert.to_onnx(pipeline, contract)

    # Then both are the same model (the graph's name is a fresh random id at every conversion)
    assert fast is not None
    assert slow is not None
    assert support.supported
    with_shortcut, without = onnx.load_from_string(fast), onnx.load_from_string(slow)
    assert with_shortcut.graph.name != without.graph.name
    with_shortcut.graph.name = without.graph.name
    assert with_shortcut == without
    # And skl2onnx's own resolution is back in place after the conversion
    import skl2onnx.convert

    assert skl2onnx.convert._process_options.__module__ == "skl2onnx.common.utils_sklearn"


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=7, random_state=0),
        ExtraTreesClassifier(n_estimators=7, random_state=0),
        LogisticRegression(max_iter=1000),
        Ridge(),
    ],
    ids=["forest", "extra trees", "logistic regression", "ridge (no probabilities)"],
)
def test_labels_and_probabilities_in_one_pass_are_the_pipelines_own(estimator: BaseEstimator) -> None:
    # Given a fitted pipeline on the sample data (numbers and categories, missing values among them)
    frame, _ = clean(pd.read_csv(PENGUINS_CSV), "species")
    features = FeatureSet(
        numeric=["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"], categorical=["island", "sex"]
    )
    regression = isinstance(estimator, Ridge)
    target = "body_mass_g" if regression else "species"
    if regression:
        features = FeatureSet(numeric=features.numeric[:3], categorical=features.categorical)
        frame = frame.dropna(subset=[target]).reset_index(drop=True)
    contract = derive_contract(
        frame,
        numeric=features.numeric,
        categorical=features.categorical,
        target=target,
        task="regression" if regression else "classification",
    )
    encoded = encode_frame(frame, contract)
    pipeline = build_pipeline(features, estimator)
    pipeline.fit(encoded, frame[target])
    # When predicting labels and probabilities together (the steps before the estimator run once)
    labels, probabilities = predict_with_probabilities(pipeline, encoded)
    # Then they are exactly what the pipeline's predict and predict_proba give
    np.testing.assert_array_equal(labels, pipeline.predict(encoded))
    if regression:
        assert probabilities is None
    else:
        np.testing.assert_array_equal(probabilities, pipeline.predict_proba(encoded))
