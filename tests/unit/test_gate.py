"""The promotion gate's checks: MLflow MetricThreshold semantics, must-hold cases, invariants; and the time and
memory budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sklambda.errors import BudgetExceeded, ConfigError
from sklambda.manifest import Metric
from tests.conftest import PENGUINS_CSV
from training.budget import RunLimits, check_fits, check_time_left, estimate
from training.config import BudgetSection, GateCase, GateSection, load_config
from training.dataset import load_table
from training.gate import case_checks, invariant_checks, metric_checks, predict_cases_and_probes
from training.pipeline import TrainedModel, train

pytestmark = pytest.mark.unit

ACCURACY = Metric(name="accuracy", greater_is_better=True)
RMSE = Metric(name="rmse", greater_is_better=False)


def verdicts(challenger: float, champion: float | None, metric: Metric = ACCURACY, **gate: Any) -> dict[str, bool]:
    checks = metric_checks(challenger, champion, metric, GateSection(**gate), champion_label="champion v1", rows=50)
    return {check.name: check.passed for check in checks}


@pytest.mark.parametrize(
    ("challenger", "champion", "metric", "gate", "expected"),
    [
        # no change configured: at least as good is enough (MLflow with min_absolute_change 0)
        (0.90, 0.90, ACCURACY, {}, {"beats champion": True}),
        (0.89, 0.90, ACCURACY, {}, {"beats champion": False}),
        # lower is better (rmse): the direction flips
        (2.0, 2.5, RMSE, {}, {"beats champion": True}),
        (2.6, 2.5, RMSE, {}, {"beats champion": False}),
        # min_absolute_change: candidate >= champion + change (<= champion - change when lower is better)
        (0.92, 0.90, ACCURACY, {"min_absolute_change": 0.02}, {"beats champion": True}),
        (0.915, 0.90, ACCURACY, {"min_absolute_change": 0.02}, {"beats champion": False}),
        (2.0, 2.5, RMSE, {"min_absolute_change": 0.5}, {"beats champion": True}),
        (2.1, 2.5, RMSE, {"min_absolute_change": 0.5}, {"beats champion": False}),
        # float noise does not fail an exact boundary (0.9 + 0.1 is 1.0000000000000002)
        (1.0, 0.9, ACCURACY, {"min_absolute_change": 0.1}, {"beats champion": True}),
        # min_relative_change: (candidate - champion) / champion (reversed when lower is better)
        (0.99, 0.90, ACCURACY, {"min_relative_change": 0.1}, {"beats champion": True, "relative change": True}),
        (0.98, 0.90, ACCURACY, {"min_relative_change": 0.1}, {"beats champion": True, "relative change": False}),
        (2.0, 2.5, RMSE, {"min_relative_change": 0.2}, {"beats champion": True, "relative change": True}),
        # a champion scoring 0: strictly better is required (MLflow's fallback)
        (0.0, 0.0, ACCURACY, {"min_relative_change": 0.1}, {"beats champion": True, "relative change": False}),
        # threshold: an absolute floor, also for the first version
        (0.85, None, ACCURACY, {"threshold": 0.9}, {"threshold": False}),
        (0.95, None, ACCURACY, {"threshold": 0.9}, {"threshold": True}),
        (3.0, 2.0, RMSE, {"threshold": 2.5}, {"threshold": False, "beats champion": False}),
        # greater_is_better overrides the metric's own direction
        (0.5, 0.9, ACCURACY, {"greater_is_better": False}, {"beats champion": True}),
    ],
)
def test_metric_rule_follows_mlflow_metric_threshold(
    challenger: float, champion: float | None, metric: Metric, gate: dict[str, Any], expected: dict[str, bool]
) -> None:
    assert verdicts(challenger, champion, metric, **gate) == expected


def test_metric_rule_explains_itself() -> None:
    (check,) = metric_checks(
        0.915, 0.9, ACCURACY, GateSection(min_absolute_change=0.02), champion_label="champion v3", rows=69
    )
    assert check.detail == (
        "does not beat the champion by enough: accuracy 0.915 vs champion v3 0.9 on the same 69 held-out rows "
        "(needs >= 0.92: min_absolute_change 0.02)"
    )


@pytest.fixture(scope="module")
def penguins_model() -> TrainedModel:
    return train(load_table(str(PENGUINS_CSV)), load_config())


GENTOO = {
    "island": "Biscoe",
    "bill_length_mm": 47.5,
    "bill_depth_mm": 15.0,
    "flipper_length_mm": 217,
    "body_mass_g": 5200,
    "sex": "male",
    "year": 2008,
}


@pytest.mark.parametrize(
    ("case", "passed", "detail"),
    [
        ({"expect": "Gentoo"}, True, "predicted 'Gentoo'"),
        ({"expect": "Adelie"}, False, "predicted 'Gentoo', expected 'Adelie'"),
        ({"expect_in": ["Gentoo", "Chinstrap"]}, True, "predicted 'Gentoo'"),
        ({"expect_in": ["Adelie"]}, False, "expected one of ['Adelie']"),
        ({"expect": "Gentoo", "min_probability": 0.9}, True, "p('Gentoo') = 0.9"),
        ({"expect": "Gentoo", "min_probability": 1.0}, False, "< min_probability 1.0"),
        ({"expect_between": [0, 1]}, False, "predicted 'Gentoo', expected between 0.0 and 1.0"),
    ],
)
def test_must_hold_cases(penguins_model: TrainedModel, case: dict[str, Any], passed: bool, detail: str) -> None:
    (check,) = case_checks(
        penguins_model.pipeline, penguins_model.manifest.contract, [GateCase(name="c", instance=GENTOO, **case)]
    )
    assert check.passed is passed
    assert detail in check.detail


def test_a_case_naming_a_field_the_model_does_not_have_fails(penguins_model: TrainedModel) -> None:
    case = GateCase(name="typo", instance={**GENTOO, "flipper_mm": 3}, expect="Gentoo")
    (check,) = case_checks(penguins_model.pipeline, penguins_model.manifest.contract, [case])
    assert (check.passed, check.detail) == (False, "fields not in the model's input: ['flipper_mm']")


def test_a_case_leaving_a_field_out_sends_it_as_missing(penguins_model: TrainedModel) -> None:
    without_sex = {key: value for key, value in GENTOO.items() if key != "sex"}
    (check,) = case_checks(
        penguins_model.pipeline,
        penguins_model.manifest.contract,
        [GateCase(name="no sex", instance=without_sex, expect="Gentoo")],
    )
    assert check.passed


def test_cases_apply_to_the_model_they_name(tmp_path: Path) -> None:
    config = load_config()
    assert len(config.cases_for("penguins")) == 4
    assert config.with_overrides(name="houses").cases_for("houses") == []


def test_a_case_without_an_expectation_is_a_readable_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "m"\ntarget = "y"\n[[gate.cases]]\nname = "empty"\ninstance = {x = 1}\n')
    with pytest.raises(ConfigError, match="case 'empty': give expect, expect_in or expect_between"):
        load_config(bad)


def test_invariants_hold_for_the_sample_model(penguins_model: TrainedModel) -> None:
    checks = invariant_checks(
        penguins_model.pipeline,
        penguins_model.manifest.contract,
        penguins_model.x_test,
        "classification",
        target_range=None,
        margin=0.5,
    )
    assert {check.name: check.passed for check in checks} == {
        "labels are known classes": True,
        "probabilities are valid": True,
    }


def test_cases_and_corner_inputs_in_one_call_give_the_checks_of_separate_calls(penguins_model: TrainedModel) -> None:
    # Given cases of every kind (one naming a field the model lacks) and the challenger's held-out outputs
    model, contract = penguins_model, penguins_model.manifest.contract
    cases = [
        GateCase(name="p", instance=GENTOO, expect="Gentoo", min_probability=0.9),
        GateCase(name="typo", instance={**GENTOO, "flipper_mm": 3}, expect="Gentoo"),
        GateCase(name="in", instance={**GENTOO, "island": "Dream", "sex": None}, expect_in=["Adelie", "Chinstrap"]),
    ]
    known = model.held_out_outputs
    # When the cases and the corner inputs are predicted in one pipeline call
    case_outputs, probe_outputs = predict_cases_and_probes(model.pipeline, contract, cases)
    together = case_checks(model.pipeline, contract, cases, case_outputs) + invariant_checks(
        model.pipeline,
        contract,
        model.x_test,
        "classification",
        target_range=None,
        margin=0.5,
        known=known,
        probe_outputs=probe_outputs,
    )
    # Then every check reads as when each is predicted in calls of its own
    alone = case_checks(model.pipeline, contract, cases) + invariant_checks(
        model.pipeline, contract, model.x_test, "classification", target_range=None, margin=0.5, known=known
    )
    assert together == alone


class Broken:
    """A fitted-looking pipeline whose outputs break the invariants."""

    classes_ = np.array(["a", "b"])

    def __init__(self, probabilities: list[float], prediction: Any = "a") -> None:
        self.probabilities = probabilities
        self.prediction = prediction

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.array([self.prediction] * len(frame), dtype=object)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.array([self.probabilities] * len(frame))


@pytest.mark.parametrize(
    ("pipeline", "failed", "detail"),
    [
        (Broken([0.7, 0.7]), "probabilities are valid", "rows sum to 1 only within 0.4"),
        (Broken([np.nan, 1.0]), "probabilities are valid", "rows with NaN/inf"),
        (Broken([-0.5, 1.5]), "probabilities are valid", "values outside [0, 1]"),
        (Broken([0.5, 0.5], prediction="z"), "labels are known classes", "labels outside the classes: [\"'z'\"]"),
    ],
)
def test_broken_classifier_outputs_fail_the_invariants(
    penguins_model: TrainedModel, pipeline: Broken, failed: str, detail: str
) -> None:
    checks = invariant_checks(
        pipeline,
        penguins_model.manifest.contract,
        penguins_model.x_test,
        "classification",
        target_range=None,
        margin=0.5,
    )
    (check,) = [check for check in checks if not check.passed]
    assert check.name == failed
    assert detail in check.detail


class Regressor:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), self.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (150.0, {"no NaN output": True, "outputs in a plausible range": True}),
        (260.0, {"no NaN output": True, "outputs in a plausible range": True}),  # within the 50% margin
        (1e6, {"no NaN output": True, "outputs in a plausible range": False}),
        (np.nan, {"no NaN output": False}),
    ],
)
def test_regression_invariants(penguins_model: TrainedModel, value: float, expected: dict[str, bool]) -> None:
    # Given training targets from 25 to 250 (range 225, widened by 50% on each side: -87.5 .. 362.5)
    checks = invariant_checks(
        Regressor(value),
        penguins_model.manifest.contract,
        penguins_model.x_test,
        "regression",
        target_range=(25.0, 250.0),
        margin=0.5,
    )
    assert {check.name: check.passed for check in checks} == expected


# ------------------------------------------------------------------------------------------- budget

BUDGET = BudgetSection(base_seconds=5, seconds_per_million_cells=5, base_mb=250, mb_per_million_cells=60)


def test_estimates_grow_linearly_in_cells() -> None:
    small, big = estimate(1_000_000, 8, BUDGET), estimate(10_000_000, 8, BUDGET)
    assert (small.seconds, small.memory_mb) == (45, 730)
    assert (big.seconds, big.memory_mb) == (405, 5050)


def test_a_table_that_fits_passes() -> None:
    check_fits(estimate(1_000_000, 8, BUDGET), RunLimits(seconds_left=lambda: 890, memory_mb=3008), BUDGET, "s3://b/d/")


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        (RunLimits(seconds_left=lambda: 890, memory_mb=3008), "about 4695 MB needed (with safety margin), 3008 MB"),
        (RunLimits(seconds_left=lambda: 300, memory_mb=10240), "about 372 s needed (with safety margin), 300 s left"),
    ],
)
def test_a_table_too_big_for_the_lambda_is_refused_with_what_to_do(limits: RunLimits, problem: str) -> None:
    with pytest.raises(BudgetExceeded) as refused:
        check_fits(estimate(6_000_000, 8, BUDGET), limits, BUDGET, "s3://bucket/data/")
    message = str(refused.value)
    assert message.startswith("refusing to train 6000000 rows x 8 columns here: ")
    assert problem in message
    assert "python -m training retrain --data s3://bucket/data/" in message


def test_too_little_time_left_between_stages_stops_before_publishing() -> None:
    # Given 6 million rows (245 s estimated): publishing and the gate need 20% of it, x1.5, plus the 5 s reserve
    needed = estimate(6_000_000, 8, BUDGET)
    with pytest.raises(
        BudgetExceeded, match="only 60 s left after training; publishing, the gate and the run record need about 78 s"
    ):
        check_time_left(needed, RunLimits(seconds_left=lambda: 60), BUDGET, "training", "data.csv")
    check_time_left(needed, RunLimits(seconds_left=lambda: 80), BUDGET, "training", "data.csv")
    check_time_left(needed, RunLimits(), BUDGET, "training", "data.csv")  # no limit: nothing to check
