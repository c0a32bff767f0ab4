"""A run too big for the retrain function, handed to SageMaker Training through the real handler, under moto.

What this proves: the [budget] estimate (a function given less memory than the table needs) sends the run to the
state machine with the run id and the whole CreateTrainingJob request; the run is recorded queued with engine
`sagemaker`, its lock reserved for the job's whole lease; the state machine's own definition, taken from
template.yaml (substitutions resolved) with `createTrainingJob.sync` replaced by the plain `createTrainingJob`
(moto fails every `.sync` task), creates the job from that input; the failure callback records `failed` and frees
the lock; the stop route records `stopped` and frees it.

What moto cannot show: the `.sync` wait and the EventBridge rule behind it, the container itself (see
test_sagemaker_job_local.py for its entry point run as the container runs it), IAM enforcement of the two roles
(tests/template check their exact actions), StopTrainingJob (not implemented by moto) and StopExecution (moto
breaks on an execution it has finished): both replaced by a recorder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest

from sklambda import aws
from sklambda.runs import RunLock, RunLog
from sklambda.store import ModelStore
from tests.conftest import BUCKET, PENGUINS_CSV, LambdaContext, load_event, moto_aws
from tests.template.conftest import load_sam_template

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "sklambda"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-SageMakerTrainingRole"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.9-0-cpu-py3"
RETRAIN_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-retrain"
MAX_RUNTIME = 7200


@dataclass
class SmallFunction(LambdaContext):
    """A retrain function with less memory than the sample table's estimate (250 MB base x 1.5 safety)."""

    function_name: str = f"{STACK}-retrain"
    memory_limit_in_mb: int = 256

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def state_machine_definition() -> str:
    """The template's definition with its substitution resolved and `.sync` dropped (moto cannot run `.sync`)."""
    properties = load_sam_template()["Resources"]["RetrainStateMachine"]["Properties"]
    text = json.dumps(properties["Definition"]).replace("${RetrainFunctionArn}", RETRAIN_ARN)
    text = text.replace("${SageMakerRoleArn}", ROLE)
    assert text.count("arn:aws:states:::sagemaker:createTrainingJob.sync") == 1
    return text.replace("createTrainingJob.sync", "createTrainingJob")


@dataclass
class Stack:
    retrain: ModuleType
    machine_arn: str
    stopped_jobs: list[str]

    @property
    def store(self) -> ModelStore:
        return ModelStore.from_uri(f"s3://{BUCKET}/models")

    def call(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.retrain.lambda_handler(event, SmallFunction())
        return result

    def api(self, name: str, run_id: str) -> tuple[int, dict[str, Any]]:
        event = load_event(name)
        event["path"] = event["path"].replace("20261127T030000000Z-1a2b3c4d", run_id)
        event["pathParameters"] = {"run_id": run_id}
        response = self.call(event)
        return response["statusCode"], json.loads(response["body"])

    def execution(self) -> dict[str, Any]:
        sfn: Any = boto3.client("stepfunctions", region_name=REGION)
        (execution,) = sfn.list_executions(stateMachineArn=self.machine_arn)["executions"]
        for _ in range(100):
            described: dict[str, Any] = sfn.describe_execution(executionArn=execution["executionArn"])
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        return described


@pytest.fixture
def stack(fresh_handler: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    # moto runs the state machine's states (the plain createTrainingJob task creates the job in moto's SageMaker)
    with moto_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(PENGUINS_CSV), BUCKET, "data/penguins.csv")
        machine_arn = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name=f"{STACK}-retrain-jobs",
            definition=state_machine_definition(),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/{STACK}-RetrainStateMachineRole",
        )["stateMachineArn"]
        retrain = fresh_handler(
            "functions.retrain.app",
            MODEL_STORE_URI=f"s3://{BUCKET}/models",
            MODEL_NAME="penguins",
            DATA_URI=f"s3://{BUCKET}/data/",
            RETRAIN_ENGINE="auto",
            RETRAIN_STATE_MACHINE_ARN=machine_arn,
            SAGEMAKER_JOB_PREFIX=STACK,
            SAGEMAKER_ROLE_ARN=ROLE,
            SAGEMAKER_IMAGE_URI=IMAGE,
            SAGEMAKER_INSTANCE_TYPE="ml.r5.4xlarge",
            SAGEMAKER_MAX_RUNTIME_SECONDS=str(MAX_RUNTIME),
            SAGEMAKER_REGION=REGION,
        )
        stopped: list[str] = []
        monkeypatch.setattr(aws, "stop_training_job", stopped.append)  # not implemented by moto
        # moto's StopExecution breaks on an execution it has already finished (AttributeError in moto)
        monkeypatch.setattr(aws, "stop_execution", lambda arn, cause: stopped.append(arn))
        monkeypatch.setattr(aws, "invoke_event", lambda name, payload: None)
        yield Stack(retrain=retrain, machine_arn=machine_arn, stopped_jobs=stopped)


