"""`python -m training rollback --reason ...`: point an alias back at the version it served before."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.registry import rollback
from training.commands.common import add_registry_options, add_serving_check_options, open_model, serving_check_for, who


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "rollback",
        help="point an alias (default champion) back at the version it pointed at before its last promotion",
        description=(
            "Roll the alias back one step: it points again at the version it served before its last promotion "
            "(after the serving runtime loads and self-tests it). The version rolled back from becomes retired."
        ),
    )
    add_registry_options(parser, json_output=False)
    add_serving_check_options(parser)
    parser.add_argument(
        "--from-version",
        type=int,
        default=None,
        help="the version you believe the alias serves now: if it serves another, nothing changes (exit 1)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store, name = open_model(args)
    change = rollback(
        store,
        name,
        alias=args.alias,
        by=who("python -m training rollback"),
        reason=args.reason,
        check=serving_check_for(args, store),
        from_version=args.from_version,
    )
    print(f"{change.alias} of {change.model}: v{change.from_version} → v{change.version} (rolled back)")
    print(f"  v{change.from_version} is now retired; rollback stack: {change.previous or 'empty'}")
    return 0
