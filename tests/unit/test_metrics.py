"""The metrics users expect beyond accuracy and r2: roc_auc and average_precision (binary; macro one-vs-rest for
several classes) and mape, as scikit-learn computes them, and usable as the gate's metric in the right direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    average_precision_score,
    mean_absolute_percentage_error,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from sklambda.store import ModelStore
from training.cli import main
from training.config import TrainingConfig
from training.evaluate import evaluate, primary_metric

pytestmark = pytest.mark.unit


def _binary_frame(rows: int = 600) -> tuple[pd.DataFrame, pd.Series]:
    x, y = make_classification(n_samples=rows, n_features=6, n_informative=4, weights=[0.8], random_state=3)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    return frame, pd.Series(np.where(y == 1, "churned", "stayed"), name="outcome")


def test_binary_ranking_metrics_are_scikit_learns_on_the_positive_class() -> None:
    # Given a binary classifier with string labels (the positive class is the second of its sorted classes)
    x, y = _binary_frame()
    model = LogisticRegression(max_iter=1000).fit(x, y)
    scores = model.predict_proba(x)[:, 1]

    # When every metric of the task is computed
    metrics = evaluate(model, x, y, "classification")

    # Then roc_auc and average_precision are scikit-learn's, on the positive class's probability
    assert list(model.classes_) == ["churned", "stayed"]
    assert metrics["roc_auc"] == round(roc_auc_score(y == "stayed", scores), 6)
    assert metrics["average_precision"] == round(average_precision_score(y == "stayed", scores), 6)


def test_multi_class_ranking_metrics_are_macro_one_vs_rest() -> None:
    x, y = make_classification(n_samples=500, n_features=6, n_informative=4, n_classes=3, random_state=5)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)])
    model = LogisticRegression(max_iter=1000).fit(frame, y)
    probabilities = model.predict_proba(frame)

    metrics = evaluate(model, frame, pd.Series(y), "classification")

    assert metrics["roc_auc"] == round(roc_auc_score(y, probabilities, multi_class="ovr", average="macro"), 6)
    expected_ap = average_precision_score(label_binarize(y, classes=[0, 1, 2]), probabilities, average="macro")
    assert metrics["average_precision"] == round(expected_ap, 6)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_one_metric_alone_is_the_same_as_among_all(task: str) -> None:
    # Given a fitted model of the task (three classes: every classification metric applies)
    x, labels = make_classification(n_samples=400, n_features=5, n_informative=3, n_classes=3, random_state=5)
    model = LogisticRegression(max_iter=1000) if task == "classification" else Ridge()
    y = pd.Series(labels if task == "classification" else x[:, 0] * 3 + labels)
    model.fit(x, y)
    # When each metric is computed alone (what validation needs) and all at once (the evaluate stage)
    every = evaluate(model, x, y, task)  # type: ignore[arg-type]
    for name, value in every.items():
        # Then each is the same number, and alone
        assert evaluate(model, x, y, task, only=name) == {name: value}  # type: ignore[arg-type]
    assert len(every) == (6 if task == "classification" else 4)


def test_regression_has_mape_with_r2_rmse_and_mae() -> None:
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"a": rng.uniform(1, 10, 200)})
    y = pd.Series(3 * x["a"] + rng.normal(0, 1, 200) + 20)
    model = Ridge().fit(x, y)

    metrics = evaluate(model, x, y, "regression")

    assert set(metrics) == {"r2", "rmse", "mae", "mape"}
    assert metrics["mape"] == round(mean_absolute_percentage_error(y, model.predict(x)), 6)


@pytest.mark.parametrize(
    ("name", "task", "greater_is_better"),
    [
        ("roc_auc", "classification", True),
        ("average_precision", "classification", True),
        ("mape", "regression", False),
    ],
)
def test_the_new_metrics_gate_in_their_own_direction(name: str, task: str, greater_is_better: bool) -> None:
    config = TrainingConfig.model_validate({"model": {"name": "m", "target": "y"}, "evaluation": {"metric": name}})
    assert primary_metric(config, task).greater_is_better is greater_is_better  # type: ignore[arg-type]


def _write_config(path: Path, estimator: str) -> Path:
    path.write_text(
        '[model]\nname = "churn"\ntarget = "outcome"\ntask = "classification"\n'
        f'[estimator]\nclassification = "{estimator}"\nregression = "sklearn.linear_model:Ridge"\n'
        '[evaluation]\nmetric = "roc_auc"\nimportance_repeats = 0\n'
    )
    return path


def test_roc_auc_gates_a_binary_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a binary table and a gate on roc_auc, with a champion that ranks no better than chance
    x, y = _binary_frame(800)
    csv = tmp_path / "churn.csv"
    x.assign(outcome=y).to_csv(csv, index=False)
    store_root = tmp_path / "store"
    chance = _write_config(tmp_path / "chance.toml", "sklearn.dummy:DummyClassifier")
    learned = _write_config(tmp_path / "learned.toml", "sklearn.linear_model:LogisticRegression")

    def train(config: Path) -> None:
        assert main(["train", "--data", str(csv), "--config", str(config), "--store", str(store_root)]) == 0

    train(chance)
    store = ModelStore.from_uri(str(store_root))
    assert store.manifest("churn", 1).metric.name == "roc_auc"
    assert store.manifest("churn", 1).metrics["roc_auc"] == 0.5

    # When a model that ranks the rows well is trained, then one that does not
    train(learned)
    train(chance)

    # Then the better roc_auc is promoted and the worse one rejected, each with the metric named
    better, worse = store.manifest("churn", 2), store.manifest("churn", 3)
    assert better.metrics["roc_auc"] > 0.8
    assert store.status("churn", 2).status == "promoted"
    assert store.status("churn", 3).status == "rejected"
    assert "roc_auc" in store.status("churn", 3).reason
    assert worse.compared_with is not None
    assert worse.compared_with.version == 2
    alias = store.alias("churn", "champion")
    assert alias is not None
    assert alias.record.version == 2
    assert "worse than the champion: roc_auc 0.5" in capsys.readouterr().out
