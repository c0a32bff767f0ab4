"""Progress of the stages of a run (load, validate, prepare, fit, evaluate, convert, gate, publish, self-test,
promote).

On a terminal: one line per step with a spinner and the time it has taken so far, left with its final time and
what it found (rich, which the command line's environment has; the Lambda layers do not ship it and Lambda has
no terminal). Anywhere else (a pipe, a CI log, Lambda): a plain log line when a step starts and one when it
ends, through `logging`, or in the retrain function through its Powertools logger (JSON lines).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

logger = logging.getLogger(__name__)


class Step:
    """A running step; `done(text)` says what it found (shown when it ends)."""

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        self.result = ""
        self.started = time.perf_counter()

    def done(self, result: str) -> None:
        self.result = result

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


class Progress:
    """Progress as log lines: the default, and what Lambda and pipes get. `log` is a standard logger, or the
    retrain function's Powertools Logger (the same `info` signature), so that Lambda logs them as JSON."""

    def __init__(self, log: Any = logger) -> None:
        self.log = log

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        step = Step(name, detail)
        self.log.info("%s: started%s", name, f" ({detail})" if detail else "")
        try:
            yield step
        except BaseException:
            self.log.info("%s: failed after %.2f s", name, step.seconds)
            raise
        self.log.info("%s: done in %.2f s%s", name, step.seconds, f": {step.result}" if step.result else "")


class TerminalProgress(Progress):
    """Progress on a terminal: a live line per step (spinner, elapsed time), kept with its result when done."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        from rich.progress import Progress as Live
        from rich.progress import ProgressColumn, SpinnerColumn, Task, TextColumn
        from rich.text import Text

        class Mark(SpinnerColumn):
            """A spinner while the step runs, ✓ when it is done, ✗ when it failed."""

            def render(self, task: Task) -> Text:
                if task.fields.get("failed"):
                    return Text("✗", style="bold red")
                return Text("✓", style="green") if task.finished else super().render(task)  # type: ignore[return-value]

        class Seconds(ProgressColumn):
            """Seconds with a decimal (rich's elapsed column counts whole seconds; most steps take less)."""

            def render(self, task: Task) -> Text:
                seconds = task.finished_time if task.finished else task.elapsed
                return Text(f"{seconds or 0:6.1f} s", style="progress.elapsed")

        self.live = Live(
            Mark(),
            Seconds(),
            TextColumn("{task.description}"),
            console=console,
        )

    def __enter__(self) -> TerminalProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        step = Step(name, detail)
        # While it runs: what it works on; when done: what it found (one short line either way).
        task = self.live.add_task(f"[bold]{name}[/] {_escape(detail)}", total=None)
        try:
            yield step
        except BaseException:
            self.live.update(task, description=f"[bold red]{name} failed[/]", failed=True)
            self.live.stop_task(task)
            raise
        self.live.update(task, description=f"[bold]{name}[/] {_escape(step.result or detail)}", total=1, completed=1)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@cache
def terminal_console() -> Console | None:
    """A rich console on stderr when stderr is a terminal (and rich is installed), else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:  # not in the Lambda layers; a laptop without it gets log lines
        return None
    return Console(stderr=True)


def log_handler() -> logging.Handler | None:
    """A logging handler that prints above the live progress lines, on a terminal; None elsewhere."""
    console = terminal_console()
    if console is None:
        return None
    from rich.logging import RichHandler

    return RichHandler(console=console, show_time=False, show_path=False, markup=False)


@contextmanager
def for_command() -> Iterator[Progress]:
    """The progress a command line run shows: live lines on a terminal, log lines otherwise."""
    console = terminal_console()
    if console is None:
        yield Progress()
        return
    with TerminalProgress(console) as progress:
        yield progress


def describe_rows(rows: int, columns: int, files: int | None = None) -> str:
    where = f" from {files} file{'s' if files != 1 else ''}" if files is not None else ""
    return f"{rows:,} rows x {columns} columns{where}"


def size(data: Any) -> str:
    """Bytes for people: 1.2 MB."""
    count = float(len(data)) if not isinstance(data, int | float) else float(data)
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"
