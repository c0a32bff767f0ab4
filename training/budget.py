"""Will a run fit in the time and memory it has? Estimated from rows x columns with the growth measured by
benchmarks/retrain_scaling.py ([budget] in the training configuration), checked before training starts and
again between stages, so that a run too big for the Lambda refuses with what to do instead of dying mid-way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklambda.errors import BudgetExceeded
from training.config import BudgetSection

# The share of a run's time that publishing and the gate take after training (13-16% measured from 1 to 6
# million rows by benchmarks/retrain_scaling.py): what must still be left when training is done.
PUBLISH_AND_GATE_SHARE = 0.2

WHAT_TO_DO = (
    "Train it outside the Lambda, on a machine with more time and memory, with the same flow: "
    "`python -m training retrain --data {uri} --store <MODEL_STORE_URI>`; or train on fewer rows (a sample, "
    "or a narrower DATA_URI prefix); or raise the function's MemorySize (at most 10240 MB; it also buys CPU)."
)


@dataclass(frozen=True)
class RunLimits:
    """What the run has: seconds left (a callable, read when asked) and memory; None means unbounded."""

    seconds_left: Callable[[], float] | None = None
    memory_mb: float | None = None

    @classmethod
    def of_lambda(cls, context: Any) -> RunLimits:
        return cls(
            seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
            memory_mb=float(context.memory_limit_in_mb),
        )


@dataclass(frozen=True)
class Estimate:
    rows: int
    columns: int
    seconds: float
    memory_mb: float

    def as_dict(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "seconds": round(self.seconds, 1),
            "memory_mb": round(self.memory_mb),
        }


def estimate(rows: int, columns: int, budget: BudgetSection) -> Estimate:
    """Linear in cells (rows x columns): as measured for the sample pipeline (see docs/retraining.md)."""
    cells = rows * columns / 1e6
    return Estimate(
        rows=rows,
        columns=columns,
        seconds=budget.base_seconds + budget.seconds_per_million_cells * cells,
        memory_mb=budget.base_mb + budget.mb_per_million_cells * cells,
    )


def check_fits(needed: Estimate, limits: RunLimits, budget: BudgetSection, data_uri: str) -> None:
    """Raise BudgetExceeded, saying what to do, when the estimate (times the safety factor) does not fit."""
    problems = []
    seconds_needed = needed.seconds * budget.safety_factor + budget.reserve_seconds
    if limits.seconds_left is not None:
        left = limits.seconds_left()
        if seconds_needed > left:
            problems.append(f"about {seconds_needed:.0f} s needed (with safety margin), {left:.0f} s left")
    memory_needed = needed.memory_mb * budget.safety_factor
    if limits.memory_mb is not None and memory_needed > limits.memory_mb:
        problems.append(
            f"about {memory_needed:.0f} MB needed (with safety margin), {limits.memory_mb:.0f} MB available"
        )
    if problems:
        raise BudgetExceeded(
            f"refusing to train {needed.rows} rows x {needed.columns} columns here: {'; '.join(problems)} "
            f"(estimated from [budget] in the training configuration). " + WHAT_TO_DO.format(uri=data_uri)
        )


def check_time_left(needed: Estimate, limits: RunLimits, budget: BudgetSection, stage: str, data_uri: str) -> None:
    """After training: is there still time to publish, gate and record (training may have overrun)?"""
    if limits.seconds_left is None:
        return
    left = limits.seconds_left()
    still_needed = needed.seconds * PUBLISH_AND_GATE_SHARE * budget.safety_factor + budget.reserve_seconds
    if left < still_needed:
        raise BudgetExceeded(
            f"only {left:.0f} s left after {stage}; publishing, the gate and the run record need about "
            f"{still_needed:.0f} s: stopping before anything is published. " + WHAT_TO_DO.format(uri=data_uri)
        )
