"""The model registry in the template: the admin function, its IAM-only routes, its least-privilege role, and the
bucket's versioning and optional Object Lock."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.template

ADMIN_ROUTES = {
    ("/admin/versions", "get"),
    ("/admin/versions/{version}", "get"),
    ("/admin/versions/{version}/diff/{other}", "get"),
    ("/admin/aliases/{alias}", "get"),
    ("/admin/aliases/{alias}/promote", "post"),
    ("/admin/aliases/{alias}/rollback", "post"),
}


def _statements_by_action(statements: list[dict[str, Any]], render: Any) -> dict[str, set[Any]]:
    """action → the resources it is allowed on (strings rendered; GetAtt kept as the logical id)."""
    allowed: dict[str, set[Any]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        assert "Condition" not in statement, statement
        for action in statement["Action"]:
            for resource in statement["Resource"]:
                rendered = render(resource) or (
                    f"GetAtt:{'.'.join(resource['Fn::GetAtt'])}"
                    if "Fn::GetAtt" in resource
                    else f"Ref:{resource['Ref']}"
                )
                allowed.setdefault(action, set()).add(rendered)
    return allowed


def test_admin_routes_exist_and_only_signed_callers_reach_them(resources: dict[str, Any]) -> None:
    # Given the API's OpenAPI body
    paths = resources["Api"]["Properties"]["Body"]["paths"]
    # When collecting every /admin operation
    admin = {
        (path, method): op
        for path, methods in paths.items()
        if path.startswith("/admin")
        for method, op in methods.items()
    }
    # Then they are exactly the registry routes, all on the admin function
    assert set(admin) == ADMIN_ROUTES
    for operation in admin.values():
        integration = operation["x-amazon-apigateway-integration"]
        assert "${AdminFunction.Arn}" in integration["uri"]["Fn::Sub"]
        # And each requires SigV4 (IAM) and is invoked through the resource policy, not the caller's credentials
        assert operation["security"] == [{"AWS_IAM": []}]
        assert "credentials" not in integration


def test_admin_role_reads_models_and_writes_only_aliases_and_status(
    role_statements: Any, render: Any, fake: Any
) -> None:
    # Given the admin function's execution role
    allowed = _statements_by_action(role_statements("AdminFunction"), render)
    # When collecting every action and resource it allows
    # Then it reads and lists the models, writes only this model's aliases and version status files, may ask the
    # predict function to self-test, and nothing else: no delete, no write to artifacts or manifests
    bucket = f"arn:aws:s3:::{fake.bucket}"
    assert allowed == {
        "s3:GetObject": {f"{bucket}/models/*"},
        "s3:ListBucket": {bucket},
        "s3:PutObject": {f"{bucket}/models/penguins/aliases/*", f"{bucket}/models/penguins/versions/*/status.json"},
        "lambda:InvokeFunction": {"Ref:PredictFunctionAliaslive"},
    }


def test_admin_role_has_only_basic_logging_as_managed_policy(resources: dict[str, Any]) -> None:
    role_id = resources["AdminFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]
    managed = resources[role_id]["Properties"].get("ManagedPolicyArns", [])
    assert managed == ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]


def test_admin_function_asks_predict_to_self_test_and_has_no_training_code(
    resources: dict[str, Any], layer_names: Any, render: Any, fake: Any
) -> None:
    # Given the admin function
    properties = resources["AdminFunction"]["Properties"]
    env = properties["Environment"]["Variables"]
    # Then it knows the deployed predict function (promotion self-test) and the same store, model and alias
    assert env["PREDICT_FUNCTION_NAME"] == {"Ref": "PredictFunctionAliaslive"}
    assert render(env["MODEL_STORE_URI"]) == f"s3://{fake.bucket}/models"
    assert env["MODEL_NAME"] == {"Ref": "ModelName"}
    # And it carries the shared code and the light serving dependencies, never the training layers
    assert layer_names("AdminFunction") == {"SharedCodeLayer", "ServingDepsLayer"}
    assert properties["Handler"] == "app.lambda_handler"
    assert properties["Code"]["S3Key"] == "functions/admin"
    # And it answers before API Gateway's 29 s integration timeout
    assert properties["Timeout"] <= 29
    group = resources["AdminFunctionLogGroup"]["Properties"]
    assert group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${AdminFunction}"}
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_no_function_may_delete_model_objects(role_statements: Any) -> None:
    # Retention runs from the command line with the operator's credentials; no function deletes anything.
    for function_id in ("PredictFunction", "RetrainFunction", "AdminFunction"):
        for statement in role_statements(function_id):
            for action in statement["Action"]:
                assert not action.startswith(("s3:Delete", "s3:BypassGovernance", "s3:PutObjectRetention")), action
                assert "*" not in action, action


def test_object_lock_is_an_option_in_governance_mode(cfn: dict[str, Any], resources: dict[str, Any]) -> None:
    # Given the parameter, the condition and the bucket
    parameter = cfn["Parameters"]["ObjectLockRetentionDays"]
    bucket = resources["ModelBucket"]["Properties"]
    # Then Object Lock is off by default and on when the parameter is not 0
    assert parameter["Default"] == 0
    assert cfn["Conditions"]["IsObjectLockEnabled"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ObjectLockRetentionDays"}, 0]}]
    }
    assert bucket["ObjectLockEnabled"] == {"Fn::If": ["IsObjectLockEnabled", True, {"Ref": "AWS::NoValue"}]}
    # And when on, every new object version is kept in GOVERNANCE mode for that many days
    condition, when_on, when_off = bucket["ObjectLockConfiguration"]["Fn::If"]
    assert (condition, when_off) == ("IsObjectLockEnabled", {"Ref": "AWS::NoValue"})
    assert when_on == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": {"Ref": "ObjectLockRetentionDays"}}},
    }
    # And versioning stays on either way (the second line of defence)
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}


def test_outputs_expose_the_admin_function(cfn: dict[str, Any]) -> None:
    assert cfn["Outputs"]["AdminFunctionArn"]["Value"] == {"Fn::GetAtt": ["AdminFunction", "Arn"]}
