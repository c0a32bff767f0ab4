"""Options and helpers shared by the commands."""

from __future__ import annotations

import argparse
import getpass
import socket

from sklambda.settings import StoreSettings
from sklambda.store import ModelStore


def add_store_options(parser: argparse.ArgumentParser) -> None:
    defaults = StoreSettings.from_env()
    parser.add_argument(
        "--store",
        default=defaults.model_store_uri,
        help="model store: a local folder or s3://bucket/prefix (default: $MODEL_STORE_URI, else ./model-store)",
    )
    parser.add_argument(
        "--alias", default=defaults.model_alias, help="alias to read or move (default: $MODEL_ALIAS or champion)"
    )


def open_store(args: argparse.Namespace) -> ModelStore:
    return ModelStore.from_uri(args.store)


def who(command: str) -> str:
    """Recorded as the author of a change in the store (alias history, statuses)."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()} ({command})"
