"""`python -m training history`: every move of an alias (who, from, to, when, why) and its rollback stack."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.registry import alias_history
from training.commands.common import add_registry_options, open_model, print_json, print_table, short_time


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "history",
        help="show an alias's audit history: every move with who, from, to, when and why",
        description="Show the version an alias points at, its rollback stack, and every move it made, oldest first.",
    )
    add_registry_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store, name = open_model(args)
    record = alias_history(store, name, args.alias)
    if args.json:
        print_json(record)
        return 0
    stack = ", ".join(f"v{version}" for version in reversed(record.previous)) or "empty"
    print(f"{record.alias} of {name}: v{record.version} (rollback goes to: {stack})")
    print_table(
        ["when", "move", "from", "to", "by", "why"],
        [
            (short_time(move.at), move.kind, move.from_version, move.to_version, move.by, move.reason)
            for move in record.history
        ],
    )
    return 0
