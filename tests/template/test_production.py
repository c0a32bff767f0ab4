"""What `sam deploy` creates for production, checked on the transformed CloudFormation: least-privilege roles, the
bucket's policy, throttling, auth (IAM and the optional API key), tracing and access logs as options, the alarms,
the dashboard, the canary, warm starts, and the promotion guard's rule. Parameter values are evaluated the way
CloudFormation does (conditions, Fn::If, AWS::NoValue, Fn::FindInMap)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.template.conftest import (
    ROOT,
    alarm_arn,
    condition_values,
    created_resources,
    guard_event_pattern,
    load_sam_template,
    transformed_template,
    translate,
)

pytestmark = pytest.mark.template

SERVING_ALARMS = ["Predict5xxAlarm", "PredictLatencyAlarm", "PredictErrorsAlarm", "ModelLoadRefusedAlarm"]
MONITORING_ALARMS = ["DriftAlarm", "LiveQualityAlarm", "CaptureDroppedAlarm", "MonitorFailedAlarm"]
ALL_ALARMS = [
    *SERVING_ALARMS,
    "RetrainFailedAlarm",
    "RetrainDeadLettersAlarm",
    "GuardFailedAlarm",
    "GuardDeadLettersAlarm",
    "RetrainJobFailedAlarm",
    *MONITORING_ALARMS,
]
FUNCTIONS = [
    "PredictFunction",
    "RetrainFunction",
    "AdminFunction",
    "GuardFunction",
    "PredictPreTrafficFunction",
    "FeedbackFunction",
    "MonitorFunction",
]
PREDICTION_ROUTES = [("/predict", "post"), ("/model", "get"), ("/openapi.json", "get")]
BUCKET = "arn:aws:s3:::model-bucket"
BASIC_LOGGING = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
XRAY_WRITE = "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"


# ------------------------------------------------------------------------------------------- helpers


def render(value: Any) -> Any:
    """Strings of a resolved value with deploy-time names filled in (stack sklambda, bucket model-bucket)."""
    names = {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::StackName": "sklambda",
        "ModelBucket": "model-bucket",
        "ModelBucket.Arn": BUCKET,
        "ModelsPrefix": "models",
        "ModelName": "penguins",
        "TrainingDataPrefix": "data/",
        "CapturePrefix": "capture/",
        "StageName": "v1",
        "PredictFunction": "sklambda-PredictFunction",
    }
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", lambda match: names.get(match.group(1), match.group(0)), value["Fn::Sub"])
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return f"Ref:{value['Ref']}"
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        return f"GetAtt:{'.'.join(value['Fn::GetAtt'])}"
    return value


def role_of(resources: dict[str, Any], function_id: str) -> dict[str, Any]:
    role: dict[str, Any] = resources[resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]]
    return role


def allowed(role: dict[str, Any]) -> dict[str, set[str]]:
    """action -> the resources one of the role's inline statements allows it on (rendered)."""
    actions: dict[str, set[str]] = {}
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow", statement
            assert "NotAction" not in statement, statement
            assert "NotResource" not in statement, statement
            as_list = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for action in as_list:
                actions.setdefault(action, set()).update(render(target) for target in targets)
    return actions


