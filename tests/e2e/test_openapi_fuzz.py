"""Schemathesis, driven by the API's own GET /openapi.json, against the local HTTP API (template.yaml's routes
through SAM CLI's API Gateway emulation, the real handlers in-process): it must find nothing: no 5xx, no
undocumented status, no reply off its schema, no schema-valid request refused, no schema-violating one accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_api import LocalApi
from tests.conftest import PENGUINS_CSV, REPO

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
def api(local_store_copy: Path) -> Iterator[LocalApi]:
    overrides = {
        "MODEL_STORE_URI": str(local_store_copy),
        "DATA_URI": str(PENGUINS_CSV),
        "ALIAS_REFRESH_SECONDS": "0",
        "PREDICT_FUNCTION_NAME": "",
        # Small requests keep the generated bodies (and the run) small; the limit itself is fuzzed too.
        "MAX_ROWS": "20",
    }
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
