"""template.yaml transformed to plain CloudFormation offline (samtranslator, no AWS credentials, no network).

`sam validate` does the same internally: local CodeUri/ContentUri paths are first rewritten to s3:// locations,
because the translator only accepts S3 code locations.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

# Stand-ins for names only known at deploy time, used to render Fn::Sub strings into text in assertions.
FAKE = SimpleNamespace(bucket="model-bucket", api="api-id", region="us-east-1")

_LAYER_HASH = re.compile(r"^(?P<name>.+?)[0-9a-f]{10}$")


def _point_code_at_s3(sam: dict[str, Any]) -> None:
    for resource in sam.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            uri = properties.get(key)
            if isinstance(uri, str) and not uri.startswith("s3://"):
                properties[key] = f"s3://sam-artifacts/{uri}"


@functools.cache
def _sam_template_text(path: Path = TEMPLATE_PATH) -> str:
    return path.read_text()


def load_sam_template(text: str | None = None) -> dict[str, Any]:
    """template.yaml (or this text) as written, with !Ref/!Sub/!GetAtt decoded to their long forms."""
    template: dict[str, Any] = cfn_yaml.loads(_sam_template_text() if text is None else text)
    return template


def translate(sam_template: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The CloudFormation that SAM makes of a SAM template for these parameter values (defaults for the rest).

    CloudFormation's own transform gets the stack's parameter values too: SAM resolves some of them itself
    (Tracing, AutoPublishAlias, DeploymentPreference Type); the rest stay Refs for CloudFormation."""
    sam = copy.deepcopy(sam_template)
    _point_code_at_s3(sam)
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=FAKE.region))
    translated: dict[str, Any] = translator.translate(
        sam, parameter_values=dict(parameters), get_managed_policy_map=lambda: {}
    )
    return translated


@functools.cache
def _translated(parameters: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(translate(load_sam_template(), **dict(parameters)))


def transformed_template(**parameters: str) -> dict[str, Any]:
    """template.yaml transformed for these parameter values (a fresh copy; transformed once per set of values)."""
    result: dict[str, Any] = json.loads(_translated(tuple(sorted(parameters.items()))))
    return result


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    """template.yaml as written (the SAM dialect), with !Ref/!Sub/!GetAtt decoded to their long forms."""
    return load_sam_template()


@pytest.fixture(scope="session")
def cfn() -> dict[str, Any]:
    """The CloudFormation template that SAM deploys (parameter defaults)."""
    return transformed_template()


@pytest.fixture(scope="session")
def fake() -> SimpleNamespace:
    """The stand-in names that `render` substitutes for the bucket, the API id and the region."""
    return FAKE


@pytest.fixture(scope="session")
def resources(cfn: dict[str, Any]) -> dict[str, Any]:
    resources: dict[str, Any] = cfn["Resources"]
    return resources


@pytest.fixture(scope="session")
def parameter_defaults(sam_template: dict[str, Any]) -> dict[str, str]:
    return {name: str(spec.get("Default")) for name, spec in sam_template["Parameters"].items()}


@pytest.fixture(scope="session")
def render(parameter_defaults: dict[str, str]) -> Callable[[Any], str | None]:
    """Render a string or {"Fn::Sub": ...} with parameter defaults and fake resource names (None if not a string)."""

    names: dict[str, str] = {
        **parameter_defaults,
        "ModelBucket": FAKE.bucket,
        "ModelBucket.Arn": f"arn:aws:s3:::{FAKE.bucket}",
        "Api": FAKE.api,
        "AWS::Region": FAKE.region,
        "AWS::Partition": "aws",
        "AWS::StackName": "sklambda",
    }

    def _render(value: Any) -> str | None:
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: names.get(m.group(1), m.group(0)), value["Fn::Sub"])
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in names:
            return names[str(value["Ref"])]
        return None

    return _render


