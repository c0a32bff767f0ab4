"""`python -m training runs`: the training runs of a model (train, retrain, the Lambda), as a table (or one run
in full)."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.runs import RunLog, RunRecord
from training.commands.common import add_config_option, add_model_option, add_store_options, open_model, print_table
from training.commands.retrain import describe

COLUMNS = ("run", "trigger", "status", "version", "metric", "challenger", "champion", "rows", "seconds", "reason")
REASON_WIDTH = 70


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "runs",
        help="list the training runs of a model (newest first), or show one run in full",
        description="List the training runs (train, retrain, the retrain function) recorded in the model store, "
        "newest first, as a table; with a run id, "
        "show that run's record in full (data, metrics of both models, every gate check, data problems).",
    )
    parser.add_argument("run_id", nargs="?", help="show this run in full")
    add_model_option(parser)
    add_config_option(parser, "training configuration that names the model")
    parser.add_argument("--limit", type=int, default=20, help="how many runs to list (default: 20)")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store, name = open_model(args)
    log = RunLog(store.objects, name)
    if args.run_id:
        print(describe(log.get(args.run_id)))
        return 0
    records = log.list(args.limit)
    if not records:
        print(f"no training runs of {name} in {store.uri}")
        return 0
    print(f"training runs of {name} in {store.uri}, newest first")
    print_table(COLUMNS, [row(record) for record in records], max_widths={"reason": REASON_WIDTH})
    return 0


def row(record: RunRecord) -> tuple[str, ...]:
    metric = record.metric or ""
    challenger = record.metrics.get(metric) if record.metrics and metric else None
    champion = record.champion_metrics.get(metric) if record.champion_metrics and metric else None
    reason = record.reason if not record.data_problems else f"{record.reason}: {record.data_problems[0]}"
    return (
        record.run_id,
        record.trigger,
        record.status,
        f"v{record.version}" if record.version is not None else "-",
        metric or "-",
        "-" if challenger is None else f"{challenger:g}",
        "-" if champion is None else f"{champion:g}",
        str(record.data.rows) if record.data else "-",
        "-" if record.duration_seconds is None else f"{record.duration_seconds:.1f}",
        reason,
    )
