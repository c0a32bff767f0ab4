"""The model bucket's policy, the manifest signing key and their neighbours, read from the deployed template
(issue 13). moto does not enforce bucket policies, so the policy is evaluated here, statement by statement, for
the requests that matter: an outsider's overwrite, a publisher's blind overwrite, the store's own writes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sklambda.objects import LocalObjects
from sklambda.runs import RunLock, RunLog, RunRecord, new_run_id
from sklambda.store import ModelStore
from tests.template.conftest import FAKE, condition_values, resolve, transformed_template
from tests.unit.test_store import RecordingObjects, make_manifest

pytestmark = pytest.mark.template

BUCKET_ARN = f"arn:aws:s3:::{FAKE.bucket}"
OPERATOR = "arn:aws:iam::123456789012:role/ModelOperators"
OUTSIDER = "arn:aws:iam::123456789012:role/DataUploadCI"


def role(logical_id: str) -> str:
    return f"arn:aws:iam::123456789012:role/{logical_id}"


def _value(item: Any) -> Any:
    """A resolved policy value as a string: role ARNs by logical id, Fn::Sub rendered with the fake bucket."""
    if isinstance(item, list):
        return [_value(element) for element in item]
    if isinstance(item, dict) and "Fn::GetAtt" in item:
        return role(item["Fn::GetAtt"][0])
    if isinstance(item, dict) and "Fn::Sub" in item:
        names = {"ModelBucket.Arn": BUCKET_ARN, "ModelsPrefix": "models", "ModelName": "penguins"}
        return re.sub(r"\$\{([^}]+)\}", lambda m: names.get(m.group(1), m.group(0)), item["Fn::Sub"])
    if isinstance(item, dict):
        return {key: _value(value) for key, value in item.items()}
    return item


def bucket_policy(**parameters: str) -> list[dict[str, Any]]:
    cfn = transformed_template(**parameters)
    document = resolve(cfn["Resources"]["ModelBucketPolicy"]["Properties"]["PolicyDocument"], cfn, parameters)
    return [{key: _value(value) for key, value in statement.items()} for statement in document["Statement"]]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$")


def denying(
    statements: list[dict[str, Any]],
    *,
    principal: str,
    key: str,
    if_none_match: bool = False,
    if_match: bool = False,
    creates_object: bool = True,
) -> list[str]:
    """The Sids of the Deny statements that refuse this s3:PutObject (IAM semantics: every condition operator of
    a statement must hold, every key of an operator must hold; ArnNotEquals with a list holds when none equals)."""
    context: dict[str, str | None] = {
        "aws:PrincipalArn": principal,
        "s3:if-none-match": "*" if if_none_match else None,
        "s3:if-match": '"etag"' if if_match else None,
        "s3:ObjectCreationOperation": "true" if creates_object else "false",
        "aws:SecureTransport": "true",
    }
    arn = f"{BUCKET_ARN}/{key}"
    refused = []
    for statement in statements:
        if statement["Effect"] != "Deny" or not any(
            _wildcard(action).match("s3:PutObject") for action in _listed(statement["Action"])
        ):
            continue
        if not any(_wildcard(resource).match(arn) for resource in _listed(statement["Resource"])):
            continue
        holds = []
        for operator, keys in statement.get("Condition", {}).items():
            for name, expected in keys.items():
                actual = context[name]
                if operator == "ArnNotEquals":
                    holds.append(actual not in _listed(expected))
                elif operator == "Null":
                    holds.append((actual is None) == (expected == "true"))
                elif operator == "Bool":
                    holds.append(actual == expected)
                else:
                    raise NotImplementedError(operator)
        if all(holds):
            refused.append(statement["Sid"])
    return refused


# The SageMaker Training job (a run handed over from the retrain function) publishes as the retrain function does.
PUBLISHERS = [
    role("RetrainFunctionRole"),
    role("SageMakerTrainingRole"),
    role("AdminFunctionRole"),
    role("GuardFunctionRole"),
]


def test_only_the_publishing_roles_may_write_under_the_models_prefix() -> None:
    policy = bucket_policy()
    # An outsider with bucket-wide s3:PutObject (a CI job that uploads training data), the predict function and the
    # pre-traffic check: refused anywhere under models/, even with the right conditional header
    for principal in (OUTSIDER, role("PredictFunctionRole"), role("PredictPreTrafficFunctionRole"), OPERATOR):
        for key in ("models/penguins/versions/000007/model.joblib", "models/penguins/aliases/champion.json"):
            assert "OnlyPublishersWriteModels" in denying(policy, principal=principal, key=key, if_none_match=True)
    # The publishing roles are not refused by that statement
    for principal in PUBLISHERS:
        assert (
            denying(policy, principal=principal, key="models/penguins/versions/000007/model.onnx", if_none_match=True)
            == []
        )
    # Training data stays writable by whoever IAM allows (the policy is about models)
    assert denying(policy, principal=OUTSIDER, key="data/penguins.csv") == []


def test_the_operator_role_parameter_adds_one_writer_and_the_guard_role_goes_with_the_guard() -> None:
    with_operator = bucket_policy(OperatorRoleArn=OPERATOR)
    key = "models/penguins/aliases/champion.json"
    assert denying(with_operator, principal=OPERATOR, key=key, if_match=True) == []
    assert "OnlyPublishersWriteModels" in denying(with_operator, principal=OUTSIDER, key=key, if_match=True)
    without_guard = bucket_policy(PromotionWatchMinutes="0")
    (writers,) = [s for s in without_guard if s["Sid"] == "OnlyPublishersWriteModels"]
    assert sorted(writers["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) == [
        role("AdminFunctionRole"),
        role("RetrainFunctionRole"),
        role("SageMakerTrainingRole"),
    ]


@pytest.mark.parametrize("file", ["claim.json", "manifest.json", "model.joblib", "model.onnx"])
def test_version_files_cannot_be_overwritten_even_by_a_publisher(file: str) -> None:
    policy = bucket_policy()
    key = f"models/penguins/versions/000003/{file}"
    for principal in PUBLISHERS:
        # Without If-None-Match (a blind overwrite, or a forged re-sealed manifest): refused
        assert "VersionFilesAreCreateOnly" in denying(policy, principal=principal, key=key)
        # If-Match would replace an existing file: refused too
        assert "VersionFilesAreCreateOnly" in denying(policy, principal=principal, key=key, if_match=True)
        # Create-only: allowed
        assert denying(policy, principal=principal, key=key, if_none_match=True) == []
        # Multipart parts carry no headers and create nothing yet: not refused; the completion needs the header
        assert denying(policy, principal=principal, key=key, creates_object=False) == []


def test_aliases_and_the_run_lock_move_only_by_compare_and_swap() -> None:
    policy = bucket_policy()
    for key in ("models/penguins/aliases/champion.json", "models/penguins/runs/lock.json"):
        for principal in PUBLISHERS:
            assert "AliasesAndLocksMoveByCompareAndSwap" in denying(policy, principal=principal, key=key)
            assert denying(policy, principal=principal, key=key, if_match=True) == []
            assert denying(policy, principal=principal, key=key, if_none_match=True) == []


def test_every_write_the_store_makes_is_allowed_for_the_publishers_and_its_file_classes_are_covered(
    tmp_path: Path,
) -> None:
    # Given the writes of a publish, a gate verdict, two promotions, a rollback, a run lock and a run record
    recording = RecordingObjects(LocalObjects(tmp_path))
    store = ModelStore(recording)
    for _ in range(2):
        version = store.publish(make_manifest(), {"model.joblib": b"m", "model.onnx": b"o"}, awaiting_gate=True)
        store.record_gate_passed("demo", version.version, by="gate", reason="ok")
        store.promote("demo", version.version, by="gate", reason="ok")
    store.rollback("demo", by="guard", reason="alarm", from_version=2)
    lease = RunLock(recording, "demo", ttl_seconds=60).acquire(new_run_id(), "test")
    RunLog(recording, "demo").save(RunRecord(run_id=lease.run_id, name="demo", trigger="test", status="queued"))
    lease.release()
    policy = bucket_policy()

    # Then the bucket policy refuses none of them for the retrain role (the store already writes the way S3 demands)
    for key, if_match, if_none_match in recording.writes:
        refused = denying(
            policy,
            principal=role("RetrainFunctionRole"),
            key=f"models/{key}",
            if_match=if_match is not None,
            if_none_match=if_none_match,
        )
        assert refused == [], (key, if_match, if_none_match)
    # And each version file the store writes create-only is one the policy makes create-only (status.json, the one
    # mutable file, is not), so a new kind of file cannot slip past the policy unnoticed
    (create_only,) = [s for s in policy if s["Sid"] == "VersionFilesAreCreateOnly"]
    patterns = [_wildcard(resource) for resource in create_only["Resource"]]
    for key, _, if_none_match in recording.writes:
        if "/versions/" in key and not key.endswith("/status.json"):
            assert if_none_match
            assert any(pattern.match(f"{BUCKET_ARN}/models/{key}") for pattern in patterns), key
    assert not any(pattern.match(f"{BUCKET_ARN}/models/demo/versions/000001/status.json") for pattern in patterns)


def test_retrain_writes_only_its_own_models_prefix(role_statements: Callable[[str], list[dict[str, Any]]]) -> None:
    writes = [s for s in role_statements("RetrainFunction") if "s3:PutObject" in s["Action"]]
    assert [_value(resource) for statement in writes for resource in statement["Resource"]] == [
        "arn:${AWS::Partition}:s3:::${ModelBucket}/models/penguins/*"
    ]


# ------------------------------------------------------------------------------------------- signing key


def signing_key(**parameters: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    cfn = transformed_template(**parameters)
    key = cfn["Resources"]["ManifestSigningKey"]
    if not condition_values(cfn, parameters)[key["Condition"]]:
        return None, cfn
    return resolve(key["Properties"], cfn, parameters), cfn


def _principals(statement: dict[str, Any]) -> list[str]:
    principal = statement["Principal"]
    return sorted(_value(_listed(principal["AWS"] if isinstance(principal, dict) else principal)))


def test_only_the_publishers_may_sign_and_the_readers_may_fetch_the_public_key() -> None:
    properties, _ = signing_key(OperatorRoleArn=OPERATOR)
    assert properties is not None
    assert (properties["KeySpec"], properties["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    statements = {s["Sid"]: s for s in properties["KeyPolicy"]["Statement"]}
    allows_sign = [
        s
        for s in statements.values()
        if s["Effect"] == "Allow" and any(a in {"kms:Sign", "kms:*"} for a in _listed(s["Action"]))
    ]
    publishers = sorted([role("RetrainFunctionRole"), role("SageMakerTrainingRole"), OPERATOR])
    assert [_principals(s) for s in allows_sign] == [publishers]
    # The account administers the key but may not sign (so no IAM policy can grant signing)
    admin = statements["AccountAdministersTheKey"]
    assert not any(_wildcard(action).match("kms:Sign") for action in admin["Action"])
    # Everyone else is explicitly denied kms:Sign
    deny = statements["NobodyElseSigns"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "kms:Sign")
    assert sorted(_value(deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"])) == publishers
    readers = statements["ReadersVerify"]
    assert "kms:Sign" not in readers["Action"]
    assert {"kms:GetPublicKey", "kms:Verify"} <= set(readers["Action"])
    assert role("PredictFunctionRole") in _principals(readers)


def test_every_function_gets_the_key_and_requires_signatures_by_default() -> None:
    properties, cfn = signing_key()
    assert properties is not None
    alias = cfn["Resources"]["ManifestSigningKeyAlias"]["Properties"]
    assert alias == {
        "AliasName": {"Fn::Sub": "alias/${AWS::StackName}-manifest-signing"},
        "TargetKeyId": {"Ref": "ManifestSigningKey"},
    }
    functions = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert functions
    for function in functions:
        variables = resolve(function["Properties"]["Environment"]["Variables"], cfn)
        assert variables["MANIFEST_SIGNING_KEY"] == {"Fn::Sub": "alias/${AWS::StackName}-manifest-signing"}
        assert variables["MANIFEST_SIGNATURES"] == "required"


def test_signing_off_means_no_key_and_optional_keeps_unsigned_versions_loadable() -> None:
    properties, cfn = signing_key(ManifestSigning="off")
    assert properties is None
    predict = cfn["Resources"]["PredictFunction"]["Properties"]["Environment"]["Variables"]
    assert resolve(predict, cfn, {"ManifestSigning": "off"})["MANIFEST_SIGNING_KEY"] == ""
    _, cfn = signing_key(ManifestSigning="optional")
    variables = cfn["Resources"]["PredictFunction"]["Properties"]["Environment"]["Variables"]
    assert resolve(variables, cfn, {"ManifestSigning": "optional"})["MANIFEST_SIGNATURES"] == "optional"


# ------------------------------------------------------------------------------------------- small ones


def test_noncurrent_object_versions_expire_when_object_lock_is_off() -> None:
    cfn = transformed_template()
    bucket = resolve(cfn["Resources"]["ModelBucket"]["Properties"], cfn)
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    rule = rules["ExpireNoncurrentVersions"]
    assert rule["Status"] == "Enabled"
    assert "Prefix" not in rule  # the whole bucket
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": "90"}  # the parameter's default
    locked = transformed_template(ObjectLockRetentionDays="30")
    locked_rules = resolve(locked["Resources"]["ModelBucket"]["Properties"], locked, {"ObjectLockRetentionDays": "30"})[
        "LifecycleConfiguration"
    ]["Rules"]
    # With Object Lock its retention decides; only the captures' own expiry stays
    assert [rule["Id"] for rule in locked_rules] == ["CaptureExpiry"]


def test_the_guards_queues_have_a_depth_alarm() -> None:
    cfn = transformed_template()
    alarm = cfn["Resources"]["GuardDeadLettersAlarm"]
    assert alarm["Condition"] == "IsPromotionGuardEnabled"
    queues = {
        metric["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for metric in alarm["Properties"]["Metrics"]
        if "MetricStat" in metric
    }
    assert queues == {"GuardFunctionEventInvokeConfigOnFailureQueue", "GuardFunctionServingAlarmQueue"}
    assert {
        metric["MetricStat"]["Metric"]["MetricName"]
        for metric in alarm["Properties"]["Metrics"]
        if "MetricStat" in metric
    } == {"ApproximateNumberOfMessagesVisible"}
    assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
