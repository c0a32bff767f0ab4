"""`python -m training train`: train, evaluate, publish a version, promote it if it passes the gate."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.errors import SklambdaError
from sklambda.manifest import Manifest
from sklambda.serving import local_self_test
from training.commands.common import (
    add_config_option,
    add_data_option,
    add_serving_runtime_option,
    add_store_options,
    open_store,
    who,
)
from training.config import load_config
from training.flow import code_version, train_and_publish
from training.progress import for_command


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "train",
        help="train, evaluate on held-out rows, publish a new version, promote it if it is at least as good",
        description=(
            "Train the pipeline from the training configuration on a table, evaluate it on a held-out split, "
            "publish it as a new immutable version in the model store, and move the alias to it when it scores "
            "at least as well as the current version on the same held-out rows and the serving runtime loads "
            "and self-tests it."
        ),
    )
    add_data_option(parser)
    parser.add_argument("--target", help="the column to predict (default: model.target in the configuration)")
    parser.add_argument(
        "--task",
        choices=["classification", "regression", "auto"],
        help="what to learn (default: model.task in the configuration; auto decides from the target column)",
    )
    parser.add_argument("--name", help="model name to publish under (default: model.name in the configuration)")
    add_config_option(parser)
    add_store_options(parser)
    add_serving_runtime_option(parser)
    parser.add_argument("--no-promote", action="store_true", help="publish the version but leave the alias alone")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.data:
        raise SklambdaError("no training data: pass --data PATH_OR_S3_URI or set DATA_URI")
    config = load_config(args.config).with_overrides(name=args.name, target=args.target, task=args.task)
    store = open_store(args)
    with for_command() as progress:
        outcome = train_and_publish(
            store,
            args.data,
            config,
            by=who("python -m training train"),
            alias=args.alias,
            serving_check=local_self_test(store, args.serving_runtime),
            promote=not args.no_promote,
            code_version=code_version(),
            progress=progress,
        )
    metrics = ", ".join(f"{name}={value}" for name, value in outcome.metrics.items())
    print(f"published {config.model.name} v{outcome.version} to {store.uri}")
    print(f"  held-out metrics: {metrics}")
    if outcome.champion_metrics is not None:
        champion = ", ".join(f"{name}={value}" for name, value in outcome.champion_metrics.items())
        print(f"  champion v{outcome.champion_version} on the same rows: {champion}")
    print(f"  serving: {serving_runtimes(store.manifest(config.model.name, outcome.version))}")
    verdict = f"promoted to {args.alias}" if outcome.promoted else f"not promoted ({args.alias} unchanged)"
    print(f"  {verdict}: {outcome.reason}")
    return 0


def serving_runtimes(manifest: Manifest) -> str:
    """Which serving runtimes can serve a version, said plainly (a pipeline that does not convert to ONNX needs
    the scikit-learn runtime)."""
    onnx = manifest.runtimes.get("onnx")
    if onnx is not None and onnx.supported:
        return "ONNX Runtime (the default) or scikit-learn"
    why = onnx.detail if onnx is not None and onnx.detail else "no ONNX model was stored"
    return f"scikit-learn runtime only (ServingRuntime=sklearn): {why}"
