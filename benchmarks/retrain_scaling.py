"""How a retrain run's time and peak memory grow with rows, for the sample pipeline (penguins, the estimator in
training/config.toml), so that we know where the retrain Lambda (15 minutes, at most 10240 MB) stops fitting.

Each size runs the whole retrain flow (`training.pipeline.run_training`: load CSV, validate against a champion,
train, ONNX-convert, publish, gate with the serving self-test, record) in a fresh process, so its peak RSS is
its own. Tables are synthesised by resampling the penguins rows with a little noise on the numbers.

    .venv/bin/python -m benchmarks.retrain_scaling                    # 10k, 100k, 1M rows
    .venv/bin/python -m benchmarks.retrain_scaling --rows 10000 100000 1000000 3000000

Prints one line per size, then the linear fit per million cells (rows x columns) that [budget] in
training/config.toml takes, and the table size at which the Lambda no longer fits. Figures are from this
machine; read them as ratios between sizes measured side by side in one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PENGUINS = REPO / "training" / "data" / "penguins.csv"
LAMBDA_SECONDS = 900
LAMBDA_MAX_MB = 10240
NOISE = 0.02  # of each numeric column's standard deviation


def synthesise(rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` rows resampled from penguins, numbers jittered and kept within the observed range."""
    source = pd.read_csv(PENGUINS)
    rng = np.random.default_rng(seed)
    table = source.iloc[rng.integers(0, len(source), rows)].reset_index(drop=True)
    for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        column = source[name]
        jitter = rng.normal(0, NOISE * column.std(), rows)
        table[name] = (table[name] + jitter).clip(column.min(), column.max()).round(1)
    return table


def child(data: Path, store: Path) -> dict[str, float]:
    """One run in this process (started fresh by the parent); returns its measurements."""
    from sklambda.serving import local_self_test
    from sklambda.store import ModelStore
    from training.config import load_config
    from training.pipeline import TrainingRun, run_training

    model_store = ModelStore.from_uri(str(store))
    context = TrainingRun(
        store=model_store,
        data_uri=str(data),
        config=load_config(),
        serving_check=local_self_test(model_store, "onnx"),
    )
    started = time.perf_counter()
    record = run_training(context, trigger="benchmark", by="benchmarks.retrain_scaling")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if record.status == "failed":
        raise SystemExit(f"run failed: {record.reason} {record.data_problems}")
    return {"seconds": seconds, "peak_mb": peak_mb, **{f"stage_{k}": v for k, v in record.stages.items()}}


def measure(rows: int, workdir: Path, champion_store: Path) -> dict[str, float]:
    data = workdir / f"penguins_{rows}.csv"
    synthesise(rows).to_csv(data, index=False)
    store = workdir / f"store_{rows}"
    subprocess.run(["cp", "-r", str(champion_store), str(store)], check=True)  # noqa: S603, S607
    completed = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "benchmarks.retrain_scaling", "--child", str(data), str(store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{rows} rows: {completed.stderr[-2000:]}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["rows"] = rows
    result["columns"] = len(pd.read_csv(PENGUINS, nrows=1).columns)
    data.unlink()
    return result


def fit(cells: list[float], values: list[float]) -> tuple[float, float]:
    """Least squares value = base + slope * cells (cells in millions)."""
    slope, base = np.polyfit(cells, values, 1)
    return float(base), float(slope)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--child", nargs=2, metavar=("DATA", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]))))
        return 0
    with tempfile.TemporaryDirectory(prefix="retrain-scaling-") as tmp:
        workdir = Path(tmp)
        champion = workdir / "champion"
        from training.cli import main as training_main

        if training_main(["train", "--data", str(PENGUINS), "--store", str(champion)]) != 0:
            raise SystemExit("could not train the champion")
        results = []
        print(f"{'rows':>10} {'cells (M)':>10} {'seconds':>9} {'peak MB':>9}  stages (s)")
        for rows in args.rows:
            result = measure(rows, workdir, champion)
            results.append(result)
            stages = ", ".join(f"{k[6:]}={v:.1f}" for k, v in result.items() if k.startswith("stage_"))
            cells = rows * result["columns"] / 1e6
            print(
                f"{rows:>10} {cells:>10.2f} {result['seconds']:>9.1f} {result['peak_mb']:>9.0f}  {stages}", flush=True
            )
    cells = [r["rows"] * r["columns"] / 1e6 for r in results]
    base_s, per_cell_s = fit(cells, [r["seconds"] for r in results])
    base_mb, per_cell_mb = fit(cells, [r["peak_mb"] for r in results])
    for previous, current in itertools.pairwise(results):
        time_ratio = current["seconds"] / previous["seconds"]
        memory_ratio = current["peak_mb"] / previous["peak_mb"]
        print(
            f"x{current['rows'] / previous['rows']:.0f} rows ({previous['rows']} -> {current['rows']}): "
            f"time x{time_ratio:.1f}, peak memory x{memory_ratio:.1f}"
        )
    print(
        f"fit: seconds = {base_s:.1f} + {per_cell_s:.2f} per million cells; peak MB = {base_mb:.0f} + {per_cell_mb:.0f}"
    )
    columns = results[-1]["columns"]
    rows_time = (LAMBDA_SECONDS - base_s) / per_cell_s * 1e6 / columns if per_cell_s > 0 else float("inf")
    rows_memory = (LAMBDA_MAX_MB - base_mb) / per_cell_mb * 1e6 / columns if per_cell_mb > 0 else float("inf")
    print(
        f"with {columns} columns the Lambda runs out of time at ~{rows_time / 1e6:.1f}M rows (900 s) and of memory "
        f"at ~{rows_memory / 1e6:.1f}M rows (10240 MB), before [budget] safety margins"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
