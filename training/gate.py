"""The promotion gate, in one place: the metric rule against the champion (MLflow MetricThreshold semantics,
[gate] in the configuration), the must-hold cases, the output invariants, and the serving runtime's load + parity
self-test (run by training.pipeline once the version is published). Every check is a GateCheck (name, passed,
detail), the gate's one result type, kept in the run record, so that it says exactly which rule held and which
did not; `verdict` turns a list of them into the reason recorded with the outcome.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sklambda.contract import DataContract, Task
from sklambda.contract_derivation import encode_frame
from sklambda.errors import VersionRefused
from sklambda.manifest import Comparison, Manifest, Metric
from sklambda.registry import ServingCheck
from sklambda.runs import GateCheck
from sklambda.runtimes import Prediction
from sklambda.serving import labels_to_json
from training.champion import Champion, Outputs
from training.config import GateCase, GateSection
from training.evaluate import evaluate
from training.model import predict_with_probabilities

# Probabilities must sum to 1 within this (float64 pipelines; ONNX parity is the self-test's business).
PROBABILITY_SUM_TOLERANCE = 1e-6


def _at_least(value: float, bound: float, greater_is_better: bool) -> bool:
    # Rounded: 0.9 + 0.1 must not fail 1.0 >= 1.0000000000000002.
    bound = round(bound, 9)
    return value >= bound if greater_is_better else value <= bound


def metric_checks(
    challenger: float,
    champion: float | None,
    metric: Metric,
    gate: GateSection,
    *,
    champion_label: str,
    rows: int,
) -> list[GateCheck]:
    """threshold / beats champion / relative change, as MLflow's MetricThreshold defines them."""
    greater = metric.greater_is_better if gate.greater_is_better is None else gate.greater_is_better
    better = ">=" if greater else "<="
    checks: list[GateCheck] = []
    if gate.threshold is not None:
        passed = _at_least(challenger, gate.threshold, greater)
        checks.append(
            GateCheck(
                name="threshold",
                passed=passed,
                detail=f"{metric.name} {challenger} {'meets' if passed else 'misses'} the threshold "
                f"({better} {gate.threshold})",
            )
        )
    if champion is None:
        return checks
    change = gate.min_absolute_change or 0.0
    required = champion + change if greater else champion - change
    passed = _at_least(challenger, required, greater)
    summary = f"{metric.name} {challenger} vs {champion_label} {champion} on the same {rows} held-out rows"
    if change:
        verdict = "beats the champion by enough" if passed else "does not beat the champion by enough"
        summary += f" (needs {better} {round(required, 9)}: min_absolute_change {change})"
    else:
        verdict = "at least as good as the champion" if passed else "worse than the champion"
    checks.append(GateCheck(name="beats champion", passed=passed, detail=f"{verdict}: {summary}"))
    if gate.min_relative_change is not None:
        if champion == 0:
            # MLflow's fallback when the baseline is 0: a relative change is undefined, require strictly better.
            passed = challenger > 0 if greater else challenger < 0
            detail = f"{champion_label} scores 0: the challenger must be strictly better ({metric.name} {challenger})"
        else:
            # Divided by |champion| (MLflow divides by the champion): the sign stays right for a negative r2.
            relative = (challenger - champion) / abs(champion) if greater else (champion - challenger) / abs(champion)
            passed = round(relative, 9) >= gate.min_relative_change  # rounded as in _at_least
            detail = (
                f"{metric.name} improves on {champion_label} by {relative:.2%} "
                f"({'>=' if passed else '<'} min_relative_change {gate.min_relative_change:.2%})"
            )
        checks.append(GateCheck(name="relative change", passed=passed, detail=detail))
    return checks


def _case_frame(instances: list[dict[str, Any]], contract: DataContract) -> pd.DataFrame:
    # A field a case leaves out is missing (TOML has no null); the pipeline imputes it as training did.
    return pd.DataFrame([{name: instance.get(name) for name in contract.names} for instance in instances])


