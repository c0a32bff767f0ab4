"""The model report: one self-contained HTML file drawn from what the store holds (local folder or S3), for a
classifier and a regressor, and for versions stored before held-out summaries existed."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression

from sklambda.errors import NotFound
from sklambda.manifest import Manifest, Metric
from sklambda.runs import RunLog
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, REPO
from training.cli import main
from training.config import load_config
from training.evaluate import held_out_evaluation
from training.report import gather, render, report_html

pytestmark = pytest.mark.unit

PLOT = re.compile(r'<img class="plot" alt="([^"]*)" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)">')


def plots(document: str) -> dict[str, bytes]:
    """alt text → the SVG bytes of every embedded plot."""
    return {alt: base64.b64decode(data) for alt, data in PLOT.findall(document)}


def assert_self_contained(document: str) -> None:
    # Nothing is fetched when it opens: no scripts, no stylesheets, no external images or fonts
    assert "<script" not in document
    assert "<link" not in document
    assert not re.search(r"""(src|href)=["'](?!data:)""", document)
    assert "url(" not in document


def test_the_report_of_a_store_shows_every_plot_and_table(three_versions: str, tmp_path: Path) -> None:
    # Given a store (local folder or S3) with v1, v2 (champion) and v3 (a candidate), and one retrain run
    assert main(["retrain", "--data", str(PENGUINS_CSV), "--store", three_versions]) == 0  # v4, champion

    # When the report is written from the command line
    out = tmp_path / "out" / "report.html"
    assert main(["report", "--store", three_versions, "--out", str(out)]) == 0
    document = out.read_text(encoding="utf-8")

    # Then it is one self-contained HTML file
    assert document.startswith("<!DOCTYPE html>")
    assert_self_contained(document)
    # With the plots, each a valid SVG image: the metric across versions, challenger vs champion on the last run,
    # the champion's confusion matrix and feature importance
    drawn = plots(document)
    assert set(drawn) == {
        "held-out accuracy of each version of penguins",
        "challenger v4 against champion v2",
        "confusion matrix of v4 on 69 held-out rows",
        "permutation importance of the input columns of v4",
    }
    for svg in drawn.values():
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    # And the sections and tables, newest first, with the run's gate checks and the data contract
    for heading in (
        "Held-out metric across versions",
        "Challenger vs champion: the last comparison",
        "Confusion matrix of v4 (champion)",
        "Feature importance of v4 (champion)",
        "Pipeline of v4 (champion)",
        "Data contract of v4 (champion)",
        "Versions (newest first)",
        "Retrain runs (newest first)",
    ):
        assert f"<h2>{heading}</h2>" in document
    assert "retrain run " in document
    assert "<b>beats champion</b>" in document
    assert document.index("<td>v4</td>") < document.index("<td>v3</td>") < document.index("<td>v1</td>")
    assert "<code>bill_length_mm</code>" in document
    assert "Biscoe, Dream, Torgersen" in document


def test_the_confusion_matrix_counts_every_held_out_row(trained_store: Path) -> None:
    manifest = ModelStore.from_uri(str(trained_store)).manifest("penguins", 1)
    held_out = manifest.held_out
    assert held_out is not None
    assert held_out.labels == ["Adelie", "Chinstrap", "Gentoo"]
    assert held_out.confusion is not None
    assert sum(map(sum, held_out.confusion)) == held_out.rows == manifest.training["rows"]["test"]
    assert [item.feature for item in held_out.importance] == manifest.contract.names
    assert (held_out.importance_metric, held_out.importance_repeats) == ("accuracy", 5)


def test_a_regression_report_shows_residuals(tmp_path: Path) -> None:
    # Given a regressor
    data = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    data.loc[::9, "bmi"] = np.nan
    csv = tmp_path / "diabetes.csv"
    data.to_csv(csv, index=False)
    store = tmp_path / "store"
    assert (
        main(["train", "--data", str(csv), "--target", "progression", "--name", "diabetes", "--store", str(store)]) == 0
    )

    # When its report is drawn
    document = report_html(ModelStore.from_uri(str(store)), "diabetes")

    # Then it shows residuals (from the (actual, predicted) pairs stored at training) instead of a confusion matrix
    manifest = ModelStore.from_uri(str(store)).manifest("diabetes", 1)
    assert manifest.held_out is not None
    assert manifest.held_out.actual is not None
    assert len(manifest.held_out.actual) == manifest.held_out.rows == 89
    assert set(plots(document)) == {
        "held-out r2 of each version of diabetes",
        "residuals of v1 on 89 held-out rows",
        "permutation importance of the input columns of v1",
    }
    assert "<h2>Residuals of v1 (champion)</h2>" in document
    assert "No comparison yet: the first version had no champion to be compared with." in document
    # And the training run that published it is listed (every run is recorded, `train`'s included)
    assert "No training runs recorded yet" not in document
    run = RunLog(ModelStore.from_uri(str(store)).objects, "diabetes").list()[0]
    assert run.run_id in document


