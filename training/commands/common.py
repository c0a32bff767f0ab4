"""Options and helpers shared by the commands."""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import json
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import msgspec
from pydantic import BaseModel

from sklambda.errors import ConfigError, NotFound
from sklambda.records import AliasRecord
from sklambda.registry import ServingCheck, serving_check
from sklambda.runtimes import RUNTIMES
from sklambda.settings import CliSettings
from sklambda.store import ModelStore
from training.config import DEFAULT_CONFIG, load_config

NAME_HOW = "--name NAME or $MODEL_NAME"


@functools.cache
def cli_settings() -> CliSettings:
    """The command line's settings (its options' defaults), read from the environment once per command:
    `training.cli.main` starts each command afresh."""
    return CliSettings.from_env()


def add_store_options(parser: argparse.ArgumentParser) -> None:
    defaults = cli_settings()
    parser.add_argument(
        "--store",
        default=defaults.model_store_uri,
        help="model store: a local folder or s3://bucket/prefix (default: $MODEL_STORE_URI, else ./model-store)",
    )
    parser.add_argument(
        "--alias", default=defaults.model_alias, help="alias to read or move (default: $MODEL_ALIAS or champion)"
    )


def open_store(args: argparse.Namespace) -> ModelStore:
    # $MANIFEST_SIGNING_KEY (a KMS key the caller may use): sign what this command publishes, verify what it loads.
    settings = msgspec.structs.replace(cli_settings(), model_store_uri=args.store)
    return ModelStore.from_settings(settings)


def who(command: str) -> str:
    """Recorded as the author of a change in the store (alias history, statuses)."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()} ({command})"


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        default=cli_settings().model_name,
        help="model name (default: $MODEL_NAME, else [model].name of the training configuration if the store "
        "holds it, else the only model in the store)",
    )


def add_registry_options(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """--store, --alias and --name for the registry commands, and --json for those that read."""
    add_store_options(parser)
    add_model_option(parser)
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def open_model(args: argparse.Namespace) -> tuple[ModelStore, str]:
    """The store and the model name the command acts on (see `model_name`)."""
    store = open_store(args)
    return store, model_name(store, args.name, getattr(args, "config", None) or cli_settings().training_config)


def model_name(store: ModelStore, given: str | None, config: str | Path | None) -> str:
    """The model a command acts on, the same way for every command: `given` (--name, whose default is
    $MODEL_NAME), else the training configuration's [model].name when the store holds it (or holds no model
    yet), else the only model in the store. Several models and none of these: an error that says how to name one."""
    if given:
        return given
    configured = None
    with contextlib.suppress(ConfigError):  # a broken configuration must not stop the registry commands
        configured = load_config(config).model.name
    models = store.models()
    if configured is not None and (configured in models or not models):
        return configured
    if len(models) == 1:
        return models[0]
    if not models:
        raise NotFound(f"the store at {store.uri} holds no model yet")
    raise ConfigError(f"the store at {store.uri} holds several models ({', '.join(models)}): name one with {NAME_HOW}")


def add_serving_check_options(parser: argparse.ArgumentParser) -> None:
    settings = cli_settings()
    parser.add_argument(
        "--serving-runtime",
        choices=RUNTIMES,
        default=settings.serving_runtime,
        help="runtime that must load and self-test the version first (default: $SERVING_RUNTIME or onnx)",
    )
    parser.add_argument(
        "--predict-function",
        default=settings.predict_function_name,
        help=(
            "deployed predict function to run the self-test instead (default: $PREDICT_FUNCTION_NAME; "
            "unset: this process runs it)"
        ),
    )
    parser.add_argument("--reason", required=True, help="why: recorded in the alias history")


def serving_check_for(args: argparse.Namespace, store: ModelStore) -> ServingCheck:
    return serving_check(store, runtime=args.serving_runtime, predict_function_name=args.predict_function)


def print_json(record: BaseModel | AliasRecord) -> None:
    if isinstance(record, BaseModel):
        print(record.model_dump_json(indent=2))
    else:  # a dataclass (sklambda.records), written as pydantic writes a model
        print(json.dumps(asdict(record), indent=2, ensure_ascii=False))


def print_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, max_widths: Mapping[str, int] | None = None
) -> None:
    """Columns left-aligned and padded to their widest cell; numbers right-aligned; a column named in
    `max_widths` is cut to that many characters (ending in …), so that one long reason cannot make every row
    wrap. The tables of `versions` and `runs` (newest first) both print through this."""
    limits = max_widths or {}
    cells = [[str(cell) for cell in header], *[["-" if c is None else str(c) for c in row] for row in rows]]
    for column, name in enumerate(header):
        limit = limits.get(name)
        if limit is not None:
            for row in cells[1:]:
                row[column] = _cut(row[column], limit)
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    numeric = [all(_is_number(row[column]) for row in cells[1:]) and len(cells) > 1 for column in range(len(header))]
    for row in cells:
        line = "  ".join(
            cell.rjust(width) if is_number else cell.ljust(width)
            for cell, width, is_number in zip(row, widths, numeric, strict=True)
        )
        print(line.rstrip())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "-"
    return True


def short_time(iso: str) -> str:
    """2026-01-02T03:04:05.678Z → 2026-01-02 03:04:05Z"""
    return iso.replace("T", " ")[:19] + "Z"


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=cli_settings().data_uri,
        help="CSV or Parquet: a file, a folder, or an s3://bucket/prefix (all files under it). Default: $DATA_URI.",
    )


def add_config_option(parser: argparse.ArgumentParser, what: str = "training configuration file") -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=cli_settings().training_config or DEFAULT_CONFIG,
        help=f"{what} (default: $TRAINING_CONFIG or training/config.toml)",
    )


def add_serving_runtime_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serving-runtime",
        choices=RUNTIMES,
        default=cli_settings().serving_runtime,
        help="runtime that must load and self-test the new version before it is promoted "
        "(default: $SERVING_RUNTIME or onnx)",
    )