def condition_values(cfn: dict[str, Any], parameters: dict[str, str]) -> dict[str, bool]:
    """Each condition of the template, evaluated for these parameter values (the defaults for the rest)."""

    def evaluate(expression: Any) -> Any:
        if not isinstance(expression, dict):
            return expression
        ((function, argument),) = expression.items()
        if function == "Ref":
            return parameters.get(argument, cfn["Parameters"].get(argument, {}).get("Default"))
        if function == "Fn::Equals":
            left, right = (evaluate(item) for item in argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not evaluate(argument[0])
        if function == "Condition":
            return evaluate(cfn["Conditions"][argument])
        raise NotImplementedError(function)

    return {name: bool(evaluate(expression)) for name, expression in cfn["Conditions"].items()}


def resolve_if(value: Any, conditions: dict[str, bool]) -> Any:
    """`value` with every Fn::If replaced by the branch its condition picks."""
    if isinstance(value, list):
        return [resolve_if(item, conditions) for item in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            condition, when_true, when_false = value["Fn::If"]
            return resolve_if(when_true if conditions[condition] else when_false, conditions)
        return {key: resolve_if(item, conditions) for key, item in value.items()}
    return value


@pytest.fixture(scope="session")
def layer_names(cfn: dict[str, Any], resources: dict[str, Any]) -> Callable[..., set[str]]:
    """The template's layer names (SharedCodeLayer, ...) used by a function for the given parameter values;
    SAM suffixes a content hash."""

    def _layer_names(function_id: str, **parameters: str) -> set[str]:
        conditions = condition_values(cfn, parameters)
        names = set()
        for layer in resolve_if(resources[function_id]["Properties"].get("Layers", []), conditions):
            logical_id = layer["Ref"]
            assert conditions[resources[logical_id]["Condition"]] if "Condition" in resources[logical_id] else True
            assert resources[logical_id]["Type"] == "AWS::Lambda::LayerVersion"
            match = _LAYER_HASH.match(logical_id)
            names.add(match.group("name") if match else logical_id)
        return names

    return _layer_names


@pytest.fixture(scope="session")
def role_statements(resources: dict[str, Any]) -> Callable[[str], list[dict[str, Any]]]:
    """All inline policy statements of a function's execution role, Action/Resource normalised to lists."""

    def _statements(function_id: str) -> list[dict[str, Any]]:
        role_id = resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        statements = []
        for policy in resources[role_id]["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                normalised = dict(statement)
                for key in ("Action", "Resource"):
                    value = statement.get(key, [])
                    normalised[key] = value if isinstance(value, list) else [value]
                statements.append(normalised)
        return statements

    return _statements


def resolve(value: Any, cfn: dict[str, Any], parameters: dict[str, str] | None = None) -> Any:
    """`value` as CloudFormation would deploy it for these parameter values (defaults for the rest): Fn::If picks
    its branch, AWS::NoValue drops the key or item, Refs to parameters and Fn::FindInMap give their values.
    Refs and attributes of resources, and Fn::Sub, stay as they are (only known at deploy time)."""
    parameters = parameters or {}
    conditions = condition_values(cfn, parameters)
    no_value = object()

    def walk(item: Any) -> Any:
        if isinstance(item, list):
            return [walked for walked in (walk(element) for element in item) if walked is not no_value]
        if not isinstance(item, dict):
            return item
        if set(item) == {"Fn::If"}:
            condition, when_true, when_false = item["Fn::If"]
            return walk(when_true if conditions[condition] else when_false)
        if set(item) == {"Ref"}:
            name = item["Ref"]
            if name == "AWS::NoValue":
                return no_value
            if name in cfn.get("Parameters", {}):
                return str(parameters.get(name, cfn["Parameters"][name].get("Default")))
            return item
        if set(item) == {"Fn::FindInMap"}:
            mapping, top, second = (walk(part) for part in item["Fn::FindInMap"])
            if top == {"Ref": "AWS::Region"}:  # a per-region mapping, read for the tests' region
                top = FAKE.region
            return cfn["Mappings"][mapping][str(top)][second]
        return {key: walked for key, walked in ((k, walk(v)) for k, v in item.items()) if walked is not no_value}

    return walk(value)


def created_resources(cfn: dict[str, Any], parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The resources CloudFormation creates for these parameter values (conditions evaluated), resolved."""
    conditions = condition_values(cfn, parameters or {})
    return {
        logical_id: resolve(resource, cfn, parameters)
        for logical_id, resource in cfn["Resources"].items()
        if conditions.get(resource.get("Condition", ""), True)
    }


def alarm_arn(cfn: dict[str, Any], logical_id: str, *, stack: str, account: str, region: str) -> str:
    """The ARN an alarm of the template gets in a stack (its AlarmName is `${AWS::StackName}-...`)."""
    name = cfn["Resources"][logical_id]["Properties"]["AlarmName"]["Fn::Sub"].replace("${AWS::StackName}", stack)
    return f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}"


def guard_event_pattern(cfn: dict[str, Any], *, stack: str, account: str, region: str) -> dict[str, Any]:
    """The promotion guard's EventBridge rule pattern as deployed in a stack: alarm ARNs filled in."""
    guard = {"Fn::GetAtt": ["GuardFunction", "Arn"]}
    (rule,) = [
        resource
        for resource in cfn["Resources"].values()
        if resource["Type"] == "AWS::Events::Rule"
        and any(target["Arn"] == guard for target in resource["Properties"]["Targets"])
    ]
    pattern: dict[str, Any] = copy.deepcopy(rule["Properties"]["EventPattern"])
    pattern["resources"] = [
        alarm_arn(cfn, arn["Fn::GetAtt"][0], stack=stack, account=account, region=region)
        for arn in pattern["resources"]
    ]
    return pattern
