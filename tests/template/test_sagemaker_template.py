"""The template's part of the SageMaker engine: the two new roles (exact statements), the state machine that waits
on a job with `.sync`, the parameters that configure a job, the alarm and the dashboard row. What IAM then allows
or refuses at run time is AWS's to enforce: only the policies' content can be tested offline."""

from __future__ import annotations

from typing import Any

import pytest

from sklambda.settings import EngineSettings
from tests.template.test_production import allowed, render
from training import engines

pytestmark = pytest.mark.template

ACCOUNT_REGION = "us-east-1:123456789012"
TRAINING_JOBS = f"arn:aws:sagemaker:{ACCOUNT_REGION}:training-job/sklambda-*"


def statements(role: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (policy,) = role["Properties"]["Policies"]
    return {statement["Sid"]: statement for statement in policy["PolicyDocument"]["Statement"]}


def test_the_job_role_reads_the_data_and_this_model_and_nothing_else(resources: dict[str, Any]) -> None:
    role = resources["SageMakerTrainingRole"]
    # Only SageMaker of this account may assume it
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    # Exactly these actions on exactly these resources
    assert allowed(role) == {
        "s3:GetObject": {"arn:aws:s3:::model-bucket/data/*", "arn:aws:s3:::model-bucket/models/penguins/*"},
        "s3:PutObject": {"arn:aws:s3:::model-bucket/models/penguins/*"},
        "s3:ListBucket": {"arn:aws:s3:::model-bucket"},
        "logs:CreateLogGroup": {f"arn:aws:logs:{ACCOUNT_REGION}:log-group:/aws/sagemaker/TrainingJobs*"},
        "logs:CreateLogStream": {f"arn:aws:logs:{ACCOUNT_REGION}:log-group:/aws/sagemaker/TrainingJobs*"},
        "logs:PutLogEvents": {f"arn:aws:logs:{ACCOUNT_REGION}:log-group:/aws/sagemaker/TrainingJobs*"},
        "logs:DescribeLogStreams": {f"arn:aws:logs:{ACCOUNT_REGION}:log-group:/aws/sagemaker/TrainingJobs*"},
        "cloudwatch:PutMetricData": {"*"},
        "lambda:InvokeFunction": {"Ref:PredictFunctionAliaslive"},
        "sns:Publish": {"Ref:RetrainOutcomeTopic"},
    }
    by_sid = statements(role)
    # Listing is limited to the data prefix and this model's prefix, metrics to our namespace and SageMaker's
    assert by_sid["ListTrainingDataAndThisModel"]["Condition"]["StringLike"]["s3:prefix"] == [
        {"Fn::Sub": "${TrainingDataPrefix}*"},
        {"Fn::Sub": "${ModelsPrefix}/${ModelName}/*"},
    ]
    assert by_sid["RunMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": ["Sklambda", "/aws/sagemaker/TrainingJobs"]}
    }
    # And every statement is an Allow (nothing hidden in a Deny with exceptions)
    assert all(statement["Effect"] == "Allow" for statement in by_sid.values())


def test_the_state_machine_role_runs_only_this_stacks_jobs_with_only_the_job_role(resources: dict[str, Any]) -> None:
    role = resources["RetrainStateMachineRole"]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"}
    assert allowed(role) == {
        "sagemaker:CreateTrainingJob": {TRAINING_JOBS},
        "sagemaker:DescribeTrainingJob": {TRAINING_JOBS},
        "sagemaker:StopTrainingJob": {TRAINING_JOBS},
        "sagemaker:ListTags": {TRAINING_JOBS},
        "iam:PassRole": {"GetAtt:SageMakerTrainingRole.Arn"},
        "events:PutTargets": {
            f"arn:aws:events:{ACCOUNT_REGION}:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"
        },
        "events:PutRule": {f"arn:aws:events:{ACCOUNT_REGION}:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"},
        "events:DescribeRule": {
            f"arn:aws:events:{ACCOUNT_REGION}:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"
        },
        "lambda:InvokeFunction": {f"arn:aws:lambda:{ACCOUNT_REGION}:function:sklambda-retrain"},
    }
    # The job role may be passed to SageMaker only
    assert statements(role)["PassOnlyTheJobRoleToSageMaker"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }


