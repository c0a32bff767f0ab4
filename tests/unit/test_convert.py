"""The ONNX conversion's shortcut around skl2onnx's option resolution gives the model skl2onnx gives without it."""

from __future__ import annotations

import contextlib

import onnx
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from sklambda.contract_derivation import derive_contract, encode_frame
from tests.conftest import PENGUINS_CSV
from training import convert
from training.dataset import clean
from training.features import FeatureSet
from training.model import build_pipeline

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
