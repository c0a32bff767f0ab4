"""The predict rollout's pre-traffic check: driven by events/codedeploy-pretraffic.json, the hook function calls the
new predict version (the real predict handler in-process, playing the Lambda service's part that moto cannot) with
API Gateway events against the champion in S3 (moto), and reports the verdict to CodeDeploy (botocore's Stubber
checks the call against the CodeDeploy API model: moto does not implement lifecycle hooks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from botocore.stub import Stubber

from sklambda import aws
from sklambda.errors import StoreUnavailable
from sklambda.store import ModelStore
from tests.conftest import LambdaContext, load_event, upload_store

pytestmark = pytest.mark.integration

NAME = "penguins"
NEW_VERSION = "arn:aws:lambda:us-east-1:123456789012:function:sklambda-PredictFunction:7"
EVENT = load_event("codedeploy-pretraffic")


@dataclass
class Rollout:
    """The hook, the new predict version it calls, and what CodeDeploy hears."""

    hook: ModuleType
    new_version: Callable[[dict[str, Any]], dict[str, Any]]
    codedeploy: Stubber
    calls: list[str] = field(default_factory=list)

    def expect_status(self, status: str) -> None:
        self.codedeploy.add_response(
            "put_lifecycle_event_hook_execution_status",
            {"lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"]},
            {
                "deploymentId": EVENT["DeploymentId"],
                "lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"],
                "status": status,
            },
        )

    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = self.hook.lambda_handler(EVENT, LambdaContext())
        self.codedeploy.assert_no_pending_responses()
        return result


@pytest.fixture
def store_uri(s3_bucket: str, trained_store: Path) -> str:
    """The sample model as v1 champion in S3."""
    uri = f"s3://{s3_bucket}/models"
    upload_store(trained_store, uri)
    return uri


@pytest.fixture
def rollout(
    store_uri: str, fresh_handler: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rollout]:
    environment = {"MODEL_STORE_URI": store_uri, "MODEL_NAME": NAME, "ALIAS_REFRESH_SECONDS": "0"}
    predict = fresh_handler("functions.predict.app", **environment)
    hook = fresh_handler("functions.pretraffic.app", PREDICT_VERSION=NEW_VERSION, **environment)
    with Stubber(aws.codedeploy_client()) as codedeploy:
        rollout = Rollout(
            hook=hook, new_version=lambda event: predict.lambda_handler(event, LambdaContext()), codedeploy=codedeploy
        )

        def invoke_json(function_name: str, payload: dict[str, Any]) -> dict[str, Any]:
            assert function_name == NEW_VERSION
            rollout.calls.append(f"{payload['httpMethod']} {payload['resource']}")
            return rollout.new_version(payload)

        monkeypatch.setattr(aws, "invoke_json", invoke_json)
        yield rollout


def test_a_new_version_that_serves_the_champion_as_trained_gets_traffic(rollout: Rollout, store_uri: str) -> None:
    # Given the new predict version, which serves v1
    rollout.expect_status("Succeeded")
    # When CodeDeploy runs the hook
    result = rollout.run()
    # Then the new version was called as API Gateway calls it, and CodeDeploy heard Succeeded
    assert rollout.calls == ["GET /health", "POST /predict"]
    assert result["passed"], result
    assert result["reason"] == f"the new version serves {NAME} v1 as trained"
    golden = ModelStore.from_uri(store_uri).manifest(NAME, 1).golden.instances
    assert result["checks"][1] == f"POST /predict: {len(golden)} golden rows give the trained pipeline's predictions"


def test_a_new_version_that_cannot_start_is_stopped(rollout: Rollout) -> None:
    # Given a new version whose code fails at import (Lambda answers with a FunctionError)
    def broken(event: dict[str, Any]) -> dict[str, Any]:
        raise StoreUnavailable(f"{NEW_VERSION} failed: b'Runtime.ImportModuleError'")

    rollout.new_version = broken
    rollout.expect_status("Failed")
    result = rollout.run()
    assert not result["passed"]
    assert "Runtime.ImportModuleError" in result["reason"]


def test_a_new_version_that_does_not_serve_the_champion_is_stopped(
    rollout: Rollout, fresh_handler: Callable[..., ModuleType], tmp_path: Path
) -> None:
    # Given a new version deployed with a wrong store (it answers /health, but serves no model)
    misconfigured = fresh_handler("functions.predict.app", MODEL_STORE_URI=str(tmp_path / "empty"))
    rollout.new_version = lambda event: misconfigured.lambda_handler(event, LambdaContext())
    rollout.expect_status("Failed")
    result = rollout.run()
    assert rollout.calls == ["GET /health"]
    assert result["reason"].startswith(f"GET /health: the new version does not serve {NAME} v1 (")


def test_a_new_version_with_different_predictions_is_stopped(rollout: Rollout) -> None:
    # Given a new version whose answers differ from the trained pipeline's (e.g. a broken preprocessing change)
    serve = rollout.new_version

    def shifted(event: dict[str, Any]) -> dict[str, Any]:
        reply = serve(event)
        if event["resource"] == "/predict":
            body = orjson.loads(reply["body"])
            body["predictions"] = body["predictions"][1:] + body["predictions"][:1]
            reply = {**reply, "body": orjson.dumps(body).decode()}
        return reply

    rollout.new_version = shifted
    rollout.expect_status("Failed")
    result = rollout.run()
    assert "golden rows: row " in result["reason"], result
    assert "trained pipeline" in result["reason"]


def test_before_any_model_exists_answering_health_is_enough(
    rollout: Rollout, fresh_handler: Callable[..., ModuleType], tmp_path: Path
) -> None:
    # Given a stack whose store has no champion yet (deployed before the first training run)
    empty = str(tmp_path / "empty")
    predict = fresh_handler("functions.predict.app", MODEL_STORE_URI=empty)
    rollout.hook = fresh_handler("functions.pretraffic.app", MODEL_STORE_URI=empty)
    rollout.new_version = lambda event: predict.lambda_handler(event, LambdaContext())
    rollout.expect_status("Succeeded")
    result = rollout.run()
    assert result["passed"]
    assert result["reason"] == "no model to serve yet: the new version answers /health"


def test_codedeploy_hears_failed_even_when_the_check_itself_breaks(
    rollout: Rollout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a check that raises something unexpected
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(rollout.hook, "check_new_version", explode)
    rollout.expect_status("Failed")
    # Then CodeDeploy hears Failed at once instead of waiting for the hook's timeout
    result = rollout.run()
    assert result["reason"] == "the check itself failed: RuntimeError: unexpected"
