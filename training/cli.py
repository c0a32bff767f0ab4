"""Command line: `python -m training train --data PATH_OR_S3_URI --target COLUMN [--task ...]`."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from sklambda.errors import SklambdaError
from sklambda.runtimes import RUNTIMES
from sklambda.serving import local_self_test
from sklambda.settings import StoreSettings
from sklambda.store import ModelStore

from training.config import DEFAULT_CONFIG, load_config
from training.flow import git_version, train_and_publish

logger = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train scikit-learn models, version them in a model store, and manage what is served.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train, evaluate on held-out rows, publish a new version, promote it if it is at least as good",
        description=(
            "Train the pipeline from the training configuration on a table, evaluate it on a held-out split, "
            "publish it as a new immutable version in the model store, and move the alias to it when it scores "
            "at least as well as the current version on the same held-out rows and the serving runtime loads "
            "and self-tests it."
        ),
    )
    train.add_argument(
        "--data",
        default=os.environ.get("DATA_URI"),
        help="CSV or Parquet: a file, a folder, or an s3://bucket/prefix (all files under it). Default: $DATA_URI.",
    )
    train.add_argument("--target", help="the column to predict (default: model.target in the configuration)")
    train.add_argument(
        "--task",
        choices=["classification", "regression", "auto"],
        help="what to learn (default: model.task in the configuration; auto decides from the target column)",
    )
    train.add_argument("--name", help="model name to publish under (default: model.name in the configuration)")
    train.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("TRAINING_CONFIG") or DEFAULT_CONFIG,
        help="training configuration file (default: $TRAINING_CONFIG or training/config.toml)",
    )
    _add_store_options(train)
    train.add_argument(
        "--serving-runtime",
        choices=RUNTIMES,
        default=os.environ.get("SERVING_RUNTIME", "onnx"),
        help="runtime that must load and self-test the new version before it is promoted (default: onnx)",
    )
    train.add_argument("--no-promote", action="store_true", help="publish the version but leave the alias alone")
    return parser


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    defaults = StoreSettings.from_env()
    parser.add_argument(
        "--store",
        default=defaults.model_store_uri,
        help="model store: a local folder or s3://bucket/prefix (default: $MODEL_STORE_URI, else ./model-store)",
    )
    parser.add_argument(
        "--alias", default=defaults.model_alias, help="alias to move (default: $MODEL_ALIAS or champion)"
    )


def _who(command: str) -> str:
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()} ({command})"


def run_train(args: argparse.Namespace) -> int:
    if not args.data:
        raise SklambdaError("no training data: pass --data PATH_OR_S3_URI or set DATA_URI")
    config = load_config(args.config).with_overrides(name=args.name, target=args.target, task=args.task)
    store = ModelStore.from_uri(args.store)
    outcome = train_and_publish(
        store,
        args.data,
        config,
        by=_who("python -m training train"),
        alias=args.alias,
        serving_check=local_self_test(store, args.serving_runtime),
        promote=not args.no_promote,
        code_version=git_version(Path(__file__).parent),
    )
    metrics = ", ".join(f"{name}={value}" for name, value in outcome.metrics.items())
    print(f"published {config.model.name} v{outcome.version} to {store.uri}")
    print(f"  held-out metrics: {metrics}")
    if outcome.champion_metrics is not None:
        champion = ", ".join(f"{name}={value}" for name, value in outcome.champion_metrics.items())
        print(f"  champion v{outcome.champion_version} on the same rows: {champion}")
    verdict = f"promoted to {args.alias}" if outcome.promoted else f"not promoted ({args.alias} unchanged)"
    print(f"  {verdict}: {outcome.reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return run_train(args)
    except SklambdaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")
