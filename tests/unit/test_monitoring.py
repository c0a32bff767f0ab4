"""The monitoring core on known distributions: baselines, PSI (identical ~0, shifted above 0.2), the streaming
accumulator (chunked equals all at once; unseen categories; missing shares), the live metrics against
scikit-learn's, and the capture buffer's batching, sampling and failure handling."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn import metrics as sk_metrics

from sklambda import monitoring
from sklambda.capture import MAX_RECORD_BYTES, CaptureBuffer, decode_numbers, encode_record
from sklambda.contract import MISSING_CATEGORY, DataContract, Feature
from sklambda.monitoring import (
    DriftAccumulator,
    categorical_baseline,
    live_metrics,
    live_quality,
    numeric_baseline,
    psi,
    training_baseline,
)
from sklambda.runtimes import Prediction

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(7)


def contract() -> DataContract:
    return DataContract(
        features=[
            Feature(name="x", kind="numeric", value_type="number", nullable=True),
            Feature(name="y", kind="numeric", value_type="number", nullable=False),
            Feature(name="colour", kind="categorical", value_type="string", nullable=True, categories=["a", "b", "c"]),
        ],
        target="t",
        task="classification",
        classes=["no", "yes"],
    )


def training_frame(rows: int = 20_000) -> pd.DataFrame:
    x = RNG.normal(10, 2, rows)
    x[RNG.random(rows) < 0.05] = np.nan
    colour = RNG.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2]).astype(object)
    colour[RNG.random(rows) < 0.02] = None
    return pd.DataFrame({"x": x, "y": RNG.uniform(0, 1, rows), "colour": colour})


def live_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Columns as a capture record holds them after JSON: numbers with None for missing, category strings."""
    return {
        "x": [None if np.isnan(value) else float(value) for value in frame["x"]],
        "y": frame["y"].astype(float).tolist(),
        "colour": [MISSING_CATEGORY if pd.isna(value) else value for value in frame["colour"]],
    }


def drift_of(baseline_frame: pd.DataFrame, live: pd.DataFrame, outputs: list[str] | None = None) -> Any:
    baseline = training_baseline(baseline_frame, contract(), ["yes", "no"] * 500)
    accumulator = DriftAccumulator(baseline)
    accumulator.add(live_columns(live), outputs or ["yes", "no"] * (len(live) // 2), len(live))
    return accumulator.report()


def test_psi_is_zero_for_identical_shares_and_large_for_a_shift() -> None:
    # Given share vectors over the same bins
    shares = [0.1] * 10
    # Then identical shares give 0, a mass moved to one end gives far more than the conventional 0.2
    assert psi(shares, shares) == pytest.approx(0.0)
    assert psi(shares, [0.5, 0.5] + [0.0] * 8) > 0.2


def test_numeric_baseline_has_quantile_bins_and_the_missing_share() -> None:
    # Given 10,000 values from a uniform distribution, 10% missing
    values = RNG.uniform(0, 100, 10_000)
    values[:1000] = np.nan
    # When summarised
    baseline = numeric_baseline(values)
    # Then 10 bins of ~10% each between training quantiles, and the missing share apart
    assert len(baseline.edges) == 9
    assert len(baseline.shares) == 10
    assert all(share == pytest.approx(0.1, abs=0.01) for share in baseline.shares)
    assert baseline.missing_share == pytest.approx(0.1)


def test_few_distinct_values_give_fewer_bins() -> None:
    # Three distinct values: a bin each, and an (empty) bin above the largest, where values beyond training go
    baseline = numeric_baseline(np.array([2007.0, 2008.0, 2009.0] * 100))
    assert baseline.edges == [2007.0, 2008.0, 2009.0]
    assert baseline.shares == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])


@pytest.mark.parametrize("seed", range(10))
def test_numeric_baseline_is_the_quantile_edges_and_the_bin_counts_exactly(seed: int) -> None:
    # Given values with ties, gaps, infinities at some seeds, signed zeros at others
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(0, 3, int(rng.integers(1, 5000))), int(rng.integers(0, 3)))
    values[rng.random(values.size) < 0.1] = np.nan
    if seed % 3 == 1:
        values[: min(3, values.size)] = np.inf
    if seed % 3 == 2:
        values[rng.random(values.size) < 0.2] = -0.0
    # When summarised (sorted once), and as the drift accumulator bins live values (each value searched)
    baseline = numeric_baseline(values)
    edges = monitoring.quantile_edges(values)
    counts = monitoring.bin_counts(values, edges)
    present = int((~np.isnan(values)).sum())
    # Then the edges and shares are the same floats
    assert baseline.edges == edges
    assert baseline.shares == [float(count) / present if present else 0.0 for count in counts]


