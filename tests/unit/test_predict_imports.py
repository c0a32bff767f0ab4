"""What the predict function imports, in a fresh interpreter as Lambda starts it: ONNX Runtime and numpy, never
scikit-learn, scipy or pandas (the onnx runtime's layer does not ship them), and nothing that only tracing needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

PROBE = """
import contextlib, io, json, sys
with contextlib.redirect_stdout(io.StringIO()):
    import functions.predict.app as app
    event = json.load(open("events/predict.json"))
    class Context:
        aws_request_id = "probe"
        function_name = "predict"
    response = app.lambda_handler(event, Context())
submodules = {name for name in sys.modules if name.startswith(("aws_lambda_powertools.", "sklambda."))}
top_level = sorted({name.split(".")[0] for name in sys.modules} | submodules)
print(json.dumps({"status": response["statusCode"], "modules": top_level}))
"""


def loaded_modules(store: Path, runtime: str) -> tuple[int, set[str]]:
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO / "layers" / "shared"), str(REPO)]),
        MODEL_STORE_URI=str(store),
        MODEL_NAME="penguins",
        SERVING_RUNTIME=runtime,
        POWERTOOLS_METRICS_NAMESPACE="SklambdaTests",  # as template.yaml's Globals set it
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["status"], set(report["modules"])


def test_the_onnx_runtime_never_imports_scikit_learn(trained_store: Path) -> None:
    # Given a fresh interpreter with the onnx runtime (the default)
    # When the predict function starts and answers a request
    status, modules = loaded_modules(trained_store, "onnx")
    # Then it answered through ONNX Runtime, without scikit-learn, scipy, pandas or joblib ever being imported
    assert status == 200
    assert "onnxruntime" in modules
    assert modules & {"sklearn", "scipy", "pandas", "joblib", "skl2onnx", "onnx"} == set()
    # And without tracing (aws_xray_sdk), asyncio (Powertools' event handler), or boto3 for a local store
    # (Powertools imports the bare botocore package for its user-agent hook: 0.5 ms, no client)
    assert modules & {"aws_xray_sdk", "asyncio", "boto3"} == set()
    assert "aws_lambda_powertools.logging" in modules
    assert not any(name.startswith("aws_lambda_powertools.event_handler") for name in modules)


def test_the_first_prediction_builds_no_document_it_does_not_serve(trained_store: Path) -> None:
    # Given a fresh interpreter (a cold start) with a local store
    # When the predict function starts and answers its first POST /predict
    status, modules = loaded_modules(trained_store, "onnx")
    # Then the OpenAPI document was neither built nor imported (GET /openapi.json builds it when first asked:
    # tests/unit/test_openapi.py), and the AWS module stayed out of a process that never touches AWS
    assert status == 200
    assert "sklambda.serving" in modules
    assert modules & {"sklambda.openapi", "sklambda.aws", "sklambda.signing"} == set()
    # And pydantic was never imported: settings, the alias and the manifest were read through msgspec
    # (sklambda.records; its import and record classes were ~250 ms of CPU of a cold start)
    assert modules & {"pydantic", "pydantic_core", "sklambda.manifest"} == set()


def test_the_sklearn_runtime_serves_without_onnxruntime(trained_store: Path) -> None:
    # Given the sklearn fallback runtime (its layer has no onnxruntime)
    status, modules = loaded_modules(trained_store, "sklearn")
    # Then it answers with scikit-learn and never imports ONNX Runtime
    assert status == 200
    assert "sklearn" in modules
    assert "onnxruntime" not in modules