def _known_cases(contract: DataContract, cases: list[GateCase]) -> list[GateCase]:
    """The cases whose fields are all inputs of the model (the others fail without a prediction)."""
    return [case for case in cases if not set(case.instance) - set(contract.names)]


def predict_cases_and_probes(
    pipeline: Any, contract: DataContract, cases: list[GateCase]
) -> tuple[Prediction | None, Prediction]:
    """The pipeline's outputs on the known cases' rows (None without any) and on the corner inputs (probe_rows),
    in one pipeline call (each prediction depends only on its own row): a call costs ~10 ms however few its rows.
    Probabilities where the model has them and the task is classification or a case asks for one."""
    known = _known_cases(contract, cases)
    probes = probe_rows(contract)
    frames = [_case_frame([case.instance for case in known], contract), probes] if known else [probes]
    wanted = contract.task == "classification" or any(case.min_probability is not None for case in known)
    predicted, scores = predict_with_probabilities(
        pipeline, encode_frame(pd.concat(frames, ignore_index=True), contract), probabilities=wanted
    )
    split = len(known)
    probe_outputs = Prediction(
        labels=np.asarray(predicted)[split:], probabilities=None if scores is None else scores[split:]
    )
    if not known:
        return None, probe_outputs
    case_outputs = Prediction(
        labels=np.asarray(predicted)[:split], probabilities=None if scores is None else scores[:split]
    )
    return case_outputs, probe_outputs


def case_checks(
    pipeline: Any, contract: DataContract, cases: list[GateCase], outputs: Prediction | None = None
) -> list[GateCheck]:
    """Each must-hold case predicted by the challenger and compared with its expectation. All cases are predicted
    in one call (each prediction depends only on its own row): a pipeline call costs milliseconds however few its
    rows, one per case added ~20 ms per case to every run. `outputs`: the pipeline's on the known cases' rows
    (predict_cases_and_probes), when the caller has them."""
    known = _known_cases(contract, cases)
    labels: list[Any] = []
    probabilities: list[float] = []
    if known:
        wanted = any(case.min_probability is not None for case in known)
        if outputs is None:
            encoded = encode_frame(_case_frame([case.instance for case in known], contract), contract)
            predicted, scores = predict_with_probabilities(pipeline, encoded, probabilities=wanted)
        else:
            predicted, scores = outputs.labels, outputs.probabilities
        labels = labels_to_json(predicted)
        if wanted:
            probabilities = _class_probabilities(pipeline, scores, [case.expect for case in known])
    checks: list[GateCheck] = []
    index = -1  # the case's row among the predicted ones
    for case in cases:
        unknown = sorted(set(case.instance) - set(contract.names))
        if unknown:
            checks.append(
                GateCheck(name=f"case: {case.name}", passed=False, detail=f"fields not in the model's input: {unknown}")
            )
            continue
        index += 1
        label = labels[index]
        problems: list[str] = []
        if case.expect is not None and label != case.expect:
            problems.append(f"predicted {label!r}, expected {case.expect!r}")
        if case.expect_in is not None and label not in case.expect_in:
            problems.append(f"predicted {label!r}, expected one of {case.expect_in!r}")
        if case.expect_between is not None:
            low, high = case.expect_between
            if not (isinstance(label, int | float) and low <= float(label) <= high):
                problems.append(f"predicted {label!r}, expected between {low} and {high}")
        detail = f"predicted {label!r}"
        if case.min_probability is not None:
            probability = probabilities[index]
            detail += f", p({case.expect!r}) = {probability:.3f}"
            if probability < case.min_probability:
                problems.append(f"p({case.expect!r}) = {probability:.3f} < min_probability {case.min_probability}")
        checks.append(
            GateCheck(
                name=f"case: {case.name}", passed=not problems, detail="; ".join(problems) if problems else detail
            )
        )
    return checks


