"""`python -m training retrain`: one retrain run, exactly as the retrain Lambda runs it (lock, validation against
the champion, budget, gate, run record), on this machine: training.pipeline.run_training, trigger "cli"."""

from __future__ import annotations

import argparse
import time
from typing import Any

from sklambda.errors import SklambdaError
from sklambda.runs import RunRecord
from sklambda.serving import local_self_test
from training.budget import RunLimits
from training.commands.common import (
    add_config_option,
    add_data_option,
    add_serving_runtime_option,
    add_store_options,
    open_store,
    who,
)
from training.commands.train import add_model_section_options
from training.config import load_config
from training.lineage import code_version
from training.pipeline import DEFAULT_LOCK_SECONDS, TrainingRun, model_config, run_training
from training.progress import for_command


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "retrain",
        help="one retrain run as the Lambda does it: validate the data, train, gate, promote, record the run",
        description=(
            "Carry out one retrain run with the same code as the retrain Lambda: take the model's run lock, load "
            "and validate the data against the champion's contract, check the time/memory budget, train, publish, "
            "run the promotion gate ([gate] in the configuration) and move the alias only if it passes; every "
            "run is recorded (see `python -m training runs`). A model other than the configuration's takes its "
            "target and task from its champion unless --target/--task say otherwise. Exit code 0: promoted, "
            "rejected or skipped; 1: failed."
        ),
    )
    add_data_option(parser)
    add_model_section_options(parser)
    add_config_option(parser)
    add_store_options(parser)
    add_serving_runtime_option(parser)
    parser.add_argument(
        "--max-seconds", type=float, help="refuse the run if it would not finish within this (default: no limit)"
    )
    parser.add_argument(
        "--max-memory-mb", type=float, help="refuse the run if it would need more memory (default: no limit)"
    )
    parser.add_argument(
        "--lock-seconds",
        type=float,
        default=DEFAULT_LOCK_SECONDS,
        help=f"how long the run lock lasts if this process dies (default: {DEFAULT_LOCK_SECONDS:.0f})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.data:
        raise SklambdaError("no training data: pass --data PATH_OR_S3_URI or set DATA_URI")
    store = open_store(args)
    config = model_config(
        load_config(args.config), store, name=args.name, target=args.target, task=args.task, alias=args.alias
    )
    deadline = None
    if args.max_seconds is not None:
        end = time.monotonic() + args.max_seconds
        deadline = lambda: end - time.monotonic()  # noqa: E731
    with for_command() as progress:
        record = run_training(
            TrainingRun(
                store=store,
                data_uri=args.data,
                config=config,
                alias=args.alias,
                serving_check=local_self_test(store, args.serving_runtime),
                limits=RunLimits(seconds_left=deadline, memory_mb=args.max_memory_mb),
                lock_seconds=args.lock_seconds,
                code_version=code_version(),
                progress=progress,
            ),
            trigger="cli",
            by=who("python -m training retrain"),
        )
    print(describe(record))
    return 1 if record.status == "failed" else 0


def describe(record: RunRecord) -> str:
    """A run record for people: outcome, data, metrics, every gate check, data problems."""
    lines = [f"run {record.run_id} ({record.trigger}): {record.status.upper()} in {record.duration_seconds} s"]
    if record.reason:
        lines.append(f"  reason: {record.reason}")
    if record.data is not None:
        data = record.data
        lines.append(
            f"  data: {data.uri}: {data.rows} rows x {data.columns} columns in {data.files} file(s), "
            f"sha256 {(data.sha256 or '')[:12]}"
        )
    if record.version is not None:
        lines.append(f"  version: {record.name} v{record.version}")
    if record.metrics:
        lines.append("  challenger: " + ", ".join(f"{k}={v}" for k, v in record.metrics.items()))
    if record.champion_metrics:
        champion = ", ".join(f"{k}={v}" for k, v in record.champion_metrics.items())
        lines.append(f"  champion v{record.champion_version} on the same rows: {champion}")
    for check in record.gate:
        lines.append(f"  [{'pass' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    for problem in record.data_problems:
        lines.append(f"  data problem: {problem}")
    if record.stages:
        lines.append("  seconds: " + ", ".join(f"{k}={v}" for k, v in record.stages.items()))
    return "\n".join(lines)
