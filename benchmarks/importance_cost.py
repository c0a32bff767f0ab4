"""What permutation importance (stored at training for the model report) adds to training: `train()` with and
without it, the two interleaved, medians of repeats, on the sample model, the example forest and a 100-tree
forest over a wide synthetic table (20,000 rows x 60 numeric columns).

    .venv/bin/python -m benchmarks.importance_cost [--repeats 3]

Prints one line per model: seconds without, with, and the difference (docs/training.md: "Model report").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from training.config import TrainingConfig, load_config
from training.dataset import load_table
from training.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
PENGUINS = ROOT / "training" / "data" / "penguins.csv"


def wide_table(path: Path, rows: int = 20_000, columns: int = 60) -> Path:
    generator = np.random.default_rng(0)
    frame = pd.DataFrame(generator.normal(size=(rows, columns)), columns=[f"c{i}" for i in range(columns)])
    frame["label"] = np.where(frame.c0 + frame.c1 > 0, "yes", "no")
    frame.to_csv(path, index=False)
    return path


def without_importance(config: TrainingConfig) -> TrainingConfig:
    evaluation = config.evaluation.model_copy(update={"importance_repeats": 0})
    return config.model_copy(update={"evaluation": evaluation})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cases = [
            ("sample model", load_config(str(ROOT / "training" / "config.toml")), PENGUINS),
            ("example forest", load_config(str(ROOT / "training" / "examples" / "forest_ratios.toml")), PENGUINS),
            (
                "100-tree forest, 20,000 rows x 60 columns",
                load_config(str(ROOT / "benchmarks" / "random_forest.toml")).with_overrides(target="label"),
                wide_table(Path(scratch) / "wide.csv"),
            ),
        ]
        for label, config, data in cases:
            table = load_table(str(data))
            timings: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for computed in (True, False):
                    started = time.perf_counter()
                    train(table, config if computed else without_importance(config))
                    timings[computed].append(time.perf_counter() - started)
            without, with_it = statistics.median(timings[False]), statistics.median(timings[True])
            print(f"{label}: {without:.2f} s without, {with_it:.2f} s with (+{with_it - without:.2f} s)")


if __name__ == "__main__":
    main()
