"""The second example pipeline trains, serves and retrains from configuration alone, through the real handlers
in-process under moto: training/examples/forest_ratios.toml (its own pipeline: a custom ratio transformer that
lives in layers/shared/sklambda_examples with its skl2onnx converter, then a random forest) named by
TRAINING_CONFIG, nothing else changed. The retrain gate asks the predict function (ONNX Runtime) to load and
self-test each candidate, as it does in the cloud."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
import pytest

from sklambda import aws
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event

pytestmark = pytest.mark.integration

NAME = "penguins-ratios"
RETRAIN_FUNCTION = "sklambda-retrain"
PREDICT_FUNCTION = "sklambda-predict"


@dataclass
class RetrainContext(LambdaContext):
    function_name: str = RETRAIN_FUNCTION
    memory_limit_in_mb: int = 3008

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Cloud:
    bucket: str
    retrain: ModuleType
    predict: ModuleType
    # Asynchronous self-invocations of the retrain function (POST /retrain), delivered by `deliver`.
    queued: list[dict[str, Any]] = field(default_factory=list)
    # Synchronous invocations of the predict function (the gate's serving self-test).
    self_tests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def store(self) -> ModelStore:
        return ModelStore.from_uri(f"s3://{self.bucket}/models")

    def champion(self) -> int | None:
        state = self.store.alias(NAME, "champion")
        return state.record.version if state else None

    def answer(self, predict: ModuleType | None = None) -> dict[str, Any]:
        response = (predict or self.predict).lambda_handler(load_event("predict"), LambdaContext())
        assert response["statusCode"] == 200, response["body"]
        body: dict[str, Any] = json.loads(response["body"])
        return body


@pytest.fixture
def cloud(s3_bucket: str, fresh_handler: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch) -> Cloud:
    boto3.client("s3").upload_file(str(PENGUINS_CSV), s3_bucket, "data/penguins.csv")
    environment = {
        "MODEL_STORE_URI": f"s3://{s3_bucket}/models",
        "MODEL_NAME": NAME,
        "DATA_URI": f"s3://{s3_bucket}/data/",
        "ALIAS_REFRESH_SECONDS": "0",
        # The only change from the sample model: which configuration the retrain function reads (as it is
        # written from the checkout's root; found beside the training package wherever that is installed)
        "TRAINING_CONFIG": "training/examples/forest_ratios.toml",
        "PREDICT_FUNCTION_NAME": PREDICT_FUNCTION,
    }
    predict = fresh_handler("functions.predict.app", **environment)
    retrain = fresh_handler("functions.retrain.app", **environment)
    # No code version (a checkout may be clean or dirty): every run trains, even on the champion's own data and
    # configuration. The "nothing new" tests set one.
    monkeypatch.setattr(retrain, "CODE_VERSION", None)
    cloud = Cloud(bucket=s3_bucket, retrain=retrain, predict=predict)

    # moto runs no Lambda code: the Lambda service's part is played here.
    def invoke_json(function_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert function_name == PREDICT_FUNCTION
        cloud.self_tests.append(payload)
        result: dict[str, Any] = predict.lambda_handler(payload, LambdaContext())
        return result

    def invoke_event(function_name: str, payload: dict[str, Any]) -> None:
        assert function_name == RETRAIN_FUNCTION
        cloud.queued.append(payload)

    monkeypatch.setattr(aws, "invoke_json", invoke_json)
    monkeypatch.setattr(aws, "invoke_event", invoke_event)
    return cloud


def test_the_example_pipeline_trains_serves_and_retrains_from_configuration_alone(
    cloud: Cloud, fresh_handler: Callable[..., ModuleType], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an empty store and the sample data under DATA_URI
    # When the schedule fires
    run = cloud.retrain.lambda_handler(load_event("retrain-schedule"), RetrainContext())

    # Then v1 of the example model passes every gate check, the deployed serving runtime's self-test included
    assert (run["status"], run["name"], run["version"]) == ("promoted", NAME, 1), run
    checks = {check["name"]: check["passed"] for check in run["gate"]}
    assert all(checks.values()), run["gate"]
    assert checks["serving self-test"]
    assert sum(name.startswith("case: ") for name in checks) == 3
    assert cloud.self_tests == [{"self_test": {"name": NAME, "version": 1}}]
    # And it is the configured pipeline: the custom step, no standard preprocessing, converted to ONNX
    manifest = cloud.store.manifest(NAME, 1)
    assert manifest.training["pipeline"]["factory"] == "sklambda_examples.pipelines:forest_with_ratios"
    assert "features/numeric/ratios: RatioFeatures" in manifest.training["pipeline"]["steps"]
    assert manifest.runtimes["onnx"].supported
    assert manifest.estimator.endswith("RandomForestClassifier")
    # And the retrain function's logger (Powertools: JSON lines in CloudWatch) told each step as it started and ended
    messages = [record.getMessage() for record in caplog.records if record.name == cloud.retrain.logger.service]
    for step in ("load", "validate", "prepare", "fit", "evaluate", "convert", "gate", "publish", "self-test"):
        assert f"{step}: started" in " ".join(messages), step
        assert any(message.startswith(f"{step}: done in ") for message in messages), step

    # When a client asks for predictions (the predict function's default runtime: ONNX)
    served = cloud.answer()

    # Then v1 answers
    assert served["model"] == {"name": NAME, "version": 1}
    assert served["predictions"] == ["Gentoo", "Adelie"]

    # And the scikit-learn runtime (ServingRuntime=sklearn) serves the same version with the same answers: it
    # unpickles the custom step from the shared layer
    sklearn_predict = fresh_handler("functions.predict.app", SERVING_RUNTIME="sklearn")
    by_sklearn = cloud.answer(sklearn_predict)
    assert by_sklearn["model"] == served["model"]
    assert by_sklearn["predictions"] == served["predictions"]
    for ours, theirs in zip(by_sklearn["probabilities"], served["probabilities"], strict=True):
        assert ours == pytest.approx(theirs, abs=1e-4)

    # When new data arrives and POST /retrain is called
    response = cloud.retrain.lambda_handler(load_event("retrain-api"), RetrainContext())
    assert response["statusCode"] == 202, response["body"]
    (queued,) = cloud.queued
    run = cloud.retrain.lambda_handler(queued, RetrainContext())

    # Then the challenger is compared with the champion on the same held-out rows, self-tested by the predict
    # function, promoted, and served
    assert (run["status"], run["version"], run["champion_version"]) == ("promoted", 2, 1), run
    assert run["metrics"]["accuracy"] == run["champion_metrics"]["accuracy"]
    assert cloud.self_tests[-1] == {"self_test": {"name": NAME, "version": 2}}
    assert cloud.champion() == 2
    assert cloud.answer()["model"] == {"name": NAME, "version": 2}