def test_a_table_too_big_for_the_function_starts_a_job_with_the_run(stack: Stack) -> None:
    # When the schedule triggers a run whose estimate exceeds the function's memory
    reply = stack.call(load_event("retrain-schedule"))
    # Then the run is queued for SageMaker, saying why, and nothing was trained here
    assert reply["status"] == "queued"
    engine = reply["engine"]
    assert engine["engine"] == "sagemaker"
    assert engine["why"].startswith("344 rows x 8 columns do not fit in the function: about ")
    assert (engine["instance_type"], engine["spot"], engine["max_runtime_seconds"]) == ("ml.r5.4xlarge", False, 7200)
    assert stack.store.versions("penguins") == []
    run_id = reply["run_id"]
    job_name = f"{STACK}-{run_id.lower()}"
    assert engine["job_name"] == job_name
    # And the state machine got an execution named by the job, whose input is the run and the job request
    execution = stack.execution()
    assert execution["executionArn"] == engine["execution_arn"]
    assert execution["name"] == job_name
    given = json.loads(execution["input"])
    assert given["run_id"] == run_id
    assert given["job"]["TrainingJobName"] == job_name
    assert given["job"]["Environment"]["RUN_ID"] == run_id
    assert given["job"]["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/data/"
    # And the code the job runs is in the store, under the model's prefix, where the request names it
    code_uri = json.loads(given["job"]["HyperParameters"]["sagemaker_submit_directory"])
    assert code_uri.startswith(f"s3://{BUCKET}/models/penguins/jobs/code/")
    key = code_uri.removeprefix(f"s3://{BUCKET}/")
    assert boto3.client("s3", region_name=REGION).head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 10_000
    # And the run lock is reserved (not started: the job adopts it) for the job's whole possible life
    lock = RunLock(stack.store.objects, "penguins", ttl_seconds=1).current()
    assert lock is not None
    assert (lock.run_id, lock.started) == (run_id, False)
    assert lock.expires_at >= time.time() + MAX_RUNTIME
    # And a second trigger meanwhile is skipped, naming the running run
    assert stack.call(load_event("retrain-schedule"))["running_run_id"] == run_id
    # And the record says where the run goes
    record = RunLog(stack.store.objects, "penguins").get(run_id)
    assert record.engine is not None
    assert record.engine.engine == "sagemaker"


def test_the_state_machine_definition_creates_the_job_from_the_request(stack: Stack) -> None:
    # Given a run handed over (moto runs the template's definition, minus `.sync`)
    run_id = stack.call(load_event("retrain-schedule"))["run_id"]
    # When the execution has run its Train state
    assert stack.execution()["status"] == "SUCCEEDED"
    # Then SageMaker has the job, as the request asked: our image, the job role, the instance, the limits
    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=f"{STACK}-{run_id.lower()}"
    )
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"]["InstanceType"] == "ml.r5.4xlarge"
    assert job["ResourceConfig"]["InstanceCount"] == 1
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == MAX_RUNTIME
    assert json.loads(job["HyperParameters"]["sagemaker_program"]) == "entry.py"
    assert job["InputDataConfig"][0]["ChannelName"] == "train"
    # And GET /retrain/{run_id} shows the job's state while the run is unfinished (moto completes jobs at once)
    status, body = stack.api("retrain-run", run_id)
    assert status == 200
    assert body["status"] == "queued"
    assert body["engine"]["job_status"] == "Completed"


def test_a_job_that_ended_without_a_result_leaves_a_failed_record_and_frees_the_lock(stack: Stack) -> None:
    # Given a run handed over
    run_id = stack.call(load_event("retrain-schedule"))["run_id"]
    # When the state machine reports that its job failed (the Catch → ReportJobEnd payload)
    event = load_event("sagemaker-job-ended")
    event["sagemaker_job_ended"]["run_id"] = run_id
    reply = stack.call(event)
    # Then the run is failed with SageMaker's reason, nothing was promoted, and the lock is free
    assert reply["status"] == "failed"
    assert "the SageMaker job ended without a result: States.TaskFailed" in reply["reason"]
    assert "ExecuteUserScriptError" in reply["reason"]
    assert stack.store.alias("penguins", "champion") is None
    assert RunLock(stack.store.objects, "penguins", ttl_seconds=1).current() is None
    # And the next trigger can start a run
    assert stack.call(load_event("retrain-schedule"))["status"] == "queued"


def test_stopping_a_job_records_stopped_and_frees_the_lock(stack: Stack) -> None:
    run_id = stack.call(load_event("retrain-schedule"))["run_id"]
    # When a caller stops the run
    status, body = stack.api("retrain-stop", run_id)
    # Then the job is stopped, the run recorded `stopped` by whom, and the lock is free
    assert status == 200
    assert body["status"] == "stopped"
    assert body["reason"].startswith(f"stopped by POST /retrain/{run_id}/stop by ")
    assert stack.stopped_jobs == [body["engine"]["execution_arn"], f"{STACK}-{run_id.lower()}"]
    assert RunLock(stack.store.objects, "penguins", ttl_seconds=1).current() is None
    # And a second stop is refused: the run has ended
    status, body = stack.api("retrain-stop", run_id)
    assert status == 409
    assert "already ended (stopped)" in body["error"]


def test_a_queued_api_run_is_handed_over_under_its_own_id(stack: Stack) -> None:
    # Given POST /retrain reserved a run (the function's short lease) and queued its asynchronous worker
    response = stack.call(load_event("retrain-api"))
    assert response["statusCode"] == 202
    run_id = json.loads(response["body"])["run_id"]
    # When the worker finds the table too big
    reply = stack.call({"retrain_run": {"run_id": run_id, "trigger": "api"}})
    # Then the same run goes to SageMaker, and its reservation now lasts the job's lease
    assert (reply["run_id"], reply["status"], reply["engine"]["engine"]) == (run_id, "queued", "sagemaker")
    lock = RunLock(stack.store.objects, "penguins", ttl_seconds=1).current()
    assert lock is not None
    assert (lock.run_id, lock.started) == (run_id, False)
    assert lock.expires_at >= time.time() + MAX_RUNTIME