def test_categorical_baseline_shares_and_missing() -> None:
    baseline = categorical_baseline(["a", "a", "b", MISSING_CATEGORY])
    assert baseline.shares == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    assert baseline.missing_share == pytest.approx(0.25)


def test_traffic_from_the_training_distribution_shows_no_drift() -> None:
    # Given a baseline from one sample and live traffic drawn from the same distribution
    report = drift_of(training_frame(), training_frame(5000))
    # Then every column's PSI stays far below 0.1 (no shift), nothing unseen, the missing shares agree
    assert report.max_psi < 0.02, report
    assert report.columns["colour"].unseen_share == 0
    assert report.columns["x"].missing_share == pytest.approx(0.05, abs=0.015)
    assert report.output_psi is not None
    assert report.output_psi < 0.01


def test_one_scaled_column_drifts_alone() -> None:
    # Given live traffic whose x is scaled by 1.5
    live = training_frame(5000)
    live["x"] = live["x"] * 1.5
    # When compared with the baseline
    report = drift_of(training_frame(), live)
    # Then x is above 0.2 and the others are not
    assert report.drifted(0.2) == ["x"]
    assert report.columns["y"].psi < 0.05
    assert report.columns["colour"].psi < 0.05


def test_unseen_categories_and_missing_values_count_as_drift() -> None:
    # Given live traffic where a third of colours are a new category and y is never missing but x always is
    live = training_frame(3000)
    live.loc[live.index[:1000], "colour"] = "purple"
    live["x"] = np.nan
    report = drift_of(training_frame(), live)
    colour = report.columns["colour"]
    assert colour.unseen_share == pytest.approx(1000 / (3000 - (live["colour"].isna()).sum()), rel=0.01)
    assert colour.unseen_categories == ["purple"]
    assert colour.psi > 0.2
    assert report.columns["x"].missing_share == 1.0
    assert report.columns["x"].psi > 0.2


def test_chunked_accumulation_equals_one_pass() -> None:
    # Given the same live rows added at once and in 7 chunks
    live = training_frame(7000)
    baseline = training_baseline(training_frame(), contract(), ["yes", "no"])
    whole, chunked = DriftAccumulator(baseline), DriftAccumulator(baseline)
    columns = live_columns(live)
    outputs = ["yes"] * 7000
    whole.add(columns, outputs, 7000)
    for start in range(0, 7000, 1000):
        chunked.add({k: v[start : start + 1000] for k, v in columns.items()}, outputs[start : start + 1000], 1000)
    # Then the reports are identical
    assert whole.report() == chunked.report()


def test_regression_outputs_drift_by_quantile_bins() -> None:
    frame = training_frame()
    regression = replace(contract(), task="regression", classes=None)
    baseline = training_baseline(frame, regression, RNG.normal(0, 1, 2000))
    same, shifted = DriftAccumulator(baseline), DriftAccumulator(baseline)
    same.add(live_columns(frame.head(2000)), RNG.normal(0, 1, 2000).tolist(), 2000)
    shifted.add(live_columns(frame.head(2000)), RNG.normal(1, 1, 2000).tolist(), 2000)
    assert same.report().output_psi < 0.05 < 0.2 < shifted.report().output_psi  # type: ignore[operator]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_live_metrics_match_scikit_learn(task: str) -> None:
    if task == "classification":
        truth = RNG.choice(["a", "b", "c"], 500).tolist()
        predicted = [label if RNG.random() < 0.7 else "a" for label in truth]
        expected = {
            "accuracy": sk_metrics.accuracy_score(truth, predicted),
            "balanced_accuracy": sk_metrics.balanced_accuracy_score(truth, predicted),
            "f1_macro": sk_metrics.f1_score(truth, predicted, average="macro"),
        }
    else:
        truth = RNG.normal(0, 1, 500).tolist()
        predicted = (np.array(truth) + RNG.normal(0, 0.3, 500)).tolist()
        expected = {
            "r2": sk_metrics.r2_score(truth, predicted),
            "rmse": sk_metrics.mean_squared_error(truth, predicted) ** 0.5,
            "mae": sk_metrics.mean_absolute_error(truth, predicted),
        }
    scores = live_metrics(task, truth, predicted)  # type: ignore[arg-type]
    assert scores == pytest.approx(expected, abs=1e-6)


