"""`python -m training predict --data rows.csv`: what the prediction API would answer for these rows.

The rows go through the serving code itself (the served version loaded, checksum and self-test first, each row
validated and encoded by the version's request validator, then the serving runtime), not through the trained
pipeline: a missing category becomes "__missing__" and numbers take the runtime's type exactly as in a
request, so a user can compare like with like. Nothing here is training code: only the table reader is shared.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

import orjson

from sklambda.api import predict_reply
from sklambda.contract import ContractViolation
from sklambda.contract_derivation import frame_to_instances
from sklambda.errors import SklambdaError
from sklambda.http import error_reply
from sklambda.runtimes import RUNTIMES
from sklambda.serving import LoadedModel, load_version
from sklambda.settings import ServingSettings
from training.commands.common import add_data_option, add_registry_options, open_model
from training.dataset import load_table

REQUEST_ID = "local-predict"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "predict",
        help="answer rows from a CSV/Parquet file exactly as the prediction API would (same validation and runtime)",
        description=(
            "Predict the rows of a table with the version an alias names (or --version), through the serving "
            "code: the version is loaded and self-tested by the serving runtime, each row is validated against "
            'its data contract and encoded as a request is (a missing category becomes "__missing__"), and the '
            "reply is printed as POST /predict would answer (JSON), or as the rows with their predictions (--csv). "
            "A column named like the model's target is left out, so a labelled table can be compared directly. "
            "Exit code 0: answered; 1: the rows break the contract (the API's 422 reply is printed)."
        ),
    )
    add_data_option(parser)
    add_registry_options(parser, json_output=False)
    settings = ServingSettings.from_env()
    parser.add_argument("--version", type=int, help="version to use (default: the one the alias points at)")
    parser.add_argument(
        "--serving-runtime",
        choices=RUNTIMES,
        default=settings.serving_runtime,
        help="serving runtime to answer with (default: $SERVING_RUNTIME or onnx, as the predict function)",
    )
    parser.add_argument(
        "--csv", action="store_true", help="print the rows with prediction (and probability) columns as CSV"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.data:
        raise SklambdaError("no rows: pass --data PATH_OR_S3_URI (CSV or Parquet) or set DATA_URI")
    store, name = open_model(args)
    if args.version is not None:
        version = args.version
    else:
        state = store.alias(name, args.alias)
        if state is None:
            raise SklambdaError(f"model {name!r} has no {args.alias!r} alias yet: train one, or pass --version")
        version = state.record.version
    model = load_version(
        store,
        store.served_manifest(name, version),
        args.serving_runtime,
        allow_unknown_fields=ServingSettings.from_env().allow_unknown_fields,
    )
    frame = load_table(args.data).frame
    target = model.manifest.target
    if target in frame.columns and target not in model.manifest.contract.names:
        frame = frame.drop(columns=[target])
        print(f"left out the target column {target!r} (a request has none)", file=sys.stderr)
    instances = frame_to_instances(frame, [str(column) for column in frame.columns])
    try:
        reply = answer(model, instances)
    except ContractViolation as error:
        print(error_reply(error, REQUEST_ID).text())
        return 1
    if args.csv:
        write_csv(frame, orjson.loads(reply))
    else:
        print(reply)
    return 0


def answer(model: LoadedModel, instances: list[dict[str, Any]]) -> str:
    """The body POST /predict answers for `{"instances": instances}` with this loaded model (raises
    ContractViolation, the API's 422, for rows that break the contract)."""
    prediction = model.predict(model.validator.records(instances))
    return predict_reply(model, prediction, REQUEST_ID, probabilities=True)


def write_csv(frame: Any, reply: dict[str, Any]) -> None:
    """The rows as given, then `prediction` and one `probability_<class>` column per class."""
    classes = reply.get("classes") or []
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([*map(str, frame.columns), "prediction", *(f"probability_{label}" for label in classes)])
    probabilities = reply.get("probabilities") or [[] for _ in reply["predictions"]]
    for row, predicted, scores in zip(frame.itertuples(index=False), reply["predictions"], probabilities, strict=True):
        writer.writerow(["" if value is None or value != value else value for value in row] + [predicted, *scores])
