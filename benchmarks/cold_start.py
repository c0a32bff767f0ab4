"""Predict cold start in a fresh process, from the bundle `sam build` made, against its floor (part of
`python -m benchmarks`).

Both sides run in `python -I -S -B` whose sys.path is what Lambda gives the function: its code, its layers (as
built: slimmed, with the .pyc the layers ship, the SharedCodeLayer's own included: layers/shared/Makefile; the
handler module itself has none, as `sam build` ships a function), then what the Lambda runtime provides (boto3,
botocore...); -B because /var/task and /opt are read-only.

- cold start: importing the handler (init: it fetches the champion, verifies its checksums, loads it and runs its
  parity self-test) and answering one single-row POST /predict;
- floor, model in S3 (a local moto server): the interpreter, numpy + onnxruntime, ONE plain HTTP GET of the
  model's bytes from the same server, the session, one predict of the same row (issue 16's floor);
- floor, model in a local folder: the same without the GET (the bytes read from a file);
- the sklearn runtime (no target): its floor is numpy + pandas + joblib.load of the pipeline from a file;
- AWS SDK: for scale, the interpreter + numpy + onnxruntime + botocore + an S3 client, what a function that
  reads its model with an SDK client pays on top of the ONNX floor (no target; predict no longer does).

Target (ONNX runtime, issue 16): cold start <= 2.0x its floor, model in S3 and model in a local folder.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import serving
from benchmarks.bundles import Bundle, sys_path
from benchmarks.report import Row, ratio, seconds, verdict
from sklambda.aws import s3_client, split_s3_uri
from sklambda.locations import open_object_store
from sklambda.objects import LocalObjects
from sklambda.runtimes import ARTIFACTS
from sklambda.store import ModelStore

TARGET_INIT = 2.0
BUNDLES = {"onnx": Bundle("PredictFunction"), "sklearn": Bundle("PredictFunction", (("ServingRuntime", "sklearn"),))}

_HANDLER = """
import contextlib, json, os
with contextlib.redirect_stdout(open(os.devnull, "w")):
    import app
    class Context:
        aws_request_id = "benchmark"
        function_name = "predict"
        def get_remaining_time_in_millis(self):
            return 10_000
    reply = app.lambda_handler(json.loads(EVENT), Context())
assert reply["statusCode"] == 200, reply["body"]
"""
_ONNX_FLOOR = """
import numpy, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
session = ort.InferenceSession(READ(), sess_options=options, providers=["CPUExecutionProvider"])
session.run(None, {name: numpy.array(values, dtype=dtype) for name, (values, dtype) in FEEDS.items()})
"""
_READS = {
    "s3": "import urllib.request\nREAD = lambda: urllib.request.urlopen(URL).read()\n",
    "local": "READ = lambda: open(ARTIFACT, 'rb').read()\n",
}
_SKLEARN_FLOOR = """
import numpy, pandas, joblib
joblib.load(ARTIFACT)
"""
_SDK = """
import numpy, onnxruntime, botocore.session
botocore.session.get_session().create_client("s3")
"""


def _code(paths: list[Path], body: str, **values: object) -> str:
    prelude = f"import sys\nsys.path[:0] = {[str(path) for path in paths]!r}\n"
    prelude += "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return prelude + body


def _run(code: str, environment: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], env=environment, check=True)  # noqa: S603
    return time.perf_counter() - started


def _local_copy(store_uri: str, name: str, folder: Path) -> str:
    """The model's keys copied from the S3 store into a local folder store."""
    source, target = open_object_store(store_uri), LocalObjects(folder)
    for key in source.list(f"{name}/"):
        target.put(key, source.get(key).data)
    return str(folder)


def _compare(commands: dict[str, tuple[str, dict[str, str]]], repeats: int) -> dict[str, float]:
    """Medians, the commands run in turn each round (so that noise hits them alike)."""
    for code, environment in commands.values():
        _run(code, environment)  # warms the file cache, as a second cold start in Lambda would find it
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeats):
        for label, (code, environment) in commands.items():
            times[label].append(_run(code, environment))
    return {label: statistics.median(values) for label, values in times.items()}


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
    file = ARTIFACTS[runtime]  # type: ignore[index]
    artifact = scratch / f"{name}-v{manifest.version}.{runtime}"
    artifact.write_bytes(store.artifact(manifest, file))
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
    one_row = serving.request_rows(manifest, 1)
    event = json.dumps(serving.event_with(json.dumps({"instances": one_row})))
    handler = _code(paths, _HANDLER, EVENT=event)
    if runtime == "sklearn":
        floor = _code(paths[1:], _SKLEARN_FLOOR, ARTIFACT=str(artifact))  # the layers only: no handler on the path
        times = _compare({"handler": (handler, environment), "floor": (floor, environment)}, repeats)
        return [
            Row(
                "init",
                f"{label}, sklearn: cold start, model in S3 ({bundle.label})",
                seconds(times["handler"]),
                f"floor (numpy + pandas + joblib.load) {seconds(times['floor'])}",
                ratio(times["handler"], times["floor"]),
            )
        ]
    ready = serving.OnnxFloor(artifact.read_bytes(), manifest).ready(one_row)
    feeds = {input_name: (array.tolist(), str(array.dtype)) for input_name, array in ready.items()}
    bucket, prefix = split_s3_uri(store_uri)
    key = f"{prefix.strip('/')}/{name}/versions/{manifest.version:06d}/{file}".lstrip("/")
    # A presigned URL: the GET itself is plain (no signing in the floor), and the server checks it as S3 would.
    url = s3_client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
    local_environment = environment | {"MODEL_STORE_URI": _local_copy(store_uri, name, scratch / f"local-{name}")}
    commands = {
        "s3": (handler, environment),
        "s3 floor": (_code(paths[1:], _READS["s3"] + _ONNX_FLOOR, URL=url, FEEDS=feeds), environment),
        "local": (handler, local_environment),
        "local floor": (_code(paths[1:], _READS["local"] + _ONNX_FLOOR, ARTIFACT=str(artifact), FEEDS=feeds), {}),
    }
    times = _compare(commands, repeats)
    what = "numpy + onnxruntime + {} + session + 1 predict"
    return [
        Row(
            "init",
            f"{label}, onnx: cold start (init + 1st request), model in {where} ({bundle.label})",
            seconds(times[where]),
            f"floor ({what.format(read)}) {seconds(times[where + ' floor'])}",
            ratio(times[where], times[where + " floor"]),
            f"<= {TARGET_INIT}x",
            verdict(times[where] <= TARGET_INIT * times[where + " floor"]),
        )
        for where, read in (("s3", "plain GET"), ("local", "file read"))
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
