"""The monitoring resources on the transformed template: exactly what each new role may do, the capture stream
(batched, encrypted, partitioned by version and date under the capture prefix, with its own role), the lifecycle
expiry, POST /feedback's auth, the monitor's schedule and options, and what CaptureEnabled=false removes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.template.conftest import condition_values, created_resources, transformed_template
from tests.template.test_production import BUCKET, allowed, operations, render, role_of

pytestmark = pytest.mark.template


def test_feedback_and_monitor_roles_allow_exactly_what_they_need(cfn: dict[str, Any]) -> None:
    resources = cfn["Resources"]
    models = f"{BUCKET}/models/*"
    # Feedback reads the champion's manifest and writes only under capture/<model>/feedback/
    assert allowed(role_of(resources, "FeedbackFunction")) == {
        "s3:GetObject": {models},
        "s3:ListBucket": {BUCKET},
        "s3:PutObject": {f"{BUCKET}/capture/penguins/feedback/*"},
    }
    # The monitor reads models and captures, writes its records and the labelled training data, and may start a
    # retrain (used only with RetrainOnMonitorAlarm=true)
    assert allowed(role_of(resources, "MonitorFunction")) == {
        "s3:GetObject": {models, f"{BUCKET}/capture/*"},
        "s3:ListBucket": {BUCKET},
        "s3:PutObject": {f"{BUCKET}/models/penguins/monitoring/*", f"{BUCKET}/data/labelled/*"},
        "lambda:InvokeFunction": {"arn:aws:lambda:us-east-1:123456789012:function:sklambda-retrain"},
        "sqs:SendMessage": {"GetAtt:MonitorFunctionEventInvokeConfigOnFailureQueue.Arn"},
    }


def test_firehose_role_writes_only_captures(cfn: dict[str, Any]) -> None:
    role = cfn["Resources"]["CaptureDeliveryRole"]
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "firehose.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": {"Ref": "AWS::AccountId"}}},
        }
    ]
    assert allowed(role) == {
        "s3:PutObject": {f"{BUCKET}/capture/*"},
        "s3:AbortMultipartUpload": {f"{BUCKET}/capture/*"},
        "s3:GetBucketLocation": {"GetAtt:ModelBucket.Arn"},
        "s3:ListBucket": {"GetAtt:ModelBucket.Arn"},
        "s3:ListBucketMultipartUploads": {"GetAtt:ModelBucket.Arn"},
        "logs:PutLogEvents": {
            "arn:aws:logs:us-east-1:123456789012:log-group:/aws/kinesisfirehose/sklambda-capture:log-stream:*"
        },
    }


def test_capture_stream_batches_encrypts_and_partitions_by_version_and_date(cfn: dict[str, Any]) -> None:
    stream = cfn["Resources"]["CaptureStream"]["Properties"]
    assert stream["DeliveryStreamEncryptionConfigurationInput"] == {"KeyType": "AWS_OWNED_CMK"}
    destination = stream["ExtendedS3DestinationConfiguration"]
    assert render(destination["Prefix"]) == (
        "capture/penguins/version=!{partitionKeyFromQuery:version}/date=!{timestamp:yyyy-MM-dd}/"
    )
    assert destination["CompressionFormat"] == "GZIP"
    assert destination["DynamicPartitioningConfiguration"] == {"Enabled": True}
    extraction = destination["ProcessingConfiguration"]["Processors"][0]["Parameters"]
    assert {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{version: .version}"} in extraction
    # The predict function sends to it by its fixed name, with the sample rate parameter
    variables = cfn["Resources"]["PredictFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["CAPTURE_STREAM_NAME"] == {"Fn::If": ["IsCaptureEnabled", {"Ref": "CaptureStream"}, ""]}
    assert variables["CAPTURE_SAMPLE_RATE"] == {"Ref": "CaptureSampleRate"}
    assert stream["DeliveryStreamName"] == {"Fn::Sub": "${AWS::StackName}-capture"}


def test_captures_expire_by_the_lifecycle_parameter(cfn: dict[str, Any]) -> None:
    rules = cfn["Resources"]["ModelBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (rule,) = [rule for rule in rules if isinstance(rule, dict) and rule.get("Id") == "CaptureExpiry"]
    assert rule["Prefix"] == {"Ref": "CapturePrefix"}
    assert rule["ExpirationInDays"] == {"Ref": "CaptureExpiryDays"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}


@pytest.mark.parametrize(("key_required", "security"), [("false", [{"AWS_IAM": []}]), ("true", [{"api_key": []}])])
def test_feedback_needs_iam_or_the_api_key_when_one_is_required(key_required: str, security: Any) -> None:
    cfn = transformed_template()
    operation = operations(cfn["Resources"])[("/feedback", "post")]
    conditions = condition_values(cfn, {"PredictApiKeyRequired": key_required})
    chosen = operation["security"]
    if isinstance(chosen, dict) and "Fn::If" in chosen:
        condition, when_true, when_false = chosen["Fn::If"]
        chosen = when_true if conditions[condition] else when_false
    assert chosen == security


def test_monitor_runs_on_its_schedule_and_retrains_only_when_asked(cfn: dict[str, Any]) -> None:
    resources = cfn["Resources"]
    rules = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert any(rule["Properties"].get("ScheduleExpression") == {"Ref": "MonitorSchedule"} for rule in rules)
    variables = resources["MonitorFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["RETRAIN_FUNCTION_NAME"] == {
        "Fn::If": ["RetrainsOnMonitorAlarm", {"Fn::Sub": "${AWS::StackName}-retrain"}, ""]
    }
    assert variables["PSI_THRESHOLD"] == {"Ref": "DriftPsiThreshold"}
    assert resources["DriftAlarm"]["Properties"]["Threshold"] == {"Ref": "DriftPsiThreshold"}
    assert resources["LiveQualityAlarm"]["Properties"]["Threshold"] == {"Ref": "LiveMetricMaxDrop"}
    defaults = {name: p.get("Default") for name, p in cfn["Parameters"].items()}
    assert defaults["RetrainOnMonitorAlarm"] == "false"


def test_capture_off_creates_no_stream_and_tells_the_functions() -> None:
    cfn = transformed_template()
    created = created_resources(cfn, {"CaptureEnabled": "false"})
    assert not {"CaptureStream", "CaptureDeliveryRole", "CaptureDeliveryLogGroup"} & set(created)
    assert {"FeedbackFunction", "MonitorFunction"} <= set(created)
    conditions = condition_values(cfn, {"CaptureEnabled": "false"})
    assert conditions["IsCaptureEnabled"] is False
