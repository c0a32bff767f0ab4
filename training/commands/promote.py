"""`python -m training promote VERSION --reason ...`: point an alias at a version, after the serving runtime
loaded and self-tested it; one compare-and-swap, recorded in the alias history."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.registry import promote
from training.commands.common import add_registry_options, add_serving_check_options, open_model, serving_check_for, who


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "promote",
        help="point an alias (default champion) at a version, once the serving runtime loads and self-tests it",
        description=(
            "Point the alias at VERSION. The serving runtime must first load the version (checksums verified) "
            "and reproduce its golden outputs; a rejected or incomplete version is refused. If someone else moves "
            "the alias meanwhile, nothing changes and the command fails with a conflict."
        ),
    )
    parser.add_argument("version", type=int, help="version number")
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
    change = promote(
        store,
        name,
        args.version,
        alias=args.alias,
        by=who("python -m training promote"),
        reason=args.reason,
        check=serving_check_for(args, store),
        from_version=args.from_version,
    )
    if not change.moved:
        print(f"{change.alias} of {change.model} already points at v{change.version}; nothing changed")
        return 0
    before = f"v{change.from_version}" if change.from_version is not None else "(new alias)"
    print(f"{change.alias} of {change.model}: {before} → v{change.version}")
    print(f"  checked: the {args.predict_function or args.serving_runtime} runtime loaded it and passed its self-test")
    return 0
