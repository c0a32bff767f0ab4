"""The monitor's time and peak memory against the number of captured rows (not part of `make bench`: minutes).

    PYTHONPATH=layers/shared:. .venv/bin/python -m benchmarks.monitor_scale --rows 1000000 10000000

For each size: writes that many captured rows (penguins-like columns, requests of --rows-per-request rows) as
Firehose would (gzip objects of at most 64 MB of JSON lines, under <model>/version=1/date=<today>/ in a local
folder), then runs one monitor pass in a fresh process and reports its wall time and peak resident memory
(ru_maxrss; the interpreter and numpy alone take ~60 MB of it). Half the columns are drawn from the training
distribution, one is scaled so that the pass has drift to find.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OBJECT_BYTES = 64 * 1024 * 1024  # Firehose's buffer (before compression) with dynamic partitioning


def write_captures(folder: Path, rows: int, rows_per_request: int, seed: int = 7) -> int:
    """Captured rows in Firehose's layout; returns the number of objects written."""
    import orjson

    from sklambda.capture import capture_partition, encode_record
    from sklambda.runtimes import Prediction

    rng = np.random.default_rng(seed)
    today = datetime.now(UTC).date().isoformat()
    partition = folder / capture_partition("penguins", 1, today)
    partition.mkdir(parents=True, exist_ok=True)
    objects, buffer, size, written = 0, [], 0, 0
    now = time.time()
    block = 100_000  # rows generated at once
    islands = np.array(["Biscoe", "Dream", "Torgersen"], dtype=object)
    sexes = np.array(["male", "female", "__missing__"], dtype=object)
    species = np.array(["Adelie", "Chinstrap", "Gentoo"], dtype=object)
    while written < rows:
        count = min(block, rows - written)
        columns = {
            "bill_length_mm": rng.normal(44, 5.5, (count, 1)).astype(np.float32),
            "bill_depth_mm": rng.normal(17, 2, (count, 1)).astype(np.float32),
            "flipper_length_mm": rng.normal(201, 14, (count, 1)).astype(np.float32),
            "body_mass_g": (rng.normal(4200, 800, (count, 1)) * 1.5).astype(np.float32),  # drifted
            "year": rng.choice([2007, 2008, 2009], (count, 1)).astype(np.float32),
            "island": islands[rng.choice(3, (count, 1), p=[0.49, 0.36, 0.15])],
            "sex": sexes[rng.choice(3, (count, 1), p=[0.49, 0.48, 0.03])],
        }
        labels = species[rng.choice(3, count, p=[0.44, 0.2, 0.36])]
        for start in range(0, count, rows_per_request):
            part = {name: values[start : start + rows_per_request] for name, values in columns.items()}
            line = encode_record(
                f"r{written + start:012d}",
                "penguins",
                1,
                part,
                Prediction(labels[start : start + rows_per_request]),
                now,
            )
            buffer.append(line)
            size += len(line)
            if size >= OBJECT_BYTES:
                objects += _flush(partition, objects, buffer)
                buffer, size = [], 0
        written += count
    if buffer:
        objects += _flush(partition, objects, buffer)
    del orjson
    return objects


def _flush(partition: Path, index: int, lines: list[bytes]) -> int:
    (partition / f"capture-{index:05d}.gz").write_bytes(gzip.compress(b"".join(lines), compresslevel=1))
    return 1


def run_once(store: str, captures: str) -> None:
    """One monitor pass (in this process); prints its time and peak memory as JSON."""
    from sklambda.locations import open_object_store
    from sklambda.monitor import run_monitor
    from sklambda.store import ModelStore

    started = time.perf_counter()
    record = run_monitor(ModelStore.from_uri(store), open_object_store(captures), "penguins")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": record.captured_rows,
                "seconds": round(seconds, 2),
                "peak_mb": round(peak_mb),
                "drifted": record.drifted_columns,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rows-per-request", type=int, default=100)
    parser.add_argument("--once", nargs=2, metavar=("STORE", "CAPTURES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        run_once(*args.once)
        return
    from training.cli import main as training

    work = Path(tempfile.mkdtemp(prefix="monitor-scale-"))
    try:
        store = str(work / "store")
        with open(os.devnull, "w") as sink:
            stdout, sys.stdout = sys.stdout, sink
            try:
                assert training(["train", "--data", str(REPO / "training/data/penguins.csv"), "--store", store]) == 0
            finally:
                sys.stdout = stdout
        print("| captured rows | rows per request | objects (gzip) | on disk | monitor time | peak memory |")
        print("|---|---|---|---|---|---|")
        for rows in args.rows:
            captures = work / f"captures-{rows}"
            objects = write_captures(captures, rows, args.rows_per_request)
            disk = sum(path.stat().st_size for path in captures.rglob("*")) / 1e6
            env = {**os.environ, "PYTHONPATH": f"{REPO / 'layers/shared'}:{REPO}"}
            result = subprocess.run(  # noqa: S603 - this interpreter and this module
                [sys.executable, "-m", "benchmarks.monitor_scale", "--once", store, str(captures)],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
                env=env,
            )
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            assert measured["rows"] == rows, measured
            print(
                f"| {rows:,} | {args.rows_per_request} | {objects} | {disk:.0f} MB | {measured['seconds']} s "
                f"| {measured['peak_mb']} MB |",
                flush=True,
            )
            shutil.rmtree(captures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