def _class_probabilities(pipeline: Any, rows: np.ndarray | None, expected: list[Any]) -> list[float]:
    """For each row (its probabilities: `rows`, None for a model without them), the probability of the class it is
    expected to be (0 for a class the model does not know, NaN for a model without probabilities)."""
    if rows is None:
        return [math.nan] * len(expected)
    classes = labels_to_json(pipeline.classes_)
    return [
        float(row[classes.index(label)]) if label in classes else 0.0 for row, label in zip(rows, expected, strict=True)
    ]


def probe_rows(contract: DataContract) -> pd.DataFrame:
    """Corner inputs a client may legally send: every number at its training minimum, then at its maximum
    (with the first / last category), and every nullable field missing."""
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    empty: dict[str, Any] = {}
    for feature in contract.features:
        if feature.kind == "numeric":
            low[feature.name] = feature.minimum
            high[feature.name] = feature.maximum
        else:
            categories: list[str | None] = list(feature.categories) if feature.categories else [None]
            low[feature.name], high[feature.name] = categories[0], categories[-1]
        empty[feature.name] = None if feature.nullable else low[feature.name]
    return pd.DataFrame([low, high, empty], columns=contract.names)


def invariant_checks(
    pipeline: Any,
    contract: DataContract,
    rows: pd.DataFrame,
    task: Task,
    *,
    target_range: tuple[float, float] | None,
    margin: float,
    known: Outputs | None = None,
    probe_outputs: Prediction | None = None,
) -> list[GateCheck]:
    """Outputs that must hold for any input: no NaN, labels among the classes, probabilities in [0, 1] summing
    to 1 (classifiers), predictions within a plausible range of the training targets (regressors). `known`: the
    pipeline's outputs on `rows` when the caller has them (evaluation computed them); the corner inputs are
    predicted here, unless `probe_outputs` (with `known`) are the pipeline's on them (predict_cases_and_probes)."""
    probes = probe_rows(contract)
    if known is not None and probe_outputs is not None:
        predictions, scores = probe_outputs.labels, probe_outputs.probabilities
        if task != "classification":
            scores = None
    else:
        inputs = probes if known is not None else pd.concat([rows.loc[:, contract.names], probes], ignore_index=True)
        encoded = encode_frame(inputs, contract)
        predictions, scores = predict_with_probabilities(pipeline, encoded, probabilities=task == "classification")
    if known is not None:
        predictions = np.concatenate([np.asarray(known.prediction.labels), np.asarray(predictions)])
    where = f"on {len(rows) + len(probes)} rows (held-out rows and corner inputs)"
    checks: list[GateCheck] = []
    if task == "classification":
        classes = set(labels_to_json(pipeline.classes_))
        strays = sorted({repr(label) for label in labels_to_json(predictions) if label not in classes})
        checks.append(
            GateCheck(
                name="labels are known classes",
                passed=not strays,
                detail=f"labels outside the classes: {strays}" if strays else f"every label a known class {where}",
            )
        )
        if scores is not None:
            probabilities = np.asarray(scores, dtype=np.float64)
            if known is not None and known.prediction.probabilities is not None:
                probabilities = np.vstack([np.asarray(known.prediction.probabilities, dtype=np.float64), probabilities])
            problems = []
            if not np.isfinite(probabilities).all():
                problems.append(f"{int((~np.isfinite(probabilities)).any(axis=1).sum())} rows with NaN/inf")
            elif probabilities.min() < 0 or probabilities.max() > 1:
                problems.append(f"values outside [0, 1] ({probabilities.min():.3g}..{probabilities.max():.3g})")
            else:
                gap = float(np.max(np.abs(probabilities.sum(axis=1) - 1)))
                if gap > PROBABILITY_SUM_TOLERANCE:
                    problems.append(f"rows sum to 1 only within {gap:.2g}")
            checks.append(
                GateCheck(
                    name="probabilities are valid",
                    passed=not problems,
                    detail="; ".join(problems) if problems else f"finite, in [0, 1], summing to 1 {where}",
                )
            )
        return checks
    values = np.asarray(predictions, dtype=np.float64)
    finite = np.isfinite(values)
    checks.append(
        GateCheck(
            name="no NaN output",
            passed=bool(finite.all()),
            detail=f"{int((~finite).sum())} NaN/inf predictions {where}" if not finite.all() else f"finite {where}",
        )
    )
    if target_range is not None and finite.all():
        low, high = target_range
        span = (high - low) or max(abs(high), 1.0)  # a constant target still gets some room
        allowed = (low - margin * span, high + margin * span)
        outside = int(((values < allowed[0]) | (values > allowed[1])).sum())
        checks.append(
            GateCheck(
                name="outputs in a plausible range",
                passed=outside == 0,
                detail=(
                    f"{outside} predictions outside [{allowed[0]:.4g}, {allowed[1]:.4g}] (training targets "
                    f"{low:.4g}..{high:.4g}, widened by regression_range_margin {margin})"
                    if outside
                    else f"within [{allowed[0]:.4g}, {allowed[1]:.4g}] {where}"
                ),
            )
        )
    return checks


