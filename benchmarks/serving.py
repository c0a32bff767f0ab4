"""The warm predict handler against its floors, measured side by side in one run (part of `python -m benchmarks`).

For each model (the sample logistic regression, a 100-tree random forest; and, ONNX runtime only, two 30-column
tables: 30 numeric columns, and 20 numeric + 10 categorical) and each serving runtime (onnx, sklearn), medians of
interleaved repetitions:

- warm single row: the whole handler (API Gateway event in, proxy response out, metrics flushed) vs the bare
  predict (ONNX: `session.run` on ready inputs; sklearn: labels and probabilities on a ready DataFrame, the
  pipeline's steps before its estimator run once, as the runtime runs them);
- 1000-row batch: the handler vs its floor: orjson decode of the same body + building the input arrays (no
  checks) + the bare predict + orjson encode of the reply.

Targets (ONNX runtime, issue 16): warm single row <= bare + 60 us; batch <= 1.3x floor. The sklearn runtime is reported
against the same floors, without a target (it is the fallback).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pandas as pd

from benchmarks.report import Row, interleaved, seconds, verdict
from sklambda.contract_derivation import encode_frame, frame_to_instances
from sklambda.manifest import Manifest
from sklambda.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
PENGUINS_CSV = REPO / "training" / "data" / "penguins.csv"
FOREST_CONFIG = Path(__file__).with_name("random_forest.toml")
# label -> model name (training/config.toml and benchmarks/random_forest.toml)
MODELS = {"sample LR": "penguins", "forest 100": "penguins-forest"}
# label -> model name: 30-column tables (synthesised by `wide_frame`), the default pipeline, ONNX runtime only
WIDE_MODELS = {"30 numeric LR": "wide-numeric", "20 numeric + 10 categorical LR": "wide-mixed"}
WIDE_TARGET = "label"
BATCH_ROWS = 1000
TARGET_SINGLE_US = 60.0
TARGET_BATCH = 1.3


class Context:
    function_name = "predict"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:predict"
    aws_request_id = "benchmark"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def wide_frame(name: str, rows: int = 2000) -> pd.DataFrame:
    """A 30-column table, the same at every call: `wide-numeric` has 30 numeric columns, `wide-mixed` 20 numeric
    and 10 categorical (5 categories each); the 3-class label depends on several columns of each kind."""
    generator = np.random.default_rng(11)
    numeric = 30 if name == "wide-numeric" else 20
    frame = pd.DataFrame(generator.normal(size=(rows, numeric)), columns=[f"x{index:02d}" for index in range(numeric)])
    score = frame.iloc[:, :5].sum(axis=1)
    for index in range(30 - numeric):
        codes = generator.integers(0, 5, size=rows)
        frame[f"c{index:02d}"] = np.array(list("abcde"), dtype=object)[codes]
        score += (codes == 0) * 0.8
    frame[WIDE_TARGET] = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(str)
    return frame


def train_models(store_uri: str, scratch: str) -> dict[str, str]:
    """The benchmark models, trained through the ordinary training flow (the command line)."""
    from training.cli import main

    with contextlib.redirect_stdout(sys.stderr):
        if main(["train", "--data", str(PENGUINS_CSV), "--store", store_uri]) != 0:
            raise SystemExit("training the sample model failed")
        forest = ["train", "--data", str(PENGUINS_CSV), "--store", store_uri, "--config", str(FOREST_CONFIG)]
        if main(forest) != 0:
            raise SystemExit("training the random forest failed")
        for name in WIDE_MODELS.values():
            data = Path(scratch) / f"{name}.csv"
            wide_frame(name).to_csv(data, index=False)
            command = ["train", "--data", str(data), "--store", store_uri, "--name", name, "--target", WIDE_TARGET]
            if main(command) != 0:
                raise SystemExit(f"training {name} failed")
    return MODELS | WIDE_MODELS


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
    source = wide_frame(manifest.name) if manifest.name in WIDE_MODELS.values() else pd.read_csv(PENGUINS_CSV)
    frame = source.dropna(subset=manifest.contract.names)
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
    with quiet_stdout():
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
        inputs = self.session.get_inputs()
        self.outputs = [node.name for node in self.session.get_outputs()]
        features = manifest.contract.features
        self.features: list[tuple[str, Any, Any, int]]
        if len(inputs) == len(features):  # one (rows, 1) input per feature (versions converted before grouping)
            self.features = [
                (node.name, itemgetter(feature.name), np.float32 if feature.kind == "numeric" else object, 1)
                for node, feature in zip(inputs, features, strict=True)
            ]
        else:  # one float input for the numeric features, one string input for the categorical ones
            kinds = {"tensor(float)": ("numeric", np.float32), "tensor(string)": ("categorical", object)}
            self.features = []
            for node in inputs:
                kind, dtype = kinds[node.type]
                names = [feature.name for feature in features if feature.kind == kind]
                self.features.append((node.name, itemgetter(*names), dtype, len(names)))

    def ready(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {
            name: np.array(list(map(get, rows)), dtype=dtype).reshape(-1, width)
            for name, get, dtype, width in self.features
        }

    def predict(self, feeds: Any) -> list[Any]:
        return list(self.session.run(self.outputs, feeds))

    def batch(self, body: str) -> bytes:
        rows = orjson.loads(body)["instances"]
        labels, probabilities = self.predict(self.ready(rows))
        reply = {"predictions": labels.tolist(), "probabilities": probabilities}
        return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)


class SklearnFloor:
    def __init__(self, artifact: bytes, manifest: Manifest) -> None:
        from sklambda.runtimes.sklearn import labels_and_probabilities, load_pipeline

        self.pipeline: Any = load_pipeline(artifact)
        self.contract = manifest.contract
        # Labels and probabilities the cheapest way there is: the pipeline's steps before its estimator run once.
        self.labels_and_probabilities = labels_and_probabilities

    def ready(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return encode_frame(pd.DataFrame(rows), self.contract)

    def predict(self, frame: Any) -> list[Any]:
        return list(self.labels_and_probabilities(self.pipeline, frame))

    def batch(self, body: str) -> bytes:
        rows = orjson.loads(body)["instances"]
        labels, probabilities = self.predict(self.ready(rows))
        reply = {"predictions": labels.tolist(), "probabilities": probabilities}
        return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)


# ------------------------------------------------------------------------------------------ measuring


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """The handler prints its metrics (EMF) to stdout, as in Lambda; here they go to /dev/null."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def warm(label: str, name: str, runtime: str, store_uri: str, repeats: dict[str, int]) -> list[Row]:
    store = ModelStore.from_uri(store_uri)
    alias = store.alias(name, "champion")
    if alias is None:
        raise SystemExit(f"{name} has no champion: training did not promote it (see the training output above)")
    manifest = store.manifest(name, alias.record.version)
    artifact = store.artifact(manifest, "model.onnx" if runtime == "onnx" else "model.joblib")
    floor = OnnxFloor(artifact, manifest) if runtime == "onnx" else SklearnFloor(artifact, manifest)
    app = load_handler(store_uri, name, runtime)
    context = Context()
    subject = f"{label}, {runtime}"
    target = runtime == "onnx"

    # Warm single row
    one = request_rows(manifest, 1)
    single_event = event_with(orjson.dumps({"instances": one}).decode())
    ready = floor.ready(one)
    with quiet_stdout():
        reply = app.lambda_handler(single_event, context)
        if reply["statusCode"] != 200:
            raise SystemExit(f"the handler refused the benchmark row: {reply['body']}")
        handler, bare = interleaved(
            lambda: app.lambda_handler(single_event, context), lambda: floor.predict(ready), repeats["single"]
        )
    gap = handler - bare
    rows = [
        Row(
            "warm",
            f"{subject}: single row, handler",
            seconds(handler),
            f"bare predict {seconds(bare)}",
            f"{'+' if gap >= 0 else '-'}{seconds(abs(gap))}",
            f"<= +{TARGET_SINGLE_US:.0f} us" if target else "",
            verdict(gap <= TARGET_SINGLE_US * 1e-6) if target else "",
        )
    ]

    # 1000-row batch
    body = orjson.dumps({"instances": request_rows(manifest, BATCH_ROWS)}).decode()
    batch_event = event_with(body)
    with quiet_stdout():
        assert app.lambda_handler(batch_event, context)["statusCode"] == 200
        handler, batch_floor = interleaved(
            lambda: app.lambda_handler(batch_event, context), lambda: floor.batch(body), repeats["batch"]
        )
    rows.append(
        Row(
            "warm",
            f"{subject}: {BATCH_ROWS} rows, handler",
            seconds(handler),
            f"floor {seconds(batch_floor)}",
            f"{handler / batch_floor:.2f}x",
            f"<= {TARGET_BATCH}x" if target else "",
            verdict(handler <= TARGET_BATCH * batch_floor) if target else "",
        )
    )
    return rows


def repeats(runtime: str, single: int, batch: int) -> dict[str, int]:
    # The sklearn runtime is ~100x slower per call: fewer repetitions give the same confidence.
    scale = 1 if runtime == "onnx" else 10
    return {"single": max(single // scale, 50), "batch": max(batch // scale, 10)}
