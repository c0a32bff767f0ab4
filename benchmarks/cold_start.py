"""Predict init in a fresh process, from the bundle `sam build` made, against its floor (part of
`python -m benchmarks`).

Both sides run in `python -I -S -B` whose sys.path is what Lambda gives the function: its code, its layers (as
built: slimmed, with the .pyc the layers ship; our own code has none, as `sam build` ships it), then what the
Lambda runtime provides (boto3, botocore...); -B because /var/task and /opt are read-only.

- init: importing the handler, which fetches the champion from S3 (a local moto server: alias, manifest,
  artifact), verifies its checksum, loads it and runs its parity self-test;
- floor: the interpreter, the runtime's own imports and loading the same artifact from a local file (ONNX:
  numpy + onnxruntime + session creation; sklearn: numpy + pandas + joblib.load of the pipeline).
- AWS SDK: for scale, the interpreter + numpy + onnxruntime + botocore + an S3 client, what any function that
  reads its model from S3 with the AWS SDK pays on top of the ONNX floor (no target).

Target (ONNX runtime): init <= 2.5x floor.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bundles import Bundle, sys_path
from benchmarks.report import Row, ratio, seconds, verdict
from sklambda.store import ModelStore

TARGET_INIT = 2.5
BUNDLES = {"onnx": Bundle("PredictFunction"), "sklearn": Bundle("PredictFunction", (("ServingRuntime", "sklearn"),))}

_HANDLER = """
import contextlib, os
with contextlib.redirect_stdout(open(os.devnull, "w")):
    import app
assert app.cache.loaded is not None, app.cache.problem
"""
_FLOORS = {
    "onnx": """
import numpy, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
with open(ARTIFACT, "rb") as file:
    ort.InferenceSession(file.read(), sess_options=options, providers=["CPUExecutionProvider"])
""",
    "sklearn": """
import numpy, pandas, joblib
joblib.load(ARTIFACT)
""",
}
_SDK = """
import numpy, onnxruntime, botocore.session
botocore.session.get_session().create_client("s3")
"""


def _code(paths: list[Path], body: str, artifact: Path | None = None) -> str:
    prelude = f"import sys\nsys.path[:0] = {[str(path) for path in paths]!r}\n"
    if artifact is not None:
        prelude += f"ARTIFACT = {str(artifact)!r}\n"
    return prelude + body


def _run(code: str, environment: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], env=environment, check=True)  # noqa: S603
    return time.perf_counter() - started


def init(
    label: str,
    name: str,
    runtime: str,
    store_uri: str,
    s3_environment: dict[str, str],
    runtime_folder: Path,
    scratch: Path,
    repeats: int,
) -> list[Row]:
    store = ModelStore.from_uri(store_uri)
    alias = store.alias(name, "champion")
    assert alias is not None, f"{name} has no champion"
    manifest = store.manifest(name, alias.record.version)
    artifact = scratch / f"{name}-v{manifest.version}.{runtime}"
    artifact.write_bytes(store.artifact(manifest, "model.onnx" if runtime == "onnx" else "model.joblib"))
    bundle = BUNDLES[runtime]
    paths = [*sys_path(bundle), runtime_folder]
    environment = {
        "PATH": os.environ.get("PATH", ""),
        **s3_environment,
        "MODEL_STORE_URI": store_uri,
        "MODEL_NAME": name,
        "SERVING_RUNTIME": runtime,
        "POWERTOOLS_SERVICE_NAME": "benchmark",
        "POWERTOOLS_METRICS_NAMESPACE": "Benchmark",
    }
    handler_code = _code(paths, _HANDLER)
    floor_code = _code(paths[1:], _FLOORS[runtime], artifact)  # the layers only: no handler on the path
    handler_times, floor_times = [], []
    _run(handler_code, environment)  # warms the file cache, as a second cold start in Lambda would find it
    for _ in range(repeats):
        handler_times.append(_run(handler_code, environment))
        floor_times.append(_run(floor_code, environment))
    handler, floor = statistics.median(handler_times), statistics.median(floor_times)
    target = runtime == "onnx"
    what = "numpy + onnxruntime + session" if runtime == "onnx" else "numpy + pandas + joblib.load"
    return [
        Row(
            "init",
            f"{label}, {runtime}: fresh process, model from S3 ({bundle.label})",
            seconds(handler),
            f"floor ({what}) {seconds(floor)}",
            ratio(handler, floor),
            f"<= {TARGET_INIT}x" if target else "",
            verdict(handler <= TARGET_INIT * floor) if target else "",
        )
    ]


def sdk_share(s3_environment: dict[str, str], runtime_folder: Path, repeats: int) -> Row:
    """What the AWS SDK (botocore import + S3 client) adds to the ONNX floor, for scale."""
    paths = [*sys_path(BUNDLES["onnx"])[1:], runtime_folder]
    environment = {"PATH": os.environ.get("PATH", ""), **s3_environment}
    floor_code = _code(paths, "import numpy, onnxruntime\n")
    sdk_code = _code(paths, _SDK)
    sdk_times, floor_times = [], []
    for _ in range(repeats):
        sdk_times.append(_run(sdk_code, environment))
        floor_times.append(_run(floor_code, environment))
    sdk, floor = statistics.median(sdk_times), statistics.median(floor_times)
    return Row(
        "init",
        "for scale: numpy + onnxruntime + botocore + S3 client",
        seconds(sdk),
        f"numpy + onnxruntime {seconds(floor)}",
        f"+{seconds(sdk - floor)}",
    )