def champion_checks(
    challenger: Manifest,
    x_test: pd.DataFrame,
    y_test: pd.Series,
    champion: Champion | None,
    gate: GateSection,
) -> tuple[Comparison | None, list[GateCheck]]:
    """The champion scored on the challenger's held-out rows, and the [gate] metric rule applied to both."""
    metric = challenger.metric
    score = challenger.metrics[metric.name]
    if champion is None:
        checks = metric_checks(score, None, metric, gate, champion_label="", rows=len(y_test))
        return None, [GateCheck(name="first version", passed=True, detail="no champion to compare with"), *checks]
    known = champion.manifest
    where = f"champion v{known.version}"
    if known.task != challenger.task or known.target != challenger.target:
        detail = (
            f"not comparable with {where}: it predicts {known.target} ({known.task}), "
            f"this predicts {challenger.target} ({challenger.task})"
        )
        return None, [GateCheck(name="comparable", passed=False, detail=detail)]
    missing = sorted(set(known.contract.names) - set(x_test.columns))
    if missing:
        detail = f"not comparable with {where}: its features {missing} are not in the new data"
        return None, [GateCheck(name="comparable", passed=False, detail=detail)]
    outputs = champion.outputs(x_test)
    champion_metrics = evaluate(outputs, x_test, y_test, challenger.task)
    comparison = Comparison(version=known.version, metrics=champion_metrics)
    champion_score = champion_metrics.get(metric.name)
    if champion_score is None:
        return comparison, [
            GateCheck(name="comparable", passed=False, detail=f"{where} has no {metric.name} on these rows")
        ]
    return comparison, metric_checks(score, champion_score, metric, gate, champion_label=where, rows=len(y_test))


def self_test_check(serving_check: ServingCheck, stored: Manifest) -> GateCheck:
    """The serving runtime loads the published version and reproduces its golden outputs (the gate's last check)."""
    try:
        serving_check(stored)
    except VersionRefused as error:
        return GateCheck(name="serving self-test", passed=False, detail=f"the serving runtime refused it: {error}")
    return GateCheck(name="serving self-test", passed=True, detail="loaded and reproduced its outputs")


def failures(checks: list[GateCheck]) -> str:
    """Why the gate refused ("" when every check passed): each failed check, named."""
    return "; ".join(f"{check.name}: {check.detail}" for check in checks if not check.passed)


def passed_reason(checks: list[GateCheck]) -> str:
    """The reason recorded with a promotion: how it compares with the champion (every check is in the run record)."""
    for check in checks:
        if check.name == "first version":
            return f"first version: {check.detail}"
        if check.name == "beats champion":
            return check.detail
    return f"{len(checks)} gate checks passed"
