"""One table for every benchmark: a row is something measured, what it is compared with, and the target.

Timings are medians of repetitions that alternate the measured side and its reference (floor), so that the
machine's drift and noise hit both alike: read the ratios, not the absolute times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["met", "MISSED", ""]


@dataclass(frozen=True)
class Row:
    """One line of the table: `comparison` is how `value` stands against `reference` (a ratio, a gap, a share)."""

    section: str
    subject: str
    value: str
    reference: str = ""
    comparison: str = ""
    target: str = ""
    verdict: str = ""


def seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.1f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x"


def verdict(ok: bool | None) -> Verdict:
    if ok is None:
        return ""
    return "met" if ok else "MISSED"


def interleaved(first: Callable[[], Any], second: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Medians of `first` and `second` in seconds, called alternately so drift and noise hit both alike."""
    a: list[float] = []
    b: list[float] = []
    clock = time.perf_counter
    for _ in range(repeats):
        start = clock()
        first()
        middle = clock()
        second()
        end = clock()
        a.append(middle - start)
        b.append(end - middle)
    return statistics.median(a), statistics.median(b)


HEADERS = Row("section", "subject", "measured", "reference", "vs reference", "target", "verdict")


def render(rows: list[Row]) -> str:
    """A Markdown table (what docs/performance.md pastes), aligned for the terminal too."""
    table = [HEADERS, *rows]
    cells = [[r.section, r.subject, r.value, r.reference, r.comparison, r.target, r.verdict] for r in table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS.__dataclass_fields__))]
    numbers = {2, 4}
    lines = []
    for index, row in enumerate(cells):
        padded = [
            cell.rjust(w) if i in numbers and index else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(padded) + " |")
        if index == 0:
            lines.append(
                "|"
                + "|".join(("-" * (w + 1) + ":") if i in numbers else "-" * (w + 2) for i, w in enumerate(widths))
                + "|"
            )
    return "\n".join(lines)
