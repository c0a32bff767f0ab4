"""`python -m training versions`: the versions of a model as a table (version, created, metric, status, alias)."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.registry import list_versions
from training.commands.common import add_registry_options, open_model, print_json, print_table, short_time

REASON_WIDTH = 70


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "versions",
        help="list a model's versions: created, held-out metric, status, aliases",
        description="List every complete version of a model, newest first, with its status, the reason for it and "
        "the alias(es) pointing at it (--json: oldest first, as the admin API lists them).",
    )
    add_registry_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store, name = open_model(args)
    listing = list_versions(store, name)
    if args.json:
        print_json(listing)
        return 0
    print(f"{listing.model} in {store.uri}, newest first")
    metrics = {row.metric for row in listing.versions}
    metric_header = metrics.pop() if len(metrics) == 1 else "metric"
    print_table(
        ["version", "created", metric_header, "status", "alias", "reason"],
        [
            (
                row.version,
                short_time(row.created_at),
                row.value if metric_header != "metric" else f"{row.metric}={row.value}",
                row.status,
                ", ".join([*row.aliases, *(f"{alias} (rollback)" for alias in row.rollback_target_of)]) or "-",
                row.reason,
            )
            for row in sorted(listing.versions, key=lambda row: row.version, reverse=True)
        ],
        max_widths={"alias": 30, "reason": REASON_WIDTH},
    )
    if listing.incomplete:
        print(f"incomplete (never finished publishing, not loadable): {', '.join(map(str, listing.incomplete))}")
    if listing.deleted:
        print(f"deleted by retention: {', '.join(map(str, listing.deleted))}")
    return 0