def test_a_version_stored_before_held_out_summaries_still_verifies_and_reports(
    local_store_copy: Path, tmp_path: Path
) -> None:
    # Given a version whose manifest was written before `held_out` existed (no such key, its own checksum)
    store = ModelStore.from_uri(str(local_store_copy))
    manifest = store.manifest("penguins", 1)
    old = manifest.model_copy(update={"held_out": None, "manifest_sha256": None})
    old_bytes = old.sealed()
    assert b'"held_out"' not in old_bytes
    (local_store_copy / "penguins" / "versions" / "000001" / "manifest.json").write_bytes(old_bytes)

    # When it is read and reported
    reread = store.manifest("penguins", 1)
    document = report_html(store, "penguins")

    # Then it verifies, and the report says what is missing and how to get it
    assert reread.held_out is None
    assert reread.manifest_sha256 == Manifest.model_validate_json(old_bytes).body_sha256()
    assert "Not recorded for this version (it was trained before held-out summaries were stored)" in document
    assert set(plots(document)) == {"held-out accuracy of each version of penguins"}


def test_the_report_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ModelStore.from_uri(str(tmp_path / "empty"))
    with pytest.raises(NotFound, match=r"penguins has no versions in .*: train one first"):
        gather(store, "penguins")
    assert main(["report", "--store", str(tmp_path / "empty"), "--name", "penguins"]) == 2
    assert "has no versions" in capsys.readouterr().err


def test_the_detail_sections_can_describe_another_version(local_store_copy: Path) -> None:
    store = ModelStore.from_uri(str(local_store_copy))
    document = render(gather(store, "penguins", version=1))
    assert "<h2>Confusion matrix of v1 (champion)</h2>" in document
    with pytest.raises(NotFound, match="penguins has no readable version 7"):
        gather(store, "penguins", version=7)


def test_plotting_and_terminal_libraries_stay_out_of_the_lambda_bundles() -> None:
    # Given the Lambda layers' requirements
    layers = sorted((REPO / "layers").glob("*/requirements.txt"))
    assert len(layers) == 4
    # Then none ships matplotlib or rich (laptop-only: requirements.txt)
    for requirements in layers:
        names = {line.split("==")[0].strip().lower() for line in requirements.read_text().splitlines()}
        assert names & {"matplotlib", "rich", "pillow", "contourpy"} == set(), requirements
    # And the code the retrain function runs does not import matplotlib (a fresh interpreter, as Lambda starts
    # it). rich is not checked here: scikit-learn imports it for its own progress callbacks when it is installed.
    probe = "import sys, functions.retrain.app, training.cli; print(sorted({'matplotlib', 'PIL'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={
            **os.environ,
            "DATA_URI": "s3://bucket/data/",
            "MODEL_NAME": "penguins",
            "PYTHONPATH": os.pathsep.join([str(REPO / "layers" / "shared"), str(REPO)]),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_permutation_importance_stays_cheap_on_a_wide_table() -> None:
    # Given a 60-column table and the default settings (5 repeats on at most 1000 rows)
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(3000, 60)), columns=[f"x{i}" for i in range(60)])
    y = pd.Series((x["x0"] > 0).astype(int))
    model = LogisticRegression(max_iter=200).fit(x, y)
    settings = load_config().evaluation

    # When the held-out summary is computed
    summary = held_out_evaluation(
        model, x, y, "classification", Metric(name="accuracy", greater_is_better=True), settings
    )

    # Then the repeats are cut so that there are at most 150 permutations, and the column that decides comes first
    assert (summary.importance_repeats, summary.importance_rows) == (2, 1000)
    ranked = sorted(summary.importance, key=lambda item: item.mean, reverse=True)
    assert ranked[0].feature == "x0"
    assert summary.confusion is not None
    assert sum(map(sum, summary.confusion)) == 3000
