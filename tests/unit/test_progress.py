"""Progress of the long steps: plain log lines off a terminal (pipes, CI, Lambda), live lines on one."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import PENGUINS_CSV
from training.cli import main
from training.progress import Progress, TerminalProgress, terminal_console

pytestmark = pytest.mark.unit

STEPS = ["load", "validate", "prepare", "fit", "evaluate", "convert", "gate", "publish", "self-test", "promote"]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def progress_lines() -> Iterator[list[str]]:
    """What training.progress logs (attached to its own logger: whatever else configured `training` logging)."""
    handler = Lines()
    log = logging.getLogger("training.progress")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    yield handler.lines
    log.removeHandler(handler)
    log.setLevel(level)


def test_off_a_terminal_each_step_logs_when_it_starts_and_ends(progress_lines: list[str]) -> None:
    # Given plain progress (a pipe, CI, Lambda)
    progress = Progress()

    # When a step runs and says what it found, and another fails
    with progress.step("load", "s3://bucket/data/") as step:
        step.done("344 rows x 8 columns from 1 file")
    with pytest.raises(RuntimeError), progress.step("fit", "RandomForestClassifier on 275 rows"):
        raise RuntimeError("out of memory")

    # Then each start, end and failure is one line
    assert progress_lines[0] == "load: started (s3://bucket/data/)"
    assert progress_lines[1].startswith("load: done in ")
    assert progress_lines[1].endswith(" s: 344 rows x 8 columns from 1 file")
    assert progress_lines[2] == "fit: started (RandomForestClassifier on 275 rows)"
    assert progress_lines[3].startswith("fit: failed after ")


def test_training_from_a_pipe_logs_every_step(
    tmp_path: Path, progress_lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no terminal (pytest captures stderr)
    assert terminal_console() is None

    # When the sample model is trained from the command line
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", str(tmp_path / "store")]) == 0

    # Then every long step logged its start and its end, in order, and stdout holds only the result
    started = [line.split(":")[0] for line in progress_lines if line.endswith(")") and ": started" in line]
    done = [line.split(":")[0] for line in progress_lines if ": done in " in line]
    assert started == done == STEPS
    assert any(line.startswith("evaluate: done in ") and "accuracy=" in line for line in progress_lines)
    assert capsys.readouterr().out.startswith("published penguins v1")


def test_on_a_terminal_each_step_is_a_live_line_left_with_its_time_and_result() -> None:
    # Given a terminal
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)

    # When steps run
    with TerminalProgress(console) as progress:
        with progress.step("load", "training/data/penguins.csv") as step:
            step.done("344 rows x 8 columns from 1 file")
        with progress.step("fit", "LogisticRegression on 275 rows"):
            pass
        with pytest.raises(ValueError, match="no converter"), progress.step("convert", "to ONNX"):
            raise ValueError("no converter")

    # Then the final screen has one line per step: ticked with its seconds and result, or crossed when it failed
    assert final_frame(screen.getvalue()) == [
        "✓ 0.0 s load 344 rows x 8 columns from 1 file",
        "✓ 0.0 s fit LogisticRegression on 275 rows",
        "✗ 0.0 s convert failed",
    ]


def final_frame(output: str) -> list[str]:
    """The lines a terminal shows at the end: what follows the last erase, escape codes and padding removed."""
    last = output.rsplit("\x1b[2K", 1)[-1]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last)
    return [" ".join(line.split()) for line in plain.strip().splitlines()]
