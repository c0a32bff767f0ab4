"""`make serve`: the local API (devtools/local_api.py) serving one model of a store, with a banner that shows how
to call that model.

Which model: `--name`, else $MODEL_NAME, else the only model in the store (several and none named: it says which
there are and how to choose). The banner's curl sends one of that version's own golden rows (held-out rows as a
client sends them, stored with the version), so it works for any model, not only the sample. A local
`POST /retrain` trains on `--data`, else $DATA_URI; without either it trains the sample's own data only for the
sample model.

    MODEL_NAME=wine MODEL_STORE_URI=./store DATA_URI=wine.csv python -m devtools.serve
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools import local_api
from sklambda.errors import SklambdaError
from sklambda.settings import StoreSettings
from sklambda.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
SAMPLE_MODEL = "penguins"
SAMPLE_DATA = REPO / "training" / "data" / "penguins.csv"


class ServeSettings(StoreSettings, frozen=True, kw_only=True):
    # Training data of the local POST /retrain.
    data_uri: str | None = None


class ServeError(Exception):
    """Nothing to serve as asked; the message says what to do."""


@dataclass(frozen=True)
class Plan:
    store_uri: str
    name: str
    version: int
    example: dict[str, object]
    data_uri: str | None


def plan(store_uri: str, name: str | None, data_uri: str | None, alias: str) -> Plan:
    """What `make serve` will serve, decided before any server starts."""
    store = ModelStore.from_uri(store_uri)
    if not name:
        models = store.models()
        if not models:
            raise ServeError(f"the store {store_uri} holds no model yet: train one first (make train)")
        if len(models) > 1:
            choices = ", ".join(models)
            raise ServeError(
                f"the store {store_uri} holds several models ({choices}): choose one with MODEL_NAME, "
                f"e.g. MODEL_NAME={models[0]} make serve"
            )
        (name,) = models
    state = store.alias(name, alias)
    if state is None:
        known = ", ".join(store.models()) or "none"
        raise ServeError(
            f"model {name!r} has no {alias!r} version in {store_uri} (models there: {known}): train and promote one"
        )
    manifest = store.manifest(name, state.record.version)
    example = manifest.golden.instances[0] if manifest.golden.instances else {}
    if not data_uri and name == SAMPLE_MODEL:
        data_uri = str(SAMPLE_DATA)
    return Plan(store_uri, name, manifest.version, example, data_uri)


def banner(plan: Plan, url: str) -> str:
    body = shlex.quote(json.dumps({"instances": [plan.example]}))
    retrain = (
        f"POST {url}/retrain trains {plan.name} on {plan.data_uri}"
        if plan.data_uri
        else f"POST {url}/retrain needs training data for {plan.name}: set DATA_URI (a CSV/Parquet file or folder)"
    )
    return "\n".join(
        [
            f"Serving {plan.name} v{plan.version} from {plan.store_uri} at {url}. In another terminal:",
            "",
            f'  curl -s -X POST {url}/predict -H "Content-Type: application/json" -d {body}',
            "",
            f"GET {url}/model describes it, GET {url}/openapi.json is its schema; {retrain}.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = ServeSettings.from_env()
    parser = argparse.ArgumentParser(prog="python -m devtools.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=settings.model_store_uri, help="model store (default: $MODEL_STORE_URI)")
    parser.add_argument("--name", default=settings.model_name, help="model to serve (default: $MODEL_NAME)")
    parser.add_argument("--data", default=settings.data_uri, help="training data of POST /retrain (default: $DATA_URI)")
    parser.add_argument("--host", default=local_api.DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=local_api.DEFAULT_PORT, help="0: a free port")
    parser.add_argument("--lambda-port", type=int, default=local_api.DEFAULT_LAMBDA_PORT, help="-1: none")
    parser.add_argument("--dry-run", action="store_true", help="print the banner and exit without serving")
    arguments = parser.parse_args(argv)
    try:
        chosen = plan(arguments.store, arguments.name, arguments.data, settings.model_alias)
    except (ServeError, SklambdaError) as error:
        print(f"make serve: {error}", file=sys.stderr)
        return 2
    if arguments.dry_run:
        print(banner(chosen, f"http://{arguments.host}:{arguments.port}"))
        return 0
    # No signing key on a laptop (the template's key alias exists only in a deployed stack).
    environment = {
        "MODEL_STORE_URI": chosen.store_uri,
        "MODEL_NAME": chosen.name,
        "PREDICT_FUNCTION_NAME": "",
        "MANIFEST_SIGNING_KEY": "",
    }
    # No Firehose on a laptop: capture (and POST /feedback) to a local folder (docs/monitoring.md).
    environment.update(CAPTURE_STREAM_NAME="", CAPTURE_LOCAL_FOLDER="capture", CAPTURE_URI="capture")
    if chosen.data_uri:
        environment["DATA_URI"] = chosen.data_uri
    api = local_api.LocalApi(
        REPO / "template.yaml",
        host=arguments.host,
        port=arguments.port,
        lambda_port=None if arguments.lambda_port < 0 else arguments.lambda_port,
        env_overrides=environment,
    )
    return local_api.serve_until_stopped(api, lambda served: banner(chosen, served.url))


if __name__ == "__main__":
    sys.exit(main())
