"""Command line: `python -m training COMMAND ...` (`--help` lists the commands; each has its own `--help`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sklambda.errors import SklambdaError
from training.commands import (
    describe,
    diff,
    history,
    promote,
    prune,
    report,
    retrain,
    rollback,
    runs,
    train,
    versions,
)
from training.commands.common import cli_settings
from training.progress import log_handler

# Each command module registers its own parser; add a module here to add a command.
COMMANDS = [train, retrain, runs, versions, describe, diff, promote, rollback, history, prune, report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train scikit-learn models, version them in a model store, and manage what is served.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    cli_settings.cache_clear()  # each command reads the environment afresh, once
    try:
        settings = cli_settings()
    except SklambdaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    handler = log_handler()  # on a terminal: log lines printed above the live progress lines
    logging.basicConfig(
        level=settings.log_level,
        format="%(message)s" if handler else "%(levelname)s %(name)s: %(message)s",
        handlers=[handler] if handler else None,
    )
    # botocore announces where it found credentials and endpoints at INFO: noise in a command's output.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except SklambdaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code
