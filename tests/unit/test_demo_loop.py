"""`make demo-loop` end to end in a temporary folder: the loop's story holds (no drift on the training table, drift
on the scaled column only, the live metric below its threshold, labelled rows written) and the model report gains
its monitoring section with both plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from devtools.demo_loop import main
from sklambda.monitor import monitoring_records
from sklambda.store import ModelStore

pytestmark = pytest.mark.unit


def test_the_demo_shows_the_loop_and_the_report_its_monitoring_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the demo runs
    assert main(["--workdir", str(tmp_path)]) == 0
    # Then two monitor runs are recorded: the first without alarms, the second with drift on body_mass_g only and
    # the live accuracy (half the labels contradict the model) below its threshold
    first, second = monitoring_records(ModelStore.from_uri(str(tmp_path / "store")), "penguins")
    assert first.alarms == []
    assert first.drift is not None
    assert first.drift.max_psi < 0.1
    assert second.drifted_columns == ["body_mass_g"]
    assert second.quality is not None
    assert second.quality.live == pytest.approx(0.5)
    assert second.quality_breached
    # And the labelled rows are a training CSV with the table's columns
    (labelled,) = (tmp_path / "data" / "labelled").glob("*.csv")
    table = pd.read_csv(labelled)
    assert "species" in table.columns
    assert len(table) == 80
    # And the report has the monitoring section with the drift and live-metric plots
    report = (tmp_path / "report.html").read_text()
    assert "Monitoring: live traffic against the training baseline" in report
    assert 'alt="drift of each input column per monitor run"' in report
    assert 'alt="live metric on labelled rows per monitor run"' in report
