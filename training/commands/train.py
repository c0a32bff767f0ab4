"""`python -m training train`: train, evaluate, publish a version, promote it if it passes the gate.

The same run as `retrain` and the retrain Lambda (training.pipeline.run_training, trigger "cli"), recorded in the
model's runs; the data is not validated against the champion's contract (a person may change the model's inputs
on purpose: the gate still decides whether the new version replaces the champion)."""

from __future__ import annotations

import argparse
from typing import Any

from sklambda.errors import SklambdaError
from sklambda.manifest import Manifest
from sklambda.runs import RunRecord
from sklambda.serving import local_self_test
from training.commands.common import (
    add_config_option,
    add_data_option,
    add_serving_runtime_option,
    add_store_options,
    cli_settings,
    open_store,
    who,
)
from training.config import load_config
from training.lineage import code_version
from training.pipeline import TrainingRun, model_config, run_training
from training.progress import for_command

TARGET_HELP = (
    "the column to predict (default: [model].target for the model the configuration names; a model of another "
    "name takes its champion's target, else [model].target)"
)
TASK_HELP = "what to learn (default: [model].task, or a model's champion's task; auto decides from the target column)"
NAME_HELP = "model name (default: $MODEL_NAME, else [model].name in the configuration)"


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
    add_model_section_options(parser)
    add_config_option(parser)
    add_store_options(parser)
    add_serving_runtime_option(parser)
    parser.add_argument("--no-promote", action="store_true", help="publish the version but leave the alias alone")
    parser.set_defaults(handler=run)


def add_model_section_options(parser: argparse.ArgumentParser) -> None:
    """--name, --target, --task: which model a run trains (training.pipeline.model_config resolves them)."""
    parser.add_argument("--name", default=cli_settings().model_name, help=NAME_HELP)
    parser.add_argument("--target", help=TARGET_HELP)
    parser.add_argument("--task", choices=["classification", "regression", "auto"], help=TASK_HELP)


def run(args: argparse.Namespace) -> int:
    if not args.data:
        raise SklambdaError("no training data: pass --data PATH_OR_S3_URI or set DATA_URI")
    store = open_store(args)
    config = model_config(
        load_config(args.config), store, name=args.name, target=args.target, task=args.task, alias=args.alias
    )
    with for_command() as progress:
        record = run_training(
            TrainingRun(
                store=store,
                data_uri=args.data,
                config=config,
                alias=args.alias,
                serving_check=local_self_test(store, args.serving_runtime),
                promote=not args.no_promote,
                validate_against_champion=False,
                code_version=code_version(),
                progress=progress,
            ),
            trigger="cli",
            by=who("python -m training train"),
        )
    if record.status == "failed":
        raise SklambdaError(failure(record))
    assert record.version is not None
    metrics = ", ".join(f"{name}={value}" for name, value in (record.metrics or {}).items())
    print(f"published {record.name} v{record.version} to {store.uri}")
    print(f"  held-out metrics: {metrics}")
    if record.champion_metrics is not None:
        champion = ", ".join(f"{name}={value}" for name, value in record.champion_metrics.items())
        print(f"  champion v{record.champion_version} on the same rows: {champion}")
    print(f"  serving: {serving_runtimes(store.manifest(record.name, record.version))}")
    verdict = f"promoted to {args.alias}" if record.status == "promoted" else f"not promoted ({args.alias} unchanged)"
    print(f"  {verdict}: {record.reason}")
    return 0


def failure(record: RunRecord) -> str:
    """A failed run's reason and data problems, as one error message."""
    if not record.data_problems:
        return record.reason
    if len(record.data_problems) == 1:
        return f"{record.reason}: {record.data_problems[0]}"
    return record.reason + ":\n  - " + "\n  - ".join(record.data_problems)


def serving_runtimes(manifest: Manifest) -> str:
    """Which serving runtimes can serve a version, said plainly (a pipeline that does not convert to ONNX needs
    the scikit-learn runtime)."""
    onnx = manifest.runtimes.get("onnx")
    if onnx is not None and onnx.supported:
        return "ONNX Runtime (the default) or scikit-learn"
    why = onnx.detail if onnx is not None and onnx.detail else "no ONNX model was stored"
    return f"scikit-learn runtime only (ServingRuntime=sklearn): {why}"