def operations(resources: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    paths = resources["Api"]["Properties"]["Body"]["paths"]
    return {(path, method): operation for path, methods in paths.items() for method, operation in methods.items()}


def throttling_problems(cfn: dict[str, Any]) -> list[str]:
    """Why the stage would not throttle every method by the parameters (empty when it does)."""
    stages = [resource for resource in cfn["Resources"].values() if resource["Type"] == "AWS::ApiGateway::Stage"]
    if len(stages) != 1:
        return [f"expected one stage, found {len(stages)}"]
    settings = stages[0]["Properties"].get("MethodSettings", [])
    problems = []
    if not any(s.get("ResourcePath") == "/*" and s.get("HttpMethod") == "*" for s in settings):
        problems.append("no default method setting for every resource and method")
    for setting in settings:
        where = f"{setting.get('HttpMethod')} {setting.get('ResourcePath')}"
        if setting.get("ThrottlingRateLimit") != {"Ref": "ApiThrottlingRateLimit"}:
            problems.append(f"{where}: rate limit is not the ApiThrottlingRateLimit parameter")
        if setting.get("ThrottlingBurstLimit") != {"Ref": "ApiThrottlingBurstLimit"}:
            problems.append(f"{where}: burst limit is not the ApiThrottlingBurstLimit parameter")
    return problems


def unsigned_private_routes(cfn: dict[str, Any]) -> list[str]:
    """/admin and /retrain operations that a caller could reach without a SigV4 (IAM) signature."""
    resources = cfn["Resources"]
    schemes = resources["Api"]["Properties"]["Body"].get("components", {}).get("securitySchemes", {})
    sigv4 = schemes.get("AWS_IAM", {}).get("x-amazon-apigateway-authtype") == "awsSigv4"
    return [
        f"{method.upper()} {path}"
        for (path, method), operation in operations(resources).items()
        if path.startswith(("/admin", "/retrain")) and (not sigv4 or operation.get("security") != [{"AWS_IAM": []}])
    ]


def emitted_metric_names() -> set[str]:
    """The metric names (namespace Sklambda) our code can emit, read from the code itself: the sklambda.metric_names
    constants the handlers and the model cache use, the retrain outcomes and scores, and Powertools' ColdStart."""
    from sklambda import metric_names
    from sklambda.runs import FINISHED, RunRecord, score_metrics

    names = {"ColdStart"}
    sources = [
        *(ROOT / "functions").glob("*/app.py"),
        ROOT / "layers" / "shared" / "sklambda" / "serving.py",
        # A SageMaker job's run puts its metrics itself (PutMetricData)
        ROOT / "training" / "sagemaker_job.py",
    ]
    for source in sources:
        names |= {
            getattr(metric_names, constant) for constant in re.findall(r"metric_names\.([A-Z_]+)\b", source.read_text())
        }
    names |= {f"Retrain{status.capitalize()}" for status in FINISHED}
    promoted = RunRecord(
        run_id="r", name="m", trigger="api", status="promoted", metric="f1", metrics={"f1": 0.9},
        champion_metrics={"f1": 0.8},
    )  # fmt: skip
    names |= set(score_metrics(promoted))
    return names


# ------------------------------------------------------------------------------------------- IAM


def test_each_role_allows_exactly_what_its_function_needs(cfn: dict[str, Any]) -> None:
    # Given the four functions' execution roles with every option on (guard enabled by default)
    resources = cfn["Resources"]
    models, data = f"{BUCKET}/models/*", f"{BUCKET}/data/*"
    aliases_and_status = {f"{BUCKET}/models/penguins/aliases/*", f"{BUCKET}/models/penguins/versions/*/status.json"}
    # When collecting every action and the resources it is allowed on
    # Then predict only reads the models; retrain reads data and models and writes models; admin and the guard
    # write only this model's aliases and status files; each may call only what its work needs
    assert allowed(role_of(resources, "PredictFunction")) == {
        "s3:GetObject": {models},
        "s3:ListBucket": {BUCKET},
        "firehose:PutRecordBatch": {"arn:aws:firehose:us-east-1:123456789012:deliverystream/sklambda-capture"},
    }
    assert allowed(role_of(resources, "RetrainFunction")) == {
        "s3:GetObject": {data, models},
        "s3:PutObject": {f"{BUCKET}/models/penguins/*"},  # its own model only
        "s3:ListBucket": {BUCKET},
        "lambda:InvokeFunction": {
            "Ref:PredictFunctionAliaslive",
            "arn:aws:lambda:us-east-1:123456789012:function:sklambda-retrain",
        },
        "sns:Publish": {"Ref:RetrainOutcomeTopic"},
        # SAM's statement for the on-failure destination of asynchronous invocations
        "sqs:SendMessage": {"GetAtt:RetrainFunctionEventInvokeConfigOnFailureQueue.Arn"},
        # Runs handed to SageMaker: start this stack's state machine, read and stop its jobs and executions
        "states:StartExecution": {"arn:aws:states:us-east-1:123456789012:stateMachine:sklambda-retrain-jobs"},
        "states:StopExecution": {"arn:aws:states:us-east-1:123456789012:execution:sklambda-retrain-jobs:*"},
        "sagemaker:DescribeTrainingJob": {"arn:aws:sagemaker:us-east-1:123456789012:training-job/sklambda-*"},
        "sagemaker:StopTrainingJob": {"arn:aws:sagemaker:us-east-1:123456789012:training-job/sklambda-*"},
    }
    assert allowed(role_of(resources, "AdminFunction")) == {
        "s3:GetObject": {models},
        "s3:ListBucket": {BUCKET},
        "s3:PutObject": aliases_and_status,
        "lambda:InvokeFunction": {"Ref:PredictFunctionAliaslive"},
    }
    assert allowed(role_of(resources, "GuardFunction")) == {
        "s3:GetObject": {models},
        "s3:ListBucket": {BUCKET},
        "s3:PutObject": aliases_and_status,
        "sns:Publish": {"Ref:AlarmTopic"},
        "sqs:SendMessage": {"GetAtt:GuardFunctionEventInvokeConfigOnFailureQueue.Arn"},
    }
    assert allowed(role_of(resources, "PredictPreTrafficFunction")) == {
        "s3:GetObject": {models},
        "s3:ListBucket": {BUCKET},
        "lambda:InvokeFunction": {"arn:aws:lambda:us-east-1:123456789012:function:sklambda-PredictFunction:*"},
        "codedeploy:PutLifecycleEventHookExecutionStatus": {
            "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:"
            "${ServerlessDeploymentApplication}/${PredictFunctionDeploymentGroup}"
        },
    }


def test_no_role_deletes_or_uses_wildcard_actions(cfn: dict[str, Any]) -> None:
    for function_id in FUNCTIONS:
        for action in allowed(role_of(cfn["Resources"], function_id)):
            assert "*" not in action, (function_id, action)
            assert not action.startswith(("s3:Delete", "s3:BypassGovernance", "s3:PutObjectRetention")), action


@pytest.mark.parametrize(
    ("tracing", "managed"), [("Disabled", [BASIC_LOGGING]), ("Active", [BASIC_LOGGING, XRAY_WRITE])]
)
def test_managed_policies_are_basic_logging_plus_xray_only_when_tracing(tracing: str, managed: list[str]) -> None:
    # Given the template transformed with tracing off (the default) or on
    resources = transformed_template(TracingMode=tracing)["Resources"]
    for function_id in FUNCTIONS:
        # Then each role has basic logging, and X-Ray write access only when tracing is Active
        assert role_of(resources, function_id)["Properties"]["ManagedPolicyArns"] == managed, function_id
        # And the function traces exactly then (Lambda's own tracing, no SDK)
        tracing_config = resources[function_id]["Properties"].get("TracingConfig")
        assert tracing_config == ({"Mode": {"Ref": "TracingMode"}} if tracing == "Active" else None), function_id


def test_codedeploy_role_may_move_only_the_predict_alias(cfn: dict[str, Any]) -> None:
    # Given the role the predict function's deployment group uses
    resources = cfn["Resources"]
    group = resources["PredictFunctionDeploymentGroup"]["Properties"]
    assert group["ServiceRoleArn"] == {"Fn::GetAtt": ["PredictDeploymentRole", "Arn"]}
    role = resources["PredictDeploymentRole"]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "codedeploy.amazonaws.com"
    }
    # Then it reads and moves aliases of the predict function only (not any alias in the account), reads alarms
    function = "arn:aws:lambda:us-east-1:123456789012:function:sklambda-PredictFunction"
    assert allowed(role) == {
        "lambda:GetAlias": {function, f"{function}:*"},
        "lambda:UpdateAlias": {function, f"{function}:*"},
        "lambda:GetProvisionedConcurrencyConfig": {function, f"{function}:*"},
        "cloudwatch:DescribeAlarms": {"*"},
        # and runs the pre-traffic check, which has this fixed name
        "lambda:InvokeFunction": {"arn:aws:lambda:us-east-1:123456789012:function:sklambda-pretraffic"},
    }
    assert "ManagedPolicyArns" not in role["Properties"]
    assert resources["PredictPreTrafficFunction"]["Properties"]["FunctionName"] == {
        "Fn::Sub": "${AWS::StackName}-pretraffic"
    }