def test_live_quality_drop_is_direction_aware() -> None:
    # Accuracy 0.5 live against 1.0 held out: 50% worse; rmse twice the held-out: 100% worse
    accuracy = live_quality("classification", "accuracy", True, {"accuracy": 1.0}, ["a", "b"], ["a", "a"])
    assert accuracy is not None
    assert accuracy.drop == pytest.approx(0.5)
    assert accuracy.labels == 2
    rmse = live_quality("regression", "rmse", False, {"rmse": 1.0}, [0.0, 0.0], [2.0, -2.0])
    assert rmse is not None
    assert rmse.drop == pytest.approx(1.0)
    # log_loss needs probabilities: the live metric falls back to accuracy next to the held-out accuracy
    fallback = live_quality("classification", "log_loss", False, {"accuracy": 0.9}, ["a"], ["a"])
    assert fallback is not None
    assert fallback.metric == "accuracy"
    assert fallback.held_out == 0.9


# ------------------------------------------------------------------------------------------ capture buffer


def served(rows: int) -> tuple[dict[str, np.ndarray], Prediction]:
    columns = {
        "x": RNG.normal(0, 1, (rows, 1)).astype(np.float32),
        "colour": np.array([["a"]] * rows, dtype=object),
    }
    return columns, Prediction(labels=np.array(["yes"] * rows, dtype=object))


def test_a_capture_record_is_one_json_line_with_the_request_id_first() -> None:
    columns, prediction = served(3)
    columns["x"][1, 0] = np.nan
    line = encode_record("req-1", "m", 4, columns, prediction, 0.0)
    assert line.startswith(b'{"request_id":"req-1"')
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    record = orjson.loads(line)
    assert record["version"] == 4
    assert record["rows"] == 3
    assert record["time"] == 0
    assert np.isnan(decode_numbers(record)["x"][1])
    assert decode_numbers(record)["x"][0] == columns["x"][0, 0]
    assert record["categories"]["colour"] == ["a"] * 3
    assert record["predictions"] == ["yes"] * 3


def test_records_wait_in_memory_until_the_batch_is_full_or_old() -> None:
    # Given a buffer that sends batches of 3, or when the oldest record is 60 s old
    sent: list[list[bytes]] = []
    now = [1000.0]

    def send(batch: list[bytes]) -> int:
        sent.append(batch)
        return 0

    buffer = CaptureBuffer(send=send, max_records=3, clock=lambda: now[0])
    columns, prediction = served(2)
    # When two requests are captured, nothing is sent; the third sends all three
    buffer.record("r1", "m", 1, columns, prediction)
    buffer.record("r2", "m", 1, columns, prediction)
    assert sent == []
    buffer.record("r3", "m", 1, columns, prediction)
    assert [len(batch) for batch in sent] == [3]
    # And a record older than max_age_seconds goes out with the next captured request
    buffer.record("r4", "m", 1, columns, prediction)
    now[0] += 61
    buffer.record("r5", "m", 1, columns, prediction)
    assert [len(batch) for batch in sent] == [3, 2]


def test_sampling_captures_the_share_asked_for() -> None:
    buffer = CaptureBuffer(send=lambda batch: 0, sample_rate=0.1, max_records=10_000, draw=RNG.random)
    columns, prediction = served(1)
    for index in range(5000):
        buffer.record(f"r{index}", "m", 1, columns, prediction)
    assert buffer.captured == pytest.approx(500, abs=80)


def test_a_failing_sink_drops_the_batch_and_never_raises() -> None:
    def broken(batch: list[bytes]) -> int:
        raise ConnectionError("firehose down")

    buffer = CaptureBuffer(send=broken, max_records=2)
    columns, prediction = served(1)
    assert buffer.record("r1", "m", 1, columns, prediction) == 0
    assert buffer.record("r2", "m", 1, columns, prediction) == 2
    assert buffer.dropped == 2
    assert buffer.records == []


def test_a_request_larger_than_a_firehose_record_is_split_by_rows() -> None:
    sent: list[bytes] = []

    def send(batch: list[bytes]) -> int:
        sent.extend(batch)
        return 0

    buffer = CaptureBuffer(send=send, max_records=1)
    columns, prediction = served(200_000)
    buffer.record("big", "m", 1, columns, prediction)
    buffer.flush()
    assert len(sent) > 1
    assert all(len(line) <= MAX_RECORD_BYTES for line in sent)
    assert sum(orjson.loads(line)["rows"] for line in sent) == 200_000
