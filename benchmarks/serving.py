"""The predict handler against its floors, measured side by side in one run:

    python -m benchmarks.serving            (or: make bench)

For each model (the sample logistic regression, a 100-tree random forest) and each serving runtime (onnx,
sklearn) it prints medians of interleaved repetitions and their ratios:

- warm single row: the whole handler (API Gateway event in, proxy response out, metrics flushed) vs the bare
  predict (ONNX: `session.run` on ready inputs; sklearn: `predict` + `predict_proba` on a ready DataFrame);
- 1000-row batch: the handler vs its floor: orjson decode of the same body + building the input arrays (no
  checks) + the bare predict + orjson encode of the reply;
- init: a fresh process importing the handler (imports + store fetch + load + self-test) vs the floor: a fresh
  process that imports the runtime and loads the artifact (ONNX: numpy + onnxruntime + session creation).

Targets (issue 4, ONNX runtime): warm single row <= bare + 100 us; batch <= 1.5x floor; init <= 2.5x floor.
A benchmark, not a test: the machine's noise is in the numbers, the ratios are what to read.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PENGUINS_CSV = REPO / "training" / "data" / "penguins.csv"
FOREST_CONFIG = Path(__file__).with_name("random_forest.toml")
BATCH_ROWS = 1000
TARGET_SINGLE_US = 100.0
TARGET_BATCH = 1.5
TARGET_INIT = 2.5

# This checkout's code first, whatever the environment has installed.
sys.path[:0] = [str(REPO / "layers" / "shared"), str(REPO)]

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pandas as pd  # noqa: E402

from sklambda.contract import encode_frame, frame_to_instances  # noqa: E402
from sklambda.manifest import Manifest  # noqa: E402
from sklambda.store import ModelStore  # noqa: E402


@dataclass
class Row:
    model: str
    runtime: str
    measure: str
    handler: float  # seconds
    floor: float
    target: str
    verdict: str

    def show(self) -> str:
        if self.measure == "warm single row":
            gap = f"+{(self.handler - self.floor) * 1e6:.1f} us"
        else:
            gap = f"{self.handler / self.floor:.2f}x"
        return (
            f"{self.model:<16} {self.runtime:<8} {self.measure:<22} {_time(self.handler):>10} {_time(self.floor):>10}"
            f"  {gap:>10}  {self.target:<12} {self.verdict}"
        )


def _time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


class Context:
    function_name = "predict"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:predict"
    aws_request_id = "benchmark"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def train_models(store_uri: str) -> dict[str, str]:
    """The two benchmark models, trained through the ordinary training flow (the command line)."""
    from training.cli import main

    with contextlib.redirect_stdout(sys.stderr):
        if main(["train", "--data", str(PENGUINS_CSV), "--store", store_uri]) != 0:
            raise SystemExit("training the sample model failed")
        forest = ["train", "--data", str(PENGUINS_CSV), "--store", store_uri, "--config", str(FOREST_CONFIG)]
        if main(forest) != 0:
            raise SystemExit("training the random forest failed")
    return {"sample LR": "penguins", "forest 100": "penguins-forest"}


def event_with(body: str) -> dict[str, Any]:
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "Host": "example.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "stage": "v1"},
        "body": body,
        "isBase64Encoded": False,
    }


def request_rows(manifest: Manifest, count: int) -> list[dict[str, Any]]:
    """Rows of the sample data as a client sends them (complete rows: the floor does not handle nulls)."""
    frame = pd.read_csv(PENGUINS_CSV).dropna(subset=manifest.contract.names)
    sample = frame.sample(n=count, replace=True, random_state=7)
    return frame_to_instances(sample, manifest.contract.names)


def load_handler(store_uri: str, name: str, runtime: str) -> ModuleType:
    os.environ.update(
        MODEL_STORE_URI=store_uri,
        MODEL_NAME=name,
        SERVING_RUNTIME=runtime,
        ALIAS_REFRESH_SECONDS="3600",
        POWERTOOLS_SERVICE_NAME="benchmark",
        POWERTOOLS_METRICS_NAMESPACE="Benchmark",
    )
    sys.modules.pop("functions.predict.app", None)
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        return importlib.import_module("functions.predict.app")


# ------------------------------------------------------------------------------------------ floors


class OnnxFloor:
    """What any ONNX server must do: the bare session, and the plain way to build its inputs."""

    def __init__(self, artifact: bytes, manifest: Manifest) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(artifact, sess_options=options, providers=["CPUExecutionProvider"])
        inputs = [node.name for node in self.session.get_inputs()]
        self.outputs = [node.name for node in self.session.get_outputs()]
        self.features = [
            (input_name, itemgetter(feature.name), np.float32 if feature.kind == "numeric" else object)
            for input_name, feature in zip(inputs, manifest.contract.features, strict=True)
        ]

    def feeds(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {name: np.array(list(map(get, rows)), dtype=dtype).reshape(-1, 1) for name, get, dtype in self.features}

    def predict(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        return list(self.session.run(self.outputs, feeds))

    def batch(self, body: str) -> bytes:
        rows = orjson.loads(body)["instances"]
        labels, probabilities = self.predict(self.feeds(rows))
        reply = {"predictions": labels.tolist(), "probabilities": probabilities}
        return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)


class SklearnFloor:
    def __init__(self, artifact: bytes, manifest: Manifest) -> None:
        from sklambda.runtimes.sklearn import load_pipeline

        self.pipeline: Any = load_pipeline(artifact)
        self.contract = manifest.contract

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return encode_frame(pd.DataFrame(rows), self.contract)

    def predict(self, frame: pd.DataFrame) -> list[Any]:
        return [self.pipeline.predict(frame), self.pipeline.predict_proba(frame)]

    def batch(self, body: str) -> bytes:
        rows = orjson.loads(body)["instances"]
        labels, probabilities = self.predict(self.frame(rows))
        reply = {"predictions": labels.tolist(), "probabilities": probabilities}
        return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)


# ------------------------------------------------------------------------------------------ measuring


def interleaved(first: Callable[[], Any], second: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Medians of `first` and `second`, called alternately so drift and noise hit both alike."""
    a: list[float] = []
    b: list[float] = []
    clock = time.perf_counter
    for _ in range(repeats):
        start = clock()
        first()
        middle = clock()
        second()
        end = clock()
        a.append(middle - start)
        b.append(end - middle)
    return statistics.median(a), statistics.median(b)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """The handler prints its metrics (EMF) to stdout, as in Lambda; here they go to /dev/null."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def run_process(code: str, environment: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=environment, check=True, cwd=REPO)  # noqa: S603
    return time.perf_counter() - started


def init_floor_code(runtime: str, artifact_path: Path) -> str:
    if runtime == "onnx":
        return (
            "import numpy, onnxruntime as ort\n"
            "o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1\n"
            f"ort.InferenceSession(open({str(artifact_path)!r}, 'rb').read(), sess_options=o, "
            "providers=['CPUExecutionProvider'])\n"
        )
    return f"import numpy, pandas, joblib\njoblib.load({str(artifact_path)!r})\n"


def artifact_path(store_uri: str, manifest: Manifest, runtime: str) -> Path:
    file = "model.onnx" if runtime == "onnx" else "model.joblib"
    return Path(store_uri) / manifest.name / "versions" / f"{manifest.version:06d}" / file


def bench(label: str, name: str, runtime: str, store_uri: str, repeats: dict[str, int], skip_init: bool) -> list[Row]:
    store = ModelStore.from_uri(store_uri)
    alias = store.alias(name, "champion")
    if alias is None:
        raise SystemExit(f"{name} has no champion: training did not promote it (see the training output above)")
    manifest = store.manifest(name, alias.record.version)
    artifact = store.artifact(manifest, "model.onnx" if runtime == "onnx" else "model.joblib")
    floor: OnnxFloor | SklearnFloor = (
        OnnxFloor(artifact, manifest) if runtime == "onnx" else SklearnFloor(artifact, manifest)
    )
    app = load_handler(store_uri, name, runtime)
    context = Context()
    rows: list[Row] = []

    # Warm single row
    one = request_rows(manifest, 1)
    single_event = event_with(orjson.dumps({"instances": one}).decode())
    ready = floor.feeds(one) if isinstance(floor, OnnxFloor) else floor.frame(one)
    with quiet_stdout():
        reply = app.lambda_handler(single_event, context)
        if reply["statusCode"] != 200:
            raise SystemExit(f"the handler refused the benchmark row: {reply['body']}")
        handler, bare = interleaved(
            lambda: app.lambda_handler(single_event, context),
            lambda: floor.predict(ready),  # type: ignore[arg-type]
            repeats["single"],
        )
    single_ok = handler - bare <= TARGET_SINGLE_US * 1e-6
    rows.append(Row(label, runtime, "warm single row", handler, bare, "<= +100 us", _verdict(runtime, single_ok)))

    # 1000-row batch
    batch = request_rows(manifest, BATCH_ROWS)
    body = orjson.dumps({"instances": batch}).decode()
    batch_event = event_with(body)
    with quiet_stdout():
        assert app.lambda_handler(batch_event, context)["statusCode"] == 200
        handler, batch_floor = interleaved(
            lambda: app.lambda_handler(batch_event, context), lambda: floor.batch(body), repeats["batch"]
        )
    rows.append(
        Row(
            label,
            runtime,
            f"{BATCH_ROWS}-row batch",
            handler,
            batch_floor,
            "<= 1.5x",
            _verdict(runtime, handler <= TARGET_BATCH * batch_floor),
        )
    )

    # Init in a fresh process
    if not skip_init:
        environment = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO / "layers" / "shared"), str(REPO)]),
            MODEL_STORE_URI=store_uri,
            MODEL_NAME=name,
            SERVING_RUNTIME=runtime,
        )
        handler_code = (
            "import contextlib, os\n"
            "with contextlib.redirect_stdout(open(os.devnull, 'w')):\n"
            "    import functions.predict.app as app\n"
            "assert app.cache.loaded is not None, app.cache.problem\n"
        )
        floor_code = init_floor_code(runtime, artifact_path(store_uri, manifest, runtime))
        handler_times, floor_times = [], []
        for _ in range(repeats["init"]):
            handler_times.append(run_process(handler_code, environment))
            floor_times.append(run_process(floor_code, environment))
        handler, init_floor = statistics.median(handler_times), statistics.median(floor_times)
        rows.append(
            Row(
                label,
                runtime,
                "init (fresh process)",
                handler,
                init_floor,
                "<= 2.5x",
                _verdict(runtime, handler <= TARGET_INIT * init_floor),
            )
        )
    return rows


def _verdict(runtime: str, ok: bool) -> str:
    if runtime != "onnx":
        return "(no target)"
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a store that already holds both models (default: train into a temp dir)")
    parser.add_argument("--runtimes", default="onnx,sklearn", help="comma-separated (default: onnx,sklearn)")
    parser.add_argument("--single", type=int, default=3000, help="repetitions of the single-row pair")
    parser.add_argument("--batch", type=int, default=200, help="repetitions of the batch pair")
    parser.add_argument("--init", type=int, default=9, help="fresh processes per side for init")
    parser.add_argument("--skip-init", action="store_true", help="leave out the fresh-process measure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sklambda-bench-") as scratch:
        store_uri = args.store or str(Path(scratch) / "store")
        models = {"sample LR": "penguins", "forest 100": "penguins-forest"}
        if not args.store:
            models = train_models(store_uri)
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"python {sys.version.split()[0]}, store {store_uri}; medians of interleaved repetitions")
        print(f"load average before: {load} (other work on the machine inflates the handler more than the floor)")
        print(f"{'model':<16} {'runtime':<8} {'measure':<22} {'handler':>10} {'floor':>10}  {'vs floor':>10}  target")
        for label, name in models.items():
            for runtime in args.runtimes.split(","):
                # The sklearn runtime is ~100x slower per call: fewer repetitions give the same confidence.
                scale = 1 if runtime == "onnx" else 10
                repeats = {"single": max(args.single // scale, 50), "batch": max(args.batch // scale, 10)}
                repeats["init"] = args.init
                for row in bench(label, name, runtime, store_uri, repeats, args.skip_init):
                    print(row.show(), flush=True)
        print("load average after: " + ", ".join(f"{value:.2f}" for value in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
