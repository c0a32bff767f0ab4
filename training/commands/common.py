"""Options and helpers shared by the commands."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
from pathlib import Path

from sklambda.runtimes import RUNTIMES
from sklambda.settings import StoreSettings
from sklambda.store import ModelStore
from training.config import DEFAULT_CONFIG


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


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=os.environ.get("DATA_URI"),
        help="CSV or Parquet: a file, a folder, or an s3://bucket/prefix (all files under it). Default: $DATA_URI.",
    )


def add_config_option(parser: argparse.ArgumentParser, what: str = "training configuration file") -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("TRAINING_CONFIG") or DEFAULT_CONFIG,
        help=f"{what} (default: $TRAINING_CONFIG or training/config.toml)",
    )


def add_serving_runtime_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serving-runtime",
        choices=RUNTIMES,
        default=os.environ.get("SERVING_RUNTIME", "onnx"),
        help="runtime that must load and self-test the new version before it is promoted (default: onnx)",
    )
