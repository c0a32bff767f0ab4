"""Schemathesis, driven by the API's own GET /openapi.json, against the local HTTP API (template.yaml's routes
through SAM CLI's API Gateway emulation, the real handlers in-process): it must find nothing: no 5xx, no
undocumented status, no reply off its schema, no schema-valid request refused, no schema-violating one accepted.

Twice: on the sample model, and on a wide one (33 columns, numbers and categories with quotes and non-ASCII text)
whose row limit comes from its body limit (its widest rows would not fit MAX_ROWS of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from devtools.local_api import LocalApi
from sklambda.api import RequestLimits, row_limit
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, REPO

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


# Small requests keep the generated bodies (and the run) small; the limits themselves are fuzzed too.
MAX_ROWS = 20
WIDE_MAX_BODY_BYTES = 20_000


def wide_table(path: Path) -> Path:
    """A table the repository does not ship: 24 numeric columns (one with gaps), 8 text categories, a binary
    target."""
    rng = np.random.default_rng(7)
    rows = 400
    columns: dict[str, object] = {f"measurement_{i:02d}_value": rng.normal(i, 1 + i, rows) for i in range(24)}
    categories = ["north-east", "south", "Ålesund", 'the "central" region', "O'Brien's"]
    columns |= {f"category_{i}_label": rng.choice(categories, rows) for i in range(8)}
    frame = pd.DataFrame(columns)
    frame.loc[rng.choice(rows, 20), "measurement_03_value"] = np.nan
    frame["churned"] = np.where(frame["measurement_01_value"] + rng.normal(0, 1, rows) > 1, "yes", "no")
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(params=["sample", "wide"])
def api(request: pytest.FixtureRequest, local_store_copy: Path, tmp_path: Path) -> Iterator[LocalApi]:
    overrides = {
        "MODEL_STORE_URI": str(local_store_copy),
        "DATA_URI": str(PENGUINS_CSV),
        "ALIAS_REFRESH_SECONDS": "0",
        "PREDICT_FUNCTION_NAME": "",
        "MAX_ROWS": str(MAX_ROWS),
        "MODEL_NAME": "penguins",
    }
    if request.param == "wide":
        from training.cli import main

        store = tmp_path / "wide-store"
        data = wide_table(tmp_path / "wide.csv")
        assert main(["train", "--data", str(data), "--target", "churned", "--name", "wide", "--store", str(store)]) == 0
        overrides |= {"MODEL_STORE_URI": str(store), "MODEL_NAME": "wide", "DATA_URI": str(data)}
        overrides["MAX_BODY_BYTES"] = str(WIDE_MAX_BODY_BYTES)
        # The body limit, not MAX_ROWS, is what bounds this model's rows
        contract = ModelStore.from_uri(str(store)).manifest("wide", 1).contract
        assert row_limit(contract, RequestLimits(WIDE_MAX_BODY_BYTES, 10, MAX_ROWS)) < MAX_ROWS
    with LocalApi(REPO / "template.yaml", port=0, env_overrides=overrides) as local_api:
        yield local_api


def test_schemathesis_finds_nothing(api: LocalApi, tmp_path: Path) -> None:
    # Given the served spec of the sample model (every check enabled, choices in schemathesis.toml)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{api.url}/openapi.json",
        "--checks",
        "all",
        # Methods the template does not route (TRACE /health, ...) never reach the function: API Gateway answers
        # them itself, 403 "Missing Authentication Token" (as SAM CLI's emulation does), not this check's 405.
        "--exclude-checks",
        "unsupported_method",
        "--max-examples",
        "200",
        "--seed",
        "4",
        "--workers",
        "1",
    ]
    # When schemathesis generates requests from it (valid and invalid) and checks every reply
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, SCHEMATHESIS_TELEMETRY="false"),
        cwd=tmp_path,  # schemathesis keeps a cache of crashes in its working directory
        check=False,
    )
    # Then it reports no failure
    summary = result.stdout[result.stdout.find("FAILURES") :] if "FAILURES" in result.stdout else result.stdout
    assert result.returncode == 0, summary[-6000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout


def widest(schema: dict[str, Any]) -> Any:
    """The value a property schema admits whose JSON text is longest (as most encoders write it: non-ASCII
    escaped)."""
    if "enum" in schema:
        return max(schema["enum"], key=lambda value: len(json.dumps(value)))
    return -2.2250738585072014e-308  # a finite number within ±1e18, 24 characters of JSON


def test_the_widest_request_the_schema_admits_is_accepted(api: LocalApi) -> None:
    # Given the served spec: its row limit, and each feature's widest value
    spec = requests.get(f"{api.url}/openapi.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    max_rows = schemas["Records"]["maxItems"]
    row = {name: widest(schema) for name, schema in schemas["Instance"]["properties"].items()}
    headers = {"Content-Type": "application/json"}
    # When a client sends as many of the widest rows as the schema allows (as Python's json writes them)
    body = json.dumps({"instances": [row] * max_rows, "params": {"probabilities": False}})
    accepted = requests.post(f"{api.url}/predict", data=body.encode(), headers=headers, timeout=60)
    # Then the server accepts it: the published limit is one it keeps
    assert accepted.status_code == 200, accepted.text[:500]
    assert len(accepted.json()["predictions"]) == max_rows
    # And one row more is refused, as the schema says (413), even when that body is small
    narrow = {
        name: schema["enum"][0] if "enum" in schema else 0 for name, schema in schemas["Instance"]["properties"].items()
    }
    refused = requests.post(
        f"{api.url}/predict", data=json.dumps({"instances": [narrow] * (max_rows + 1)}), headers=headers, timeout=60
    )
    assert refused.status_code == 413, refused.text[:500]
    assert refused.json()["request_id"]
