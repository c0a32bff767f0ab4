"""A smoke deploy of the transformed template with moto's CloudFormation, as far as moto supports it: the stack must
reach CREATE_COMPLETE with every resource moto can create, wired as the template says (bucket, functions and their
environment, roles, the guard's rule, the dashboard, the outputs).

What moto cannot create, and how the smoke copy handles it (MOTO_CANNOT_CREATE; the first test fails when moto
learns a type, so the list stays true):
- no CloudFormation model in moto 5.2: AWS::ApiGateway::Stage, ::Account, ::ApiKey, ::UsagePlan, ::UsagePlanKey,
  AWS::CloudWatch::Alarm, AWS::CodeDeploy::Application and ::DeploymentGroup, AWS::Lambda::Alias and
  ::EventInvokeConfig, AWS::S3::BucketPolicy, AWS::SNS::Subscription and ::TopicPolicy, AWS::SQS::QueuePolicy,
  AWS::KinesisFirehose::DeliveryStream, AWS::Logs::LogStream;
- AWS::ApiGateway::Deployment: moto ignores the RestApi's OpenAPI Body, so the API has no method to deploy.
They are removed from the smoke copy; a Ref or GetAtt to one becomes what CloudFormation would give where it can
be known (an alarm's ARN from its name; the function itself for its `live` alias), else a marked placeholder.
moto also resolves a Number parameter to an int, so Fn::FindInMap (keys are strings) is resolved beforehand, and it
drops a bucket's versioning and public access block when CloudFormation creates it.
The removed resources are checked on the transformed template by tests/template/test_production.py instead.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudformation.parsing import get_model_map

from tests.template.conftest import alarm_arn, created_resources, guard_event_pattern, resolve, transformed_template

pytestmark = pytest.mark.template

STACK, REGION, ACCOUNT = "sklambda", "us-east-1", "123456789012"
MOTO_CANNOT_CREATE = {
    "AWS::ApiGateway::Account",
    "AWS::ApiGateway::ApiKey",
    "AWS::ApiGateway::Deployment",
    "AWS::ApiGateway::Stage",
    "AWS::ApiGateway::UsagePlan",
    "AWS::ApiGateway::UsagePlanKey",
    "AWS::CloudWatch::Alarm",
    "AWS::CodeDeploy::Application",
    "AWS::CodeDeploy::DeploymentGroup",
    "AWS::KinesisFirehose::DeliveryStream",
    "AWS::Lambda::Alias",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::Logs::LogStream",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::Subscription",
    "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy",
}
# Every option on that moto can deploy: the API key resources, access logs with the account role, an e-mail.
ALL_OPTIONS = {
    "PredictApiKeyRequired": "true",
    "ApiAccessLogs": "on-with-account-role",
    "AlarmNotificationEmail": "ops@example.com",
    "TracingMode": "Active",
    "PredictWarmStart": "snapstart",
}


def cannot_create(resource: dict[str, Any]) -> bool:
    return resource["Type"] not in get_model_map() or resource["Type"] == "AWS::ApiGateway::Deployment"


def smoke_copy(cfn: dict[str, Any]) -> dict[str, Any]:
    """The template without what moto cannot create, references to it replaced by stand-ins."""
    resources = cfn["Resources"]
    removed = {logical_id for logical_id, resource in resources.items() if cannot_create(resource)}

    def stand_in(logical_id: str) -> Any:
        resource = resources[logical_id]
        if resource["Type"] == "AWS::Lambda::Alias":
            return resource["Properties"]["FunctionName"]
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            return alarm_arn(cfn, logical_id, stack=STACK, account=ACCOUNT, region=REGION)
        return f"moto-cannot-create-{logical_id}"

    def in_sub(match: re.Match[str]) -> str:
        if match.group(1) not in removed:
            return match.group(0)
        value = stand_in(match.group(1))
        return "${" + value["Ref"] + "}" if isinstance(value, dict) else str(value)

    def scrub(value: Any) -> Any:
        if isinstance(value, list):
            return [scrub(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"} and value["Ref"] in removed:
            return stand_in(value["Ref"])
        if set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][0] in removed:
            return stand_in(value["Fn::GetAtt"][0])
        if set(value) == {"Fn::FindInMap"}:
            return resolve(value, cfn)
        if set(value) == {"Fn::Sub"}:
            sub = value["Fn::Sub"]
            text, names = (sub, None) if isinstance(sub, str) else sub
            text = re.sub(r"\$\{(\w+)(?:\.\w+)?\}", in_sub, text)
            return {"Fn::Sub": text if names is None else [text, scrub(names)]}
        return {key: scrub(item) for key, item in value.items()}

    copy: dict[str, Any] = {**cfn, "Resources": {}, "Outputs": scrub(cfn.get("Outputs", {}))}
    for logical_id, resource in resources.items():
        if logical_id in removed:
            continue
        resource = scrub(resource)
        depends = resource.pop("DependsOn", [])
        depends = [name for name in ([depends] if isinstance(depends, str) else depends) if name not in removed]
        if depends:
            resource["DependsOn"] = depends
        copy["Resources"][logical_id] = resource
    return copy


@pytest.fixture
def moto_aws() -> Iterator[None]:
    with mock_aws():
        yield


def deploy(cfn: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """Create the smoke copy as stack `sklambda`, with code and layers as S3 objects where SAM would put them."""
    smoke = smoke_copy(cfn)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="sam-artifacts")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    for resource in smoke["Resources"].values():
        location = resource.get("Properties", {}).get("Code") or resource.get("Properties", {}).get("Content")
        if isinstance(location, dict) and "S3Key" in location:
            s3.put_object(Bucket=location["S3Bucket"], Key=location["S3Key"], Body=archive.getvalue())
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(smoke),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    (stack,) = cloudformation.describe_stacks(StackName=STACK)["Stacks"]
    return {"stack": stack, "smoke": smoke}


def test_moto_cannot_create_exactly_the_listed_types() -> None:
    # The list in this module's docstring is what moto lacks today, for the template with every option on
    cfn = transformed_template(**ALL_OPTIONS)
    lacking = {resource["Type"] for resource in cfn["Resources"].values() if cannot_create(resource)}
    assert lacking == MOTO_CANNOT_CREATE


@pytest.mark.parametrize("parameters", [{}, ALL_OPTIONS], ids=["defaults", "all-options"])
def test_the_stack_deploys_under_moto_as_far_as_moto_goes(moto_aws: None, parameters: dict[str, str]) -> None:
    # Given the template transformed for these parameter values, without what moto cannot create
    cfn = transformed_template(**parameters)
    # When moto's CloudFormation creates the stack
    deployed = deploy(cfn, parameters)
    # Then it is complete, with every resource its conditions ask for
    stack = deployed["stack"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    summaries = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    created = {
        summary["LogicalResourceId"]
        for summary in summaries
        if summary["ResourceStatus"] == "CREATE_COMPLETE" and summary["LogicalResourceId"]  # moto lists a nameless one
    }
    wanted = {key for key, resource in created_resources(cfn, parameters).items() if not cannot_create(resource)}
    assert created == wanted
    physical = {summary["LogicalResourceId"]: summary["PhysicalResourceId"] for summary in summaries}
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}

    # And the bucket is encrypted (moto drops its versioning and public access block: test_production checks them)
    bucket = physical["ModelBucket"]
    s3 = boto3.client("s3", region_name=REGION)
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # And the functions find the bucket's model store, report metrics as this stack, and run python3.12
    lambdas = boto3.client("lambda", region_name=REGION)
    for function_id in ("PredictFunction", "RetrainFunction", "AdminFunction", "GuardFunction"):
        configuration = lambdas.get_function_configuration(FunctionName=physical[function_id])
        variables = configuration["Environment"]["Variables"]
        assert variables["MODEL_STORE_URI"] == f"s3://{bucket}/models", function_id
        assert variables["POWERTOOLS_SERVICE_NAME"] == STACK, function_id
        assert configuration["Runtime"] == "python3.12", function_id
    assert outputs["ModelStoreUri"] == f"s3://{outputs['ModelBucketName']}/models"
    assert outputs["RetrainFunctionArn"].endswith(f":function:{STACK}-retrain")
    # And the predict role reads only the models prefix of that bucket
    iam = boto3.client("iam", region_name=REGION)
    role = physical[cfn["Resources"]["PredictFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]]
    (policy_name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    # moto keeps a policy that CloudFormation created as the text of a Python dict
    document = ast.literal_eval(document) if isinstance(document, str) else document
    reads = [statement for statement in document["Statement"] if statement["Action"] == "s3:GetObject"]
    assert [statement["Resource"] for statement in reads] == [f"arn:aws:s3:::{bucket}/models/*"]
    # And the guard's rule hears the serving alarms of this stack
    events = boto3.client("events", region_name=REGION)
    rule_name = physical["GuardFunctionServingAlarm"]
    pattern = json.loads(events.describe_rule(Name=rule_name)["EventPattern"])
    assert pattern == guard_event_pattern(cfn, stack=STACK, account=ACCOUNT, region=REGION)
    # And the dashboard's body is JSON naming the deployed predict function
    body = boto3.client("cloudwatch", region_name=REGION).get_dashboard(DashboardName=STACK)["DashboardBody"]
    assert physical["PredictFunction"] in json.dumps(json.loads(body))
