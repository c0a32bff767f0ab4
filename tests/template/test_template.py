"""The SAM template, transformed to CloudFormation offline: resources, routes, schedule, bucket, layers, IAM."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_file
from cfnlint.config import ManualArgs

from tests.template.conftest import condition_values, resolve_if

pytestmark = pytest.mark.template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

EXPECTED_ROUTES = {
    ("/predict", "post"): "PredictFunction",
    ("/health", "get"): "PredictFunction",
    ("/model", "get"): "PredictFunction",
    ("/openapi.json", "get"): "PredictFunction",
    ("/retrain", "post"): "RetrainFunction",
    ("/admin/versions", "get"): "AdminFunction",
    ("/admin/versions/{version}", "get"): "AdminFunction",
    ("/admin/versions/{version}/diff/{other}", "get"): "AdminFunction",
    ("/admin/aliases/{alias}", "get"): "AdminFunction",
    ("/admin/aliases/{alias}/promote", "post"): "AdminFunction",
    ("/admin/aliases/{alias}/rollback", "post"): "AdminFunction",
    ("/retrain", "get"): "RetrainFunction",
    ("/retrain/{run_id}", "get"): "RetrainFunction",
    ("/retrain/{run_id}/stop", "post"): "RetrainFunction",
    ("/feedback", "post"): "FeedbackFunction",
}
RETRAIN_ROUTES = [
    ("/retrain", "post"),
    ("/retrain", "get"),
    ("/retrain/{run_id}", "get"),
    ("/retrain/{run_id}/stop", "post"),
]


def _of_type(resources: dict[str, Any], cfn_type: str) -> dict[str, Any]:
    return {key: value for key, value in resources.items() if value["Type"] == cfn_type}


def _s3_actions(statements: list[dict[str, Any]]) -> set[str]:
    return {action for statement in statements if statement["Effect"] == "Allow" for action in statement["Action"]}


def _rendered_resources(statements: list[dict[str, Any]], action: str, render: Any) -> set[str | None]:
    return {
        render(resource)
        for statement in statements
        if statement["Effect"] == "Allow" and action in statement["Action"]
        for resource in statement["Resource"]
    }


# ------------------------------------------------------------------------------------------- resources


def test_resources_exist_with_their_types(resources: dict[str, Any]) -> None:
    # Given the transformed template
    # When looking up the resources by logical id
    # Then each exists with the CloudFormation type we expect
    expected = {
        "Api": "AWS::ApiGateway::RestApi",
        "PredictFunction": "AWS::Lambda::Function",
        "RetrainFunction": "AWS::Lambda::Function",
        "ModelBucket": "AWS::S3::Bucket",
        "ModelBucketPolicy": "AWS::S3::BucketPolicy",
        "PredictFunctionLogGroup": "AWS::Logs::LogGroup",
        "RetrainFunctionLogGroup": "AWS::Logs::LogGroup",
        "RetrainFunctionSchedule": "AWS::Events::Rule",
    }
    assert {key: resources[key]["Type"] for key in expected if key in resources} == expected
    layers = {key[:-10] for key in _of_type(resources, "AWS::Lambda::LayerVersion")}
    assert layers == {
        "SharedCodeLayer",
        "TrainingCodeLayer",
        "ServingDepsLayer",
        "ServingSklearnDepsLayer",
        "TrainingDepsLayer",
    }


def test_functions_use_python312_x86_with_the_agreed_sizes(cfn: dict[str, Any], resources: dict[str, Any]) -> None:
    # Given both functions
    predict, retrain = resources["PredictFunction"]["Properties"], resources["RetrainFunction"]["Properties"]
    # When reading runtime, architecture, handler, timeout and memory
    # Then they match the Lambda runtime the layers are built for and the agreed limits (memory by parameter)
    for properties in (predict, retrain):
        assert properties["Runtime"] == "python3.12"
        assert properties["Architectures"] == [{"Ref": "Architecture"}]
        assert properties["Handler"] == "app.lambda_handler"
    assert (predict["Timeout"], predict["MemorySize"]) == (10, {"Ref": "PredictMemorySize"})
    assert (retrain["Timeout"], retrain["MemorySize"]) == (900, {"Ref": "RetrainMemorySize"})
    parameters = cfn["Parameters"]
    assert (parameters["PredictMemorySize"]["Default"], parameters["RetrainMemorySize"]["Default"]) == (1024, 3008)
    assert parameters["Architecture"]["AllowedValues"] == ["x86_64"]
    assert predict["Code"]["S3Key"] == "functions/predict"
    assert retrain["Code"]["S3Key"] == "functions/retrain"


# ------------------------------------------------------------------------------------------- API


def test_api_has_exactly_the_routes_mapped_to_their_functions(resources: dict[str, Any]) -> None:
    # Given the explicit REST API's OpenAPI body
    paths = resources["Api"]["Properties"]["Body"]["paths"]
    # When listing every (path, method) and the function its Lambda proxy integration invokes
    routes = {}
    for path, methods in paths.items():
        for method, operation in methods.items():
            integration = operation["x-amazon-apigateway-integration"]
            assert integration["type"] == "aws_proxy"
            (function_id,) = re.findall(r"\$\{(\w+?)(?:\.Arn|Aliaslive)\}", integration["uri"]["Fn::Sub"])
            routes[(path, method)] = function_id
    # Then the routes are exactly the agreed ones, each on the right function
    assert routes == EXPECTED_ROUTES


def test_every_route_has_an_invoke_permission_for_api_gateway(resources: dict[str, Any]) -> None:
    # Given the Lambda permissions SAM generated
    permissions = _of_type(resources, "AWS::Lambda::Permission").values()
    # When keeping those for API Gateway
    from_api = [p["Properties"] for p in permissions if p["Properties"]["Principal"] == "apigateway.amazonaws.com"]
    # Then each route's function may be invoked by this API on that method and path, and nothing else is allowed
    allowed = {}
    # SAM writes a path parameter as "*" in the permission's source ARN.
    expected = {
        (re.sub(r"\{\w+\}", "*", path), method): function for (path, method), function in EXPECTED_ROUTES.items()
    }
    for permission in from_api:
        arn_template, names = permission["SourceArn"]["Fn::Sub"]
        assert names["__ApiId__"] == {"Ref": "Api"}
        match = re.fullmatch(r".*\$\{__Stage__\}/([A-Z]+)(/.*)", arn_template)
        assert match, arn_template
        method, path = match.groups()
        # The predict function is called through its `live` alias (AutoPublishAlias)
        allowed[(path, method.lower())] = permission["FunctionName"]["Ref"].removesuffix("Aliaslive")
    assert allowed == expected


def test_retrain_route_requires_iam_auth_and_does_not_use_caller_credentials(resources: dict[str, Any]) -> None:
    # Given the retrain operations: start a run, list runs, read one run
    body = resources["Api"]["Properties"]["Body"]
    for path, method in RETRAIN_ROUTES:
        operation = body["paths"][path][method]
        # When reading its security and integration
        # Then only SigV4-signed callers get through, and API Gateway invokes through the resource policy
        assert operation["security"] == [{"AWS_IAM": []}], (path, method)
        assert "credentials" not in operation["x-amazon-apigateway-integration"]
    # And the prediction routes need no signature: open by default, or an API key (PredictApiKeyRequired)
    for path in ("/predict", "/health", "/model", "/openapi.json"):
        security = next(iter(body["paths"][path].values())).get("security", [])
        assert security in ([], {"Fn::If": ["PredictRequiresApiKey", [{"api_key": []}], []]}), path


def test_api_has_one_stage_named_by_parameter_with_default_throttling(resources: dict[str, Any]) -> None:
    # Given the API Gateway stages
    stages = _of_type(resources, "AWS::ApiGateway::Stage")
    # When looking at them
    # Then there is exactly one (no stray "Stage" stage), named by the StageName parameter
    assert list(stages) == ["ApiStage"]
    stage = stages["ApiStage"]["Properties"]
    assert stage["StageName"] == {"Ref": "StageName"}
    # And every method defaults to the throttling parameters
    default = [s for s in stage["MethodSettings"] if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    assert default == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
            "DataTraceEnabled": False,
        }
    ]


# ------------------------------------------------------------------------------------------- schedule


def test_schedule_rule_uses_the_parameter_and_targets_retrain(cfn: dict[str, Any], resources: dict[str, Any]) -> None:
    # Given the EventBridge rule generated from the retrain function's Schedule event
    rule = resources["RetrainFunctionSchedule"]["Properties"]
    # When reading its expression, state and targets
    # Then it runs on the RetrainSchedule parameter, enabled by RetrainScheduleEnabled
    assert rule["ScheduleExpression"] == {"Ref": "RetrainSchedule"}
    assert rule["State"] == {"Fn::If": ["IsRetrainScheduleEnabled", "ENABLED", "DISABLED"]}
    assert cfn["Conditions"]["IsRetrainScheduleEnabled"] == {"Fn::Equals": [{"Ref": "RetrainScheduleEnabled"}, "true"]}
    # And its only target is the retrain function, which receives EventBridge's own event
    # (the shape of events/retrain-schedule.json)
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["RetrainFunction", "Arn"]}
    assert "Input" not in target
    assert "Arn" in target["DeadLetterConfig"]


def test_scheduled_runs_are_not_retried_and_failures_are_kept(resources: dict[str, Any], role_statements: Any) -> None:
    # Given the retrain function's asynchronous invoke configuration
    properties = resources["RetrainFunctionEventInvokeConfig"]["Properties"]
    # When reading it
    # Then a failed run (up to 15 minutes) is not retried automatically, an event older than the run lock's
    # 960 s is not run late, and a failed or expired event goes to an SQS queue the function may write to
    assert properties["FunctionName"] == {"Ref": "RetrainFunction"}
    assert properties["MaximumRetryAttempts"] == 0
    assert properties["MaximumEventAgeInSeconds"] <= 960
    # And it covers the unqualified self-invocation that POST /retrain makes (which runs $LATEST)
    assert properties["Qualifier"] == "$LATEST"
    destination = properties["DestinationConfig"]["OnFailure"]["Destination"]
    (queue_id, _) = destination["Fn::GetAtt"]
    assert resources[queue_id]["Type"] == "AWS::SQS::Queue"
    sends = [s for s in role_statements("RetrainFunction") if "sqs:SendMessage" in s["Action"]]
    assert [s["Resource"] for s in sends] == [[{"Fn::GetAtt": [queue_id, "Arn"]}]]


def test_run_outcomes_go_to_an_encrypted_topic_only_retrain_may_publish_to(
    resources: dict[str, Any], role_statements: Any, cfn: dict[str, Any]
) -> None:
    # Given the outcome topic
    topic = resources["RetrainOutcomeTopic"]
    assert topic["Type"] == "AWS::SNS::Topic"
    assert topic["Properties"]["KmsMasterKeyId"] == "alias/aws/sns"
    # When reading who may publish and where the function finds it
    retrain_publish = [s for s in role_statements("RetrainFunction") if "sns:Publish" in s["Action"]]
    predict_publish = [s for s in role_statements("PredictFunction") if "sns:Publish" in s["Action"]]
    # Then retrain publishes to exactly this topic (named by RETRAIN_TOPIC_ARN) and predict not at all
    assert [s["Resource"] for s in retrain_publish] == [[{"Ref": "RetrainOutcomeTopic"}]]
    assert predict_publish == []
    variables = resources["RetrainFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["RETRAIN_TOPIC_ARN"] == {"Ref": "RetrainOutcomeTopic"}
    # And an e-mail subscription exists only when an address is given
    subscription = resources["RetrainOutcomeEmailSubscription"]
    assert subscription["Condition"] == "HasRetrainNotificationEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "RetrainNotificationEmail"}
    assert cfn["Outputs"]["RetrainOutcomeTopicArn"]["Value"] == {"Ref": "RetrainOutcomeTopic"}


# ------------------------------------------------------------------------------------------- bucket


def test_model_bucket_is_versioned_encrypted_private_and_retained(resources: dict[str, Any]) -> None:
    # Given the model bucket
    bucket = resources["ModelBucket"]
    properties = bucket["Properties"]
    # When reading its configuration
    # Then versioning is on, objects are encrypted at rest, public access is blocked four ways, ACLs are off
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    # And deleting or replacing the stack keeps the models
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"


def test_bucket_policy_denies_requests_without_tls(resources: dict[str, Any], render: Any, fake: Any) -> None:
    # Given the bucket policy
    policy = resources["ModelBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ModelBucket"}
    # When looking for the deny on aws:SecureTransport = false
    denies = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    # Then it covers every action on the bucket and all its objects, for everyone
    assert len(denies) == 1
    deny = denies[0]
    assert deny["Principal"] == "*"
    assert deny["Action"] in ("s3:*", ["s3:*"])
    targets = {
        render(r) if not (isinstance(r, dict) and "Fn::GetAtt" in r) else r["Fn::GetAtt"][0] for r in deny["Resource"]
    }
    assert targets == {"ModelBucket", f"arn:aws:s3:::{fake.bucket}/*"}


# ------------------------------------------------------------------------------------------- layers


def test_each_function_gets_only_its_layers(layer_names: Any) -> None:
    # Given the two functions with the default parameters (ServingRuntime onnx)
    # When resolving their layers to the template's names
    predict, retrain = layer_names("PredictFunction"), layer_names("RetrainFunction")
    # Then prediction has our shared code and the ONNX serving dependencies, never training code or dependencies
    assert predict == {"SharedCodeLayer", "ServingDepsLayer"}
    assert not predict & {"TrainingCodeLayer", "TrainingDepsLayer"}
    # And retraining has the shared code, the training package and the training dependencies
    assert retrain == {"SharedCodeLayer", "TrainingCodeLayer", "TrainingDepsLayer"}


def test_serving_runtime_picks_the_layers_and_tells_the_function(
    cfn: dict[str, Any], resources: dict[str, Any], layer_names: Any
) -> None:
    # Given the ServingRuntime parameter (onnx by default, sklearn for pipelines that do not convert)
    parameter = cfn["Parameters"]["ServingRuntime"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("onnx", ["onnx", "sklearn"])
    # When the template is resolved for each value
    onnx, sklearn = layer_names("PredictFunction"), layer_names("PredictFunction", ServingRuntime="sklearn")
    # Then onnx gets ONNX Runtime and no scikit-learn; sklearn gets the scikit-learn layer instead, not both
    assert onnx == {"SharedCodeLayer", "ServingDepsLayer"}
    assert sklearn == {"SharedCodeLayer", "ServingSklearnDepsLayer"}
    # And the scikit-learn layer is created only when chosen (ServingDepsLayer always: the admin function uses it)
    for runtime, onnx_layer, sklearn_layer in (("onnx", True, False), ("sklearn", False, True)):
        conditions = condition_values(cfn, {"ServingRuntime": runtime})
        assert conditions["UsesSklearnRuntime"] == sklearn_layer != onnx_layer
    layer_conditions = {
        key.rstrip("0123456789abcdef"): resource.get("Condition")
        for key, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::LayerVersion" and "Serving" in key
    }
    assert layer_conditions == {"ServingDepsLayer": None, "ServingSklearnDepsLayer": "UsesSklearnRuntime"}
    # And the function is told which runtime it has (SERVING_RUNTIME), and the retrain function is not affected
    env = resources["PredictFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SERVING_RUNTIME"] == {"Ref": "ServingRuntime"}
    assert layer_names("RetrainFunction", ServingRuntime="sklearn") == layer_names("RetrainFunction")


def test_sklearn_layer_ships_scikit_learn_and_no_onnxruntime() -> None:
    # Given the scikit-learn serving layer's requirements
    text = (ROOT / "layers" / "serving-sklearn" / "requirements.txt").read_text()
    names = {line.split("==")[0].strip().lower() for line in text.splitlines() if "==" in line}
    # Then it can unpickle and run a pipeline (scikit-learn, pandas, joblib) and has no ONNX Runtime
    assert {"scikit-learn", "scipy", "pandas", "joblib", "numpy", "aws-lambda-powertools", "orjson"} <= names
    assert "onnxruntime" not in names


def test_unknown_fields_setting_defaults_to_the_contract(cfn: dict[str, Any], resources: dict[str, Any]) -> None:
    # Given the AllowUnknownFields parameter and the predict function's environment
    parameter = cfn["Parameters"]["AllowUnknownFields"]
    env = resources["PredictFunction"]["Properties"]["Environment"]["Variables"]
    # When resolved for each value
    # Then "contract" leaves the variable empty (the model's contract decides), true/false pass through
    assert (parameter["Default"], parameter["AllowedValues"]) == ("contract", ["contract", "true", "false"])
    for value, expected in (("contract", ""), ("true", {"Ref": "AllowUnknownFields"})):
        conditions = condition_values(cfn, {"AllowUnknownFields": value})
        assert resolve_if(env["ALLOW_UNKNOWN_FIELDS"], conditions) == expected


def test_model_details_are_full_only_behind_the_api_key(cfn: dict[str, Any], resources: dict[str, Any]) -> None:
    # Given the predict function's environment
    env = resources["PredictFunction"]["Properties"]["Environment"]["Variables"]
    # Then an open API (the default) publishes the contract only, one behind an API key everything
    for required, expected in (("false", "contract"), ("true", "full")):
        conditions = condition_values(cfn, {"PredictApiKeyRequired": required})
        assert resolve_if(env["MODEL_DETAILS"], conditions) == expected


@pytest.mark.parametrize(
    ("layer", "content", "build_method"),
    [
        ("SharedCodeLayer", "layers/shared", "makefile"),
        ("ServingDepsLayer", "layers/serving", "makefile"),
        ("TrainingDepsLayer", "layers/training", "makefile"),
        ("ServingSklearnDepsLayer", "layers/serving-sklearn", "makefile"),
        ("TrainingCodeLayer", "training", "makefile"),
    ],
)
def test_layer_is_built_for_python312_from_its_folder(
    sam_template: dict[str, Any], layer: str, content: str, build_method: str
) -> None:
    # Given a layer as written in template.yaml
    resource = sam_template["Resources"][layer]
    properties = resource["Properties"]
    # When reading where it is built from and how
    # Then it is built from its folder by the agreed method, for python3.12, and old versions are deleted
    assert resource["Type"] == "AWS::Serverless::LayerVersion"
    assert properties["ContentUri"] == content
    assert resource["Metadata"]["BuildMethod"] == build_method
    assert properties["CompatibleRuntimes"] == ["python3.12"]
    assert properties["RetentionPolicy"] == "Delete"
    assert (ROOT / content).is_dir()


def test_shared_layer_makefile_ships_every_module_of_the_folder_with_its_pyc(tmp_path: Path) -> None:
    # Given the folder as sam build copies it to a scratch directory, with a data scientist's own module and
    # package next to ours (docs/training.md tells them to put custom pipeline code there)
    scratch = tmp_path / "scratch"
    shutil.copytree(ROOT / "layers" / "shared", scratch, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (scratch / "churn_model.py").write_text("def build():\n    return 1\n")
    (scratch / "own_features").mkdir()
    (scratch / "own_features" / "__init__.py").write_text("RATIO = 2\n")
    artifacts = tmp_path / "artifacts"
    # When make runs the layer's target there, naming the checkout's Makefile (as BuildMethod makefile does)
    subprocess.run(
        ["make", "--makefile", str(ROOT / "layers" / "shared" / "Makefile"), "build-SharedCodeLayer",
         f"ARTIFACTS_DIR={artifacts}"],
        cwd=scratch, check=True, capture_output=True,
    )  # fmt: skip
    # Then every module is under python/ with an unchecked-hash .pyc naming its /opt/python path, and the build
    # files are not
    shipped = artifacts / "python"
    for module in ("sklambda/store.py", "sklambda_examples/__init__.py", "churn_model.py", "own_features/__init__.py"):
        source = shipped / module
        assert source.is_file(), module
        (compiled,) = (source.parent / "__pycache__").glob(f"{source.stem}.cpython-312.pyc")
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{module}: not an unchecked-hash .pyc"
        assert f"/opt/python/{module}".encode() in compiled.read_bytes()
    assert not (shipped / "Makefile").exists()
    assert not (shipped / "requirements.txt").exists()


def test_training_layer_makefile_has_the_build_target() -> None:
    # Given training/Makefile (BuildMethod makefile runs `make build-<LogicalId>`)
    makefile = (ROOT / "training" / "Makefile").read_text()
    # When looking for the target
    # Then it exists and installs the package under python/training in the layer
    assert "\nbuild-TrainingCodeLayer:" in makefile
    assert "$(ARTIFACTS_DIR)/python/training" in makefile
    assert "rm -rf data" in makefile


# ------------------------------------------------------------------------------------------- IAM


def test_predict_role_may_only_read_and_list_the_models_prefix(
    resources: dict[str, Any], role_statements: Any, render: Any, fake: Any
) -> None:
    # Given the predict function's execution role
    role_id = resources["PredictFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = role_statements("PredictFunction")
    # When collecting what it allows
    # Then it only reads objects under models/ and lists only under models/ (and sends captures to Firehose)
    assert _s3_actions(statements) - {"firehose:PutRecordBatch"} == {"s3:GetObject", "s3:ListBucket"}
    assert _rendered_resources(statements, "s3:GetObject", render) == {f"arn:aws:s3:::{fake.bucket}/models/*"}
    assert _rendered_resources(statements, "s3:ListBucket", render) == {f"arn:aws:s3:::{fake.bucket}"}
    # ListBucket is unconditioned on purpose (S3 then answers 404, not 403, for a missing key: see template.yaml)
    # And the only managed policy is basic logging (no X-Ray, no S3 managed policies)
    managed = resources[role_id]["Properties"].get("ManagedPolicyArns", [])
    assert managed == ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]


def test_no_role_may_write_to_predict_or_delete_anywhere(role_statements: Any) -> None:
    # Given both functions' statements
    predict, retrain = role_statements("PredictFunction"), role_statements("RetrainFunction")
    # When looking for write, delete or wildcard actions
    # Then predict has no write at all, and nobody may delete or use wildcards
    assert not [a for a in _s3_actions(predict) if a.startswith(("s3:Put", "s3:Delete", "s3:Restore", "s3:Copy"))]
    for action in _s3_actions(predict) | _s3_actions(retrain):
        assert "*" not in action, action
        assert not action.startswith("s3:Delete"), action


def test_retrain_role_reads_data_and_models_and_writes_only_models(
    role_statements: Any, render: Any, fake: Any
) -> None:
    # Given the retrain function's statements
    statements = role_statements("RetrainFunction")
    s3_statements = [s for s in statements if any(a.startswith("s3:") for a in s["Action"])]
    # When collecting its S3 permissions
    # Then it reads training data and models, writes only its own model, and lists only those two prefixes
    assert _s3_actions(s3_statements) == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    data, models = f"arn:aws:s3:::{fake.bucket}/data/*", f"arn:aws:s3:::{fake.bucket}/models/*"
    assert _rendered_resources(s3_statements, "s3:GetObject", render) == {data, models}
    assert _rendered_resources(s3_statements, "s3:PutObject", render) == {
        f"arn:aws:s3:::{fake.bucket}/models/penguins/*"
    }
    assert _rendered_resources(s3_statements, "s3:ListBucket", render) == {f"arn:aws:s3:::{fake.bucket}"}


def test_retrain_may_invoke_only_the_predict_function_and_itself(
    resources: dict[str, Any], role_statements: Any, render: Any
) -> None:
    # Given the retrain function's statements, environment and name
    statements = role_statements("RetrainFunction")
    env = resources["RetrainFunction"]["Properties"]["Environment"]["Variables"]
    name = render(resources["RetrainFunction"]["Properties"]["FunctionName"])
    # When looking at Lambda invocations (the promotion gate asks predict to self-test a candidate; POST /retrain
    # queues its run as an asynchronous invocation of retrain itself)
    invokes = [s for s in statements if any(a.startswith("lambda:") for a in s["Action"])]
    # Then retrain may invoke exactly the predict function, and knows its name
    assert [(s["Action"], s["Resource"]) for s in invokes] == [
        (["lambda:InvokeFunction"], [{"Ref": "PredictFunctionAliaslive"}]),
        (["lambda:InvokeFunction"], [invokes[1]["Resource"][0]]),
    ]
    # (through its `live` alias: the code that serves)
    assert env["PREDICT_FUNCTION_NAME"] == {"Ref": "PredictFunctionAliaslive"}
    # And itself, by its fixed name in an ARN built from the stack name (a Ref to itself would be circular)
    assert name == "sklambda-retrain"
    assert render(invokes[1]["Resource"][0]) == f"arn:aws:lambda:us-east-1:${{AWS::AccountId}}:function:{name}"


# ------------------------------------------------------------------------------------------- configuration


def test_environment_wires_the_model_store_and_data(resources: dict[str, Any], render: Any, fake: Any) -> None:
    # Given both functions' environments
    predict = resources["PredictFunction"]["Properties"]["Environment"]["Variables"]
    retrain = resources["RetrainFunction"]["Properties"]["Environment"]["Variables"]
    # When rendering them with the parameter defaults
    # Then both find the same model store, model name and alias, and Powertools is configured
    for env in (predict, retrain):
        assert render(env["MODEL_STORE_URI"]) == f"s3://{fake.bucket}/models"
        assert env["MODEL_NAME"] == {"Ref": "ModelName"}
        assert env["MODEL_ALIAS"] == "champion"
        assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"} <= set(env)
    # And only retrain knows where the training data is
    assert render(retrain["DATA_URI"]) == f"s3://{fake.bucket}/data/"
    assert "DATA_URI" not in predict


def test_parameters_have_the_agreed_defaults(parameter_defaults: dict[str, str]) -> None:
    # Given the template parameters
    # When reading their defaults
    # Then they are the agreed ones
    expected = {
        "ModelName": "penguins",
        "StageName": "v1",
        "RetrainSchedule": "rate(1 day)",
        "RetrainScheduleEnabled": "true",
        "TrainingDataPrefix": "data/",
        "ModelsPrefix": "models",
        "LogRetentionDays": "30",
        "RetrainNotificationEmail": "",
    }
    assert {key: parameter_defaults.get(key) for key in expected} == expected


def test_model_name_default_matches_training_config(parameter_defaults: dict[str, str]) -> None:
    # Given training/config.toml, where the data scientist names the model
    config_path = ROOT / "training" / "config.toml"
    if not config_path.exists():
        pytest.skip("training/config.toml does not exist yet")
    config = tomllib.loads(config_path.read_text())
    # When reading its name (top level or under [model])
    name = config.get("name") or config.get("model", {}).get("name")
    # Then the template's ModelName default is the same, so the cloud serves the model that training publishes
    assert name == parameter_defaults["ModelName"]


def test_log_groups_keep_logs_for_the_retention_parameter(resources: dict[str, Any]) -> None:
    # Given the functions' log groups
    for function_id in ("PredictFunction", "RetrainFunction"):
        group = resources[f"{function_id}LogGroup"]["Properties"]
        # When reading name and retention
        # Then the group is the one Lambda writes to, kept for LogRetentionDays
        assert group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function_id}}}"}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_outputs_expose_url_bucket_store_and_functions(cfn: dict[str, Any], render: Any, fake: Any) -> None:
    # Given the stack outputs
    outputs = cfn["Outputs"]
    # When reading them
    # Then the API URL, bucket, model store and both function ARNs are there
    assert {"ApiUrl", "ModelBucketName", "ModelStoreUri", "PredictFunctionArn", "RetrainFunctionArn"} <= set(outputs)
    assert render(outputs["ApiUrl"]["Value"]) == f"https://{fake.api}.execute-api.{fake.region}.amazonaws.com/v1"
    assert render(outputs["ModelStoreUri"]["Value"]) == f"s3://{fake.bucket}/models"
    assert outputs["ModelBucketName"]["Value"] == {"Ref": "ModelBucket"}
    assert outputs["PredictFunctionArn"]["Value"] == {"Fn::GetAtt": ["PredictFunction", "Arn"]}
    assert outputs["RetrainFunctionArn"]["Value"] == {"Fn::GetAtt": ["RetrainFunction", "Arn"]}
    # And where failed retrain invocations end up (the on-failure queue SAM creates)
    assert outputs["RetrainFailedInvocationsQueueUrl"]["Value"] == {
        "Ref": "RetrainFunctionEventInvokeConfigOnFailureQueue"
    }


# ------------------------------------------------------------------------------------------- linters


def test_cfn_lint_finds_nothing() -> None:
    # Given template.yaml
    # When cfn-lint checks it with its default rules
    matches = lint_file(Path(TEMPLATE_PATH))
    # Then there are no findings
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


def test_serverless_rules_find_nothing() -> None:
    # Given template.yaml and the cfn-lint-serverless rules (skips live in resource Metadata, with reasons)
    config = ManualArgs(append_rules=["cfn_lint_serverless.rules"], regions=["us-east-1"])
    # When cfn-lint runs them
    matches = lint_file(Path(TEMPLATE_PATH), config=config)
    # Then nothing is reported
    assert [str(match) for match in matches] == []


def test_every_skipped_check_carries_its_reason(sam_template: dict[str, Any]) -> None:
    # Given every resource that skips cfn-lint checks
    for name, resource in sam_template["Resources"].items():
        metadata = resource.get("Metadata", {})
        skipped = metadata.get("cfn-lint", {}).get("config", {}).get("ignore_checks", [])
        # Then each skipped check has a reason of its own next to it, and no reason is left without its skip
        reasons = metadata.get("SkipReasons", {})
        assert set(skipped) == set(reasons), name
        assert all(len(str(reason)) > 20 for reason in reasons.values()), name


def test_the_retrain_function_reads_the_configured_training_config(
    cfn: dict[str, Any], resources: dict[str, Any]
) -> None:
    # Given the TrainingConfig parameter (empty: the configuration shipped as training/config.toml)
    assert cfn["Parameters"]["TrainingConfig"]["Default"] == ""
    # Then the retrain function is told it, and the example configuration is an accepted value
    env = resources["RetrainFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TRAINING_CONFIG"] == {"Ref": "TrainingConfig"}
    pattern = cfn["Parameters"]["TrainingConfig"]["AllowedPattern"]
    assert re.fullmatch(pattern, "training/examples/forest_ratios.toml")
    assert not re.fullmatch(pattern, "s3://bucket/config.toml")