def test_no_traffic_reaches_a_new_predict_version_before_the_pre_traffic_check_passes(cfn: dict[str, Any]) -> None:
    # Given the `live` alias API Gateway calls
    resources = cfn["Resources"]
    update = resources["PredictFunctionAliaslive"]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    # Then CodeDeploy runs the check before it moves any traffic, and the check calls the version being deployed
    assert update["BeforeAllowTrafficHook"] == {"Ref": "PredictPreTrafficFunction"}
    assert update["DeploymentGroupName"] == {"Ref": "PredictFunctionDeploymentGroup"}
    variables = resources["PredictPreTrafficFunction"]["Properties"]["Environment"]["Variables"]
    version = resources["PredictFunctionAliaslive"]["Properties"]["FunctionVersion"]
    assert variables["PREDICT_VERSION"] == {"Ref": version["Fn::GetAtt"][0]}


# ------------------------------------------------------------------------------------------- storage


def test_bucket_is_private_encrypted_versioned_and_tls_only(cfn: dict[str, Any]) -> None:
    # Given the model bucket and its policy
    bucket = cfn["Resources"]["ModelBucket"]
    properties = bucket["Properties"]
    # Then public access is blocked in every way, objects are encrypted and versioned, ACLs are off
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    # And the bucket outlives the stack (models are data, not infrastructure)
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    # And its policy denies every request that does not use TLS, on the bucket and on every object (its other
    # statements, on model writes, are read in tests/template/test_model_integrity.py)
    policy = cfn["Resources"]["ModelBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ModelBucket"}
    (statement,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Sid"] == "DenyInsecureTransport"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "s3:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {render(resource) for resource in statement["Resource"]} == {"GetAtt:ModelBucket.Arn", f"{BUCKET}/*"}


# ------------------------------------------------------------------------------------------- API


def test_every_method_is_throttled_by_the_parameters(cfn: dict[str, Any]) -> None:
    assert throttling_problems(cfn) == []
    assert cfn["Parameters"]["ApiThrottlingRateLimit"]["Default"] == 50
    assert cfn["Parameters"]["ApiThrottlingBurstLimit"]["Default"] == 100


def test_admin_and_retrain_routes_require_sigv4(cfn: dict[str, Any]) -> None:
    # Given every operation of the API
    routes = operations(cfn["Resources"])
    # Then every /admin and /retrain operation requires IAM, declared as SigV4 (10 operations)
    assert unsigned_private_routes(cfn) == []
    assert len([path for path, _ in routes if path.startswith(("/admin", "/retrain"))]) == 10


def test_checks_fail_without_throttling_or_admin_auth() -> None:
    # Given template.yaml with its throttling removed, and with the IAM auth of one admin route removed
    text = (ROOT / "template.yaml").read_text()
    settings = re.search(r"\n      MethodSettings:\n(?:        .*\n)+", text)
    assert settings is not None
    without_throttling = text.replace(settings.group(0), "\n")
    auth = "            Path: /admin/aliases/{alias}/promote\n            Method: post\n            Auth:\n"
    assert auth in text
    without_admin_auth = text.replace(
        auth, "            Path: /admin/aliases/{alias}/promote\n            Method: post\n            AuthOff:\n"
    )
    without_admin_auth = without_admin_auth.replace(
        "            AuthOff:\n              Authorizer: AWS_IAM\n              InvokeRole: NONE\n", ""
    )
    # When the checks above read what SAM makes of them
    throttling = throttling_problems(translate(load_sam_template(without_throttling)))
    unsigned = unsigned_private_routes(translate(load_sam_template(without_admin_auth)))
    # Then they fail: the checks see what they guard
    assert "no default method setting for every resource and method" in throttling
    assert unsigned == ["POST /admin/aliases/{alias}/promote"]


def test_prediction_routes_are_open_by_default_and_need_an_api_key_when_asked(cfn: dict[str, Any]) -> None:
    for required in ("false", "true"):
        # Given the API as CloudFormation deploys it with PredictApiKeyRequired false (default) or true
        parameters = {"PredictApiKeyRequired": required}
        resources = created_resources(cfn, parameters)
        routes = operations(resources)
        # Then /predict, /model and /openapi.json need the stack's API key exactly when asked, /health never
        expected: list[dict[str, list[str]]] = [{"api_key": []}] if required == "true" else []
        for route in PREDICTION_ROUTES:
            assert routes[route].get("security", []) == expected, route
        assert routes[("/health", "get")].get("security", []) == []
        scheme = resources["Api"]["Properties"]["Body"]["components"]["securitySchemes"]["api_key"]
        assert scheme == {"type": "apiKey", "name": "x-api-key", "in": "header"}
        # And a usage plan on this stage holds one generated key (no key value in the template), only then
        key_resources = {"PredictUsagePlan", "PredictApiKey", "PredictUsagePlanKey"}
        assert (key_resources <= set(resources)) == (required == "true")
        assert ("PredictApiKeyId" in resolve_outputs(cfn, parameters)) == (required == "true")
    plan = cfn["Resources"]["PredictUsagePlan"]["Properties"]
    assert plan["ApiStages"] == [{"ApiId": {"Ref": "Api"}, "Stage": {"Ref": "ApiStage"}}]
    assert plan["Throttle"] == {
        "RateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "BurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }
    assert "Value" not in cfn["Resources"]["PredictApiKey"]["Properties"]
    assert cfn["Resources"]["PredictUsagePlanKey"]["Properties"] == {
        "KeyId": {"Ref": "PredictApiKey"},
        "KeyType": "API_KEY",
        "UsagePlanId": {"Ref": "PredictUsagePlan"},
    }


def resolve_outputs(cfn: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The stack's outputs for these parameter values."""
    conditions = condition_values(cfn, parameters)
    return {
        name: output for name, output in cfn["Outputs"].items() if conditions.get(output.get("Condition", ""), True)
    }


@pytest.mark.parametrize("setting", ["off", "on", "on-with-account-role"])
def test_access_logs_are_an_option_and_never_hold_bodies(cfn: dict[str, Any], setting: str) -> None:
    # Given the stage as deployed with ApiAccessLogs off (default), on, or on with the account role created here
    resources = created_resources(cfn, {"ApiAccessLogs": setting})
    stage = resources["ApiStage"]["Properties"]
    if setting == "off":
        # Then no access logs and no log group (a fresh account has no API Gateway CloudWatch role)
        assert "AccessLogSetting" not in stage
        assert "ApiAccessLogGroup" not in resources
        return
    # Then the stage logs to the stack's log group, kept for LogRetentionDays
    assert resources["ApiAccessLogGroup"]["Properties"]["RetentionInDays"] == "30"
    destination = stage["AccessLogSetting"]["DestinationArn"]
    if setting == "on-with-account-role":
        # through the account resource, so that the stage waits for the role
        assert destination == {
            "Fn::Select": [0, [{"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}, {"Ref": "ApiGatewayAccount"}]]
        }
    else:
        assert destination == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    # And each line is JSON naming the request, caller, route, status and latency; never a body or a header value
    line = json.loads(stage["AccessLogSetting"]["Format"])
    assert {"requestId", "ip", "user", "httpMethod", "resourcePath", "status", "responseLatency"} <= set(line)
    assert not [value for value in line.values() if re.search(r"body|input|header", value, re.IGNORECASE)]
    # And the account-level role exists only when asked, and outlives the stack (other APIs may rely on it)
    created = {"ApiGatewayCloudWatchRole", "ApiGatewayAccount"} <= set(resources)
    assert created == (setting == "on-with-account-role")
    if created:
        assert resources["ApiGatewayAccount"]["DeletionPolicy"] == "Retain"
        assert resources["ApiGatewayCloudWatchRole"]["Properties"]["ManagedPolicyArns"] == [
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"}
        ]


@pytest.mark.parametrize("tracing", ["Disabled", "Active"])
def test_api_tracing_follows_the_parameter(cfn: dict[str, Any], tracing: str) -> None:
    stage = created_resources(cfn, {"TracingMode": tracing})["ApiStage"]["Properties"]
    assert stage["TracingEnabled"] is (tracing == "Active")


def test_no_method_logs_data_traces_and_predict_has_its_own_metrics(cfn: dict[str, Any]) -> None:
    # Given the stage's method settings
    settings = cfn["Resources"]["ApiStage"]["Properties"]["MethodSettings"]
    # Then no method ever logs request or reply bodies (API Gateway's data trace)
    assert all(setting["DataTraceEnabled"] is False for setting in settings)
    # And POST /predict has per-method metrics (its alarms do not hear other routes)
    (predict,) = [s for s in settings if s["ResourcePath"] == "/~1predict"]
    assert (predict["HttpMethod"], predict["MetricsEnabled"]) == ("POST", True)


# ------------------------------------------------------------------------------------------- no secrets, no bodies


def test_no_secret_and_no_event_logging_in_any_environment(cfn: dict[str, Any]) -> None:
    for function_id in FUNCTIONS:
        variables = cfn["Resources"][function_id]["Properties"]["Environment"]["Variables"]
        for name, value in variables.items():
            # Names say what they hold; none is a credential
            assert not re.search(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|PRIVATE|API_KEY", name), (function_id, name)
            # Values are references, parameters or short settings, never a literal that could be a secret
            if isinstance(value, str):
                assert len(value) <= 40, (function_id, name)
                assert not re.fullmatch(r"[A-Za-z0-9/+=]{20,}", value), (function_id, name)
        # And Powertools never logs the incoming event (it holds request bodies)
        assert "POWERTOOLS_LOGGER_LOG_EVENT" not in variables, function_id


# ------------------------------------------------------------------------------------------- observability


def test_metrics_are_per_stack(cfn: dict[str, Any]) -> None:
    # Every function's metrics carry the stack name as their `service` dimension, in one namespace
    for function_id in FUNCTIONS:
        variables = cfn["Resources"][function_id]["Properties"]["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == {"Ref": "AWS::StackName"}
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Sklambda"


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or those of its metric math."""
    properties = alarm["Properties"]
    if "Metrics" in properties:
        return [query["MetricStat"]["Metric"] for query in properties["Metrics"] if "MetricStat" in query]
    return [{key: properties[key] for key in ("Namespace", "MetricName", "Dimensions")}]


def test_alarms_watch_what_the_code_and_services_emit(cfn: dict[str, Any]) -> None:
    # Given the alarms
    resources = cfn["Resources"]
    alarms = {key: value for key, value in resources.items() if value["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == set(ALL_ALARMS)
    emitted = emitted_metric_names()
    for logical_id, alarm in alarms.items():
        properties = alarm["Properties"]
        # Then each is named after the stack and tells the alarm topic
        assert properties["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), logical_id
        assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
        assert properties["TreatMissingData"] == "notBreaching", logical_id
        for metric in alarm_metrics(alarm):
            dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            if metric["Namespace"] == "Sklambda":
                # And our own metrics are ones the code emits, with the one dimension Powertools gives them
                assert metric["MetricName"] in emitted, (logical_id, metric["MetricName"])
                assert dimensions == {"service": {"Ref": "AWS::StackName"}}, logical_id
            elif metric["Namespace"] == "AWS/ApiGateway":
                # And API metrics are this stack's API and stage, POST /predict only
                assert dimensions == {
                    "ApiName": {"Ref": "AWS::StackName"},
                    "Stage": {"Ref": "StageName"},
                    "Method": "POST",
                    "Resource": "/predict",
                }, logical_id
            else:
                assert metric["Namespace"] in {"AWS/Lambda", "AWS/SQS", "AWS/States"}, logical_id
    # And the API's name is the ApiName dimension they use
    assert resources["Api"]["Properties"]["Name"] == {"Ref": "AWS::StackName"}


def test_serving_alarm_thresholds_come_from_parameters(cfn: dict[str, Any]) -> None:
    resources = cfn["Resources"]
    five_xx = resources["Predict5xxAlarm"]["Properties"]
    assert five_xx["Threshold"] == {"Ref": "AlarmPredict5xxPercent"}
    (rate,) = [query for query in five_xx["Metrics"] if query.get("ReturnData", True)]
    assert rate["Expression"] == "100 * errors"
    (errors,) = [query for query in five_xx["Metrics"] if "MetricStat" in query]
    assert (errors["Id"], errors["MetricStat"]["Metric"]["MetricName"], errors["MetricStat"]["Stat"]) == (
        "errors",
        "5XXError",
        "Average",
    )
    latency = resources["PredictLatencyAlarm"]["Properties"]
    assert (latency["ExtendedStatistic"], latency["Threshold"]) == ("p99", {"Ref": "AlarmPredictLatencyP99Ms"})
    assert resources["ModelLoadRefusedAlarm"]["Properties"]["MetricName"] == "ModelLoadRefused"
    assert resources["PredictErrorsAlarm"]["Properties"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": "PredictFunction"}}
    ]
    assert resources["RetrainFailedAlarm"]["Properties"]["MetricName"] == "RetrainFailed"
    queues = {
        query["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for query in resources["RetrainDeadLettersAlarm"]["Properties"]["Metrics"]
        if "MetricStat" in query
    }
    assert queues == {"RetrainFunctionEventInvokeConfigOnFailureQueue", "RetrainFunctionScheduleQueue"}


def test_alarm_topic_takes_only_this_accounts_alarms_over_tls(cfn: dict[str, Any]) -> None:
    policy = cfn["Resources"]["AlarmTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "AlarmTopic"}]
    allow, deny = policy["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert (deny["Effect"], deny["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})


def dashboard(cfn: dict[str, Any]) -> dict[str, Any]:
    body = cfn["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = {"AWS::StackName": "sklambda", "AWS::Region": "us-east-1", "StageName": "v1"}
    filled = re.sub(r"\$\{([^}]+)\}", lambda match: names.get(match.group(1), f"<{match.group(1)}>"), body)
    parsed: dict[str, Any] = json.loads(filled)
    return parsed


def test_dashboard_shows_traffic_latency_errors_model_and_retraining(cfn: dict[str, Any]) -> None:
    # Given the dashboard body, with the names CloudFormation substitutes
    widgets = dashboard(cfn)["widgets"]
    titles = [widget["properties"].get("title", "") for widget in widgets]
    # Then it has the graphs an operator needs
    for wanted in ("Requests", "errors", "latency", "Predictions per class", "model version", "Retrain outcomes"):
        assert any(wanted.lower() in title.lower() for title in titles), wanted
    assert any("Champion score" in title for title in titles)
    graphs = [widget["properties"] for widget in widgets if widget["type"] == "metric"]
    metrics = [row for graph in graphs for row in graph["metrics"]]
    stats = {row[-1].get("stat") for row in metrics if isinstance(row[-1], dict)}
    assert {"p50", "p99"} <= stats
    emitted = emitted_metric_names()
    for row in metrics:
        if isinstance(row[0], dict):
            # Per-class counts and per-column PSI by a search: one Predicted_<class> / Psi_<column> metric each
            assert re.search(r"MetricName=(Predicted|Psi_)", row[0]["expression"])
            assert 'service="sklambda"' in row[0]["expression"]
            continue
        namespace, name, *rest = row
        if rest and isinstance(rest[-1], dict):
            rest = rest[:-1]
        dimensions = dict(zip(rest[0::2], rest[1::2], strict=True))
        if namespace == "Sklambda":
            # And every metric of ours on it is one the code emits, for this stack
            assert name in emitted, name
            assert dimensions.get("service") == "sklambda", name
        elif namespace == "AWS/ApiGateway":
            assert (dimensions["ApiName"], dimensions["Stage"]) == ("sklambda", "v1"), name
    # And the alarm widget shows the alarms (ARNs of the template's alarms)
    (alarm_widget,) = [widget for widget in widgets if widget["type"] == "alarm"]
    assert {arn.strip("<>").removesuffix(".Arn") for arn in alarm_widget["properties"]["alarms"]} >= set(SERVING_ALARMS)


# ------------------------------------------------------------------------------------------- safe rollouts


def test_predict_rolls_out_by_canary_watched_by_the_serving_alarms(cfn: dict[str, Any]) -> None:
    resources = cfn["Resources"]
    # Given the predict function's alias and deployment group
    alias = resources["PredictFunctionAliaslive"]
    group = resources["PredictFunctionDeploymentGroup"]["Properties"]
    # Then API Gateway calls the `live` alias, which CodeDeploy moves
    assert alias["Properties"]["Name"] == "live"
    assert alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"] == {
        "Ref": "PredictFunctionDeploymentGroup"
    }
    predict = operations(resources)[("/predict", "post")]["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
    assert "${PredictFunctionAliaslive}" in predict
    # And by the deployment type parameter (a canary by default), rolled back on any serving alarm
    assert group["DeploymentConfigName"] == {
        "Fn::Sub": ["CodeDeployDefault.Lambda${ConfigName}", {"ConfigName": "Canary10Percent5Minutes"}]
    }
    assert group["AlarmConfiguration"] == {
        "Enabled": True,
        "Alarms": [{"Name": {"Ref": alarm}} for alarm in SERVING_ALARMS],
    }
    assert set(group["AutoRollbackConfiguration"]["Events"]) >= {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"}
    # And the self-tests (retrain gate, admin promotions) run on the code that serves: the alias
    for function_id in ("RetrainFunction", "AdminFunction"):
        variables = resources[function_id]["Properties"]["Environment"]["Variables"]
        assert variables["PREDICT_FUNCTION_NAME"] == {"Ref": "PredictFunctionAliaslive"}, function_id


def test_a_changed_memory_or_warm_start_publishes_a_new_version(cfn: dict[str, Any]) -> None:
    # SAM names the version before parameter values are known; its description carries them, and CloudFormation
    # replaces (publishes) a version whose description changed
    (version,) = [value for key, value in cfn["Resources"].items() if key.startswith("PredictFunctionVersion")]
    description = version["Properties"]["Description"]["Fn::Sub"]
    assert "${PredictMemorySize}" in description
    assert "${PredictWarmStart}" in description


@pytest.mark.parametrize("warm_start", ["none", "snapstart", "provisioned"])
def test_warm_start_is_snapstart_or_provisioned_concurrency_never_both(cfn: dict[str, Any], warm_start: str) -> None:
    resources = created_resources(cfn, {"PredictWarmStart": warm_start, "PredictProvisionedConcurrency": "3"})
    function = resources["PredictFunction"]["Properties"]
    alias = resources["PredictFunctionAliaslive"]["Properties"]
    assert ("SnapStart" in function) == (warm_start == "snapstart")
    assert ("ProvisionedConcurrencyConfig" in alias) == (warm_start == "provisioned")
    if warm_start == "snapstart":
        assert function["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    if warm_start == "provisioned":
        assert alias["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": "3"}


def test_capacity_knobs_are_parameters(cfn: dict[str, Any]) -> None:
    default = created_resources(cfn)
    sized = created_resources(
        cfn, {"PredictMemorySize": "2048", "RetrainMemorySize": "6144", "PredictReservedConcurrency": "20"}
    )
    assert default["PredictFunction"]["Properties"]["MemorySize"] == "1024"
    assert default["RetrainFunction"]["Properties"]["MemorySize"] == "3008"
    assert "ReservedConcurrentExecutions" not in default["PredictFunction"]["Properties"]
    assert sized["PredictFunction"]["Properties"]["MemorySize"] == "2048"
    assert sized["RetrainFunction"]["Properties"]["MemorySize"] == "6144"
    assert sized["PredictFunction"]["Properties"]["ReservedConcurrentExecutions"] == "20"
    # Architecture: x86_64 only (the layers are built from x86_64 wheels before any parameter is known)
    assert cfn["Parameters"]["Architecture"]["AllowedValues"] == ["x86_64"]
    for resource in cfn["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            assert resource["Properties"]["Architectures"] == [{"Ref": "Architecture"}]
        if resource["Type"] == "AWS::Lambda::LayerVersion":
            assert resource["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]


# ------------------------------------------------------------------------------------------- promotion guard


def test_guard_hears_the_serving_alarms_going_to_alarm(cfn: dict[str, Any]) -> None:
    # Given the guard's rule as deployed in stack "sklambda"
    pattern = guard_event_pattern(cfn, stack="sklambda", account="123456789012", region="us-east-1")
    # Then it matches CloudWatch's state changes of the four serving alarms to ALARM, and nothing else
    assert pattern == {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "resources": [
            alarm_arn(cfn, alarm, stack="sklambda", account="123456789012", region="us-east-1")
            for alarm in SERVING_ALARMS
        ],
        "detail": {"state": {"value": ["ALARM"]}},
    }
    # And the sample event (events/alarm-state-change.json) is one of them
    event = json.loads((ROOT / "events" / "alarm-state-change.json").read_text())
    assert event["resources"][0] in pattern["resources"]
    assert event["detail"]["alarmName"] == "sklambda-Predict5xx"


def test_guard_watch_window_and_topic(cfn: dict[str, Any]) -> None:
    parameter = cfn["Parameters"]["PromotionWatchMinutes"]
    assert parameter["Default"] == 60
    # Every allowed number of minutes maps to that many seconds (CloudFormation cannot multiply)
    for minutes in parameter["AllowedValues"]:
        assert cfn["Mappings"]["PromotionWatch"][str(minutes)]["Seconds"] == minutes * 60
    for minutes, created in (("0", False), ("15", True), ("60", True)):
        resources = created_resources(cfn, {"PromotionWatchMinutes": minutes})
        assert ("GuardFunction" in resources) == created
        assert ("GuardFailedAlarm" in resources) == created
        if created:
            variables = resources["GuardFunction"]["Properties"]["Environment"]["Variables"]
            assert variables["PROMOTION_WATCH_SECONDS"] == int(minutes) * 60
            assert variables["ALARM_TOPIC_ARN"] == {"Ref": "AlarmTopic"}
            assert variables["MODEL_NAME"] == "penguins"


def test_guard_failures_are_kept_and_alarmed(cfn: dict[str, Any]) -> None:
    resources = cfn["Resources"]
    config = resources["GuardFunctionEventInvokeConfig"]["Properties"]
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["GuardFunctionEventInvokeConfigOnFailureQueue", "Arn"]
    }
    assert resources["GuardFunctionEventInvokeConfigOnFailureQueue"]["Type"] == "AWS::SQS::Queue"
    assert resources["GuardFailedAlarm"]["Properties"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": "GuardFunction"}}
    ]


# ------------------------------------------------------------------------------------------- the template's own hygiene


def test_every_checkov_skip_carries_its_reason(sam_template: dict[str, Any]) -> None:
    skips = 0
    for name, resource in sam_template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), name
            assert len(skip.get("comment", "")) > 40, (name, skip["id"])
            skips += 1
    assert skips > 0


def test_every_parameter_is_in_exactly_one_group(sam_template: dict[str, Any]) -> None:
    groups = sam_template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    assert sorted(grouped) == sorted(sam_template["Parameters"])


def test_every_created_resource_resolves_for_every_option(cfn: dict[str, Any]) -> None:
    # Each parameter's allowed values (numbers at a few values) give a template whose references all exist
    options: list[dict[str, str]] = [
        {"PredictApiKeyRequired": "true", "ApiAccessLogs": "on-with-account-role", "TracingMode": "Active"},
        {"PredictWarmStart": "provisioned", "PromotionWatchMinutes": "0", "AlarmNotificationEmail": "a@b.c"},
        {"PredictWarmStart": "snapstart", "ServingRuntime": "sklearn", "ObjectLockRetentionDays": "30"},
    ]
    for parameters in options:
        resources = created_resources(cfn, parameters)
        referenced = _references(resources)
        known = set(resources) | set(cfn["Parameters"])
        assert referenced - known - {"AWS::StackName", "AWS::Region", "AWS::AccountId", "AWS::Partition"} == set(), (
            parameters
        )


def _references(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            found.add(value["Ref"])
        elif set(value) == {"Fn::GetAtt"}:
            found.add(value["Fn::GetAtt"][0])
        elif set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            local = set(value["Fn::Sub"][1]) if isinstance(value["Fn::Sub"], list) else set()
            found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)} - local
            if isinstance(value["Fn::Sub"], list):
                found |= _references(value["Fn::Sub"][1])
        else:
            for item in value.values():
                found |= _references(item)
    elif isinstance(value, list):
        for item in value:
            found |= _references(item)
    return found