def test_the_state_machine_waits_on_the_job_and_reports_a_job_without_result(resources: dict[str, Any]) -> None:
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    properties = machine["Properties"]
    assert properties["RoleArn"] == {"Fn::GetAtt": ["RetrainStateMachineRole", "Arn"]}
    assert properties["StateMachineName"] == {"Fn::Sub": "${AWS::StackName}-retrain-jobs"}
    # The name the retrain function starts executions of (its environment) is this machine's
    variables = resources["RetrainFunction"]["Properties"]["Environment"]["Variables"]
    assert render(variables["RETRAIN_STATE_MACHINE_ARN"]) == (
        f"arn:aws:states:{ACCOUNT_REGION}:stateMachine:sklambda-retrain-jobs"
    )
    assert properties["DefinitionSubstitutions"]["SageMakerRoleArn"] == {"Fn::GetAtt": ["SageMakerTrainingRole", "Arn"]}


def test_the_definition_creates_the_job_with_sync_and_the_fixed_role(sam_template: dict[str, Any]) -> None:
    definition = sam_template["Resources"]["RetrainStateMachine"]["Properties"]["Definition"]
    train = definition["States"][definition["StartAt"]]
    assert train["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    # Every field of the request comes from the input the retrain function built, except the role
    request_fields = set(engines.training_job_request(
        engines.JobInputs("20261203T030000123Z-1a2b3c4d", "s3://b/m", "penguins", "champion", "s3://b/d/",
                          "s3://b/c.tar.gz", "s3://b/o/", {}),
        EngineSettings.from_env({"SAGEMAKER_ROLE_ARN": "r", "SAGEMAKER_IMAGE_URI": "i:1"}),
    ))  # fmt: skip
    assert {key.removesuffix(".$") for key in train["Parameters"]} == request_fields
    assert train["Parameters"]["RoleArn"] == "${SageMakerRoleArn}"
    assert all(
        value == f"$.job.{key.removesuffix('.$')}" for key, value in train["Parameters"].items() if key.endswith(".$")
    )
    # A job that fails, times out or is stopped goes to the retrain function, then the execution fails
    (catch,) = train["Catch"]
    assert (catch["ErrorEquals"], catch["Next"]) == (["States.ALL"], "ReportJobEnd")
    report = definition["States"]["ReportJobEnd"]
    assert report["Resource"] == "arn:aws:states:::lambda:invoke"
    assert set(report["Parameters"]["Payload"]["sagemaker_job_ended"]) == {"run_id.$", "error.$", "cause.$"}
    assert definition["States"][report["Next"]]["Type"] == "Fail"


def test_job_parameters_default_to_auto_on_demand_and_the_region_image(sam_template: dict[str, Any]) -> None:
    parameters = sam_template["Parameters"]
    assert parameters["RetrainEngine"]["AllowedValues"] == ["auto", "lambda", "sagemaker"]
    assert parameters["RetrainEngine"]["Default"] == "auto"
    assert parameters["SageMakerSpot"]["Default"] == "false"
    assert parameters["SageMakerMaxRuntimeSeconds"]["MaxValue"] == 28 * 86400
    assert parameters["SageMakerImageUri"]["Default"] == ""
    # The per-region image accounts (only regions checked against AWS's table)
    assert sam_template["Mappings"]["SklearnImageAccount"] == {
        "us-east-1": {"Account": "683313688378"},
        "eu-west-1": {"Account": "141502667606"},
    }


def test_failed_timed_out_and_stopped_executions_alarm_into_the_alarm_topic(resources: dict[str, Any]) -> None:
    alarm = resources["RetrainJobFailedAlarm"]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    watched = {
        query["MetricStat"]["Metric"]["MetricName"]
        for query in alarm["Metrics"]
        if "MetricStat" in query
        and query["MetricStat"]["Metric"]["Dimensions"]
        == [{"Name": "StateMachineArn", "Value": {"Ref": "RetrainStateMachine"}}]
    }
    assert watched == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
