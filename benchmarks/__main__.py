"""Every performance claim, measured side by side in one run and printed as one table (`make bench`, which runs
`sam build` first; or `python -m benchmarks` on an existing build):

- size: each function + its layers as `sam build` left them, against Lambda's 250 MiB limit and its budget;
- init: predict in a fresh process from its bundle, model fetched from a local S3 (benchmarks/cold_start.py);
- warm: the predict handler, single row and 1000 rows, both runtimes, two models (benchmarks/serving.py);
- api: the local HTTP API under concurrent load from a second process (benchmarks/load.py);
- retrain: a whole retrain run against bare fit + score (benchmarks/retrain.py).

Timings alternate the measured side and its reference and report medians: these machines are noisy, read the
ratios. Timing targets are reported, not asserted (the size budgets are asserted by tests/build).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This checkout's code first, whatever the environment has installed.
sys.path[:0] = [str(REPO / "layers" / "shared"), str(REPO)]

from benchmarks import cold_start, load, retrain, serving  # noqa: E402
from benchmarks.bundles import BUDGETS_MIB, BUILD, LAMBDA_LIMIT_MIB, bundle_mib, describe, lambda_runtime_folder  # noqa: E402
from benchmarks.local_s3 import LocalS3, use  # noqa: E402
from benchmarks.report import Row, render, verdict  # noqa: E402

SECTIONS = ("size", "init", "warm", "api", "retrain")


def sizes() -> list[Row]:
    if not (BUILD / "template.yaml").is_file():
        return [Row("size", "no .aws-sam/build: run `make build` (make bench does)", "-")]
    rows = []
    for bundle, budget in BUDGETS_MIB.items():
        size = bundle_mib(bundle)
        rows.append(
            Row(
                "size",
                f"{bundle.label}: {describe(bundle)}",
                f"{size:.1f} MiB",
                f"Lambda limit {LAMBDA_LIMIT_MIB} MiB",
                f"{size / LAMBDA_LIMIT_MIB:.0%} of limit",
                f"<= {budget} MiB",
                verdict(size <= budget),
            )
        )
    return rows


def api(store_uri: str, scratch: str, concurrency: int, requests: int, limit_seconds: float) -> list[Row]:
    """Serve template.yaml's routes here, as `make serve` does, and load them from a second process."""
    import orjson

    from devtools.local_api import LocalApi
    from sklambda.store import ModelStore

    store = ModelStore.from_uri(store_uri)
    alias = store.alias("penguins", "champion")
    assert alias is not None
    body = orjson.dumps({"instances": serving.request_rows(store.manifest("penguins", alias.record.version), 1)})
    environment = {"MODEL_STORE_URI": store_uri, "MODEL_NAME": "penguins", "PREDICT_FUNCTION_NAME": ""}
    with LocalApi(REPO / "template.yaml", port=0, env_overrides=environment) as local_api, serving.quiet_stdout():
        url = f"{local_api.url}/predict"
        # The first request imports the handler (its cold start): not part of the load.
        load.generate(url, body, concurrency=1, requests=1, limit_seconds=60)
        return [load.run(url, body, concurrency, requests, limit_seconds, Path(scratch))]


def train(store_uri: str) -> list[Row]:
    serving.train_models(store_uri)
    return []


def retrain_section(rows: int, s3_prefix: str, repeats: int, scratch: str) -> list[Row]:
    table, notes = retrain.run(rows, s3_prefix, repeats, Path(scratch))
    return table + [Row("note", note, "") for note in notes]


# Each measurement runs in a fresh interpreter (`python -m benchmarks --child NAME ARGS`): nothing one leaves
# behind (imported modules, environment variables a handler set, thread pools) can slow the next one down.
CHILDREN: dict[str, Callable[..., list[Row]]] = {
    "train": train,
    "warm": serving.warm,
    "api": api,
    "retrain": retrain_section,
}
_ROWS = "benchmark-rows: "


def in_child(child: str, log: Path, **arguments: object) -> list[Row]:
    print(f"bench: {child} {' '.join(f'{k}={v}' for k, v in arguments.items() if k != 'scratch')}", file=sys.stderr)
    command = [sys.executable, "-m", "benchmarks", "--child", child, json.dumps(arguments)]
    with log.open("a") as sink:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=sink, text=True, check=False)  # noqa: S603
    lines = [line for line in done.stdout.splitlines() if line.startswith(_ROWS)]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"bench: {child} failed (exit {done.returncode}); its log is {log}:\n" + log.read_text()[-3000:]
        )
    return [Row(**row) for row in json.loads(lines[-1].removeprefix(_ROWS))]


def run_child(name: str, arguments: str) -> int:
    rows = CHILDREN[name](**json.loads(arguments))
    print(_ROWS + json.dumps([asdict(row) for row in rows]), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({', '.join(SECTIONS)})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a smoke run, noisier numbers")
    parser.add_argument("--retrain-rows", type=int, default=100_000, help="table size for the retrain target")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "ARGUMENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(*args.child)
    sections = set(args.only.split(","))
    if unknown := sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}")
    scale = 5 if args.quick else 1
    started = time.perf_counter()
    load_before = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    rows: list[Row] = []
    if "size" in sections:
        rows += sizes()
    with tempfile.TemporaryDirectory(prefix="sklambda-bench-") as folder, LocalS3() as s3:
        scratch = Path(folder)
        log = scratch / "bench.log"
        use(s3)
        store_uri = s3.bucket_uri("models")
        if sections & {"init", "warm", "api"}:
            in_child("train", log, store_uri=store_uri)
        if "init" in sections:
            if (BUILD / "template.yaml").is_file():
                runtime_folder = lambda_runtime_folder(scratch / "lambda-runtime")
                for label, name in serving.MODELS.items():
                    for runtime in ("onnx", "sklearn"):
                        print(f"bench: init {label} {runtime}", file=sys.stderr)
                        repeats = max((7 if runtime == "onnx" else 5) // scale, 2)
                        rows += cold_start.init(
                            label, name, runtime, store_uri, s3.environment, runtime_folder, scratch, repeats
                        )
                rows.append(cold_start.sdk_share(s3.environment, runtime_folder, max(7 // scale, 2)))
            else:
                rows.append(Row("init", "no .aws-sam/build: run `make build` (make bench does)", "-"))
        if "warm" in sections:
            for label, name in serving.MODELS.items():
                for runtime in ("onnx", "sklearn"):
                    rows += in_child(
                        "warm",
                        log,
                        label=label,
                        name=name,
                        runtime=runtime,
                        store_uri=store_uri,
                        repeats=serving.repeats(runtime, single=3000 // scale, batch=200 // scale),
                    )
        if "api" in sections:
            rows += in_child(
                "api",
                log,
                store_uri=store_uri,
                scratch=str(scratch),
                concurrency=8,
                requests=3000 // scale,
                limit_seconds=20 / scale,
            )
        if "retrain" in sections:
            rows += in_child(
                "retrain",
                log,
                rows=args.retrain_rows,
                s3_prefix=s3.bucket_uri("retrain"),
                repeats=max(3 // scale, 1),
                scratch=str(scratch),
            )
    load_after = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    elapsed = time.perf_counter() - started
    machine = f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    print(f"{machine}; load average before {load_before}, after {load_after}; {elapsed:.0f} s")
    print(render([row for row in rows if row.section != "note"]))
    for row in rows:
        if row.section == "note":
            print(row.subject)
    return 0


if __name__ == "__main__":
    sys.exit(main())
