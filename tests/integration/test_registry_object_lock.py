"""The registry on a bucket with S3 Object Lock (the template's ObjectLockRetentionDays option), under moto:
everything works, and what retention deletes stays recoverable and locked."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from sklambda import registry
from sklambda.registry import RetentionPolicy
from sklambda.store import ModelStore
from tests.unit.test_store import make_manifest

pytestmark = pytest.mark.integration

LOCKED_BUCKET = "sklambda-test-locked-models"


@pytest.fixture
def locked_store(aws_mock: None) -> ModelStore:
    # What the template creates with ObjectLockRetentionDays=7: versioning + default GOVERNANCE retention
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=LOCKED_BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 7}},
        },
    )
    return ModelStore.from_uri(f"s3://{LOCKED_BUCKET}/models")


def test_publish_promote_rollback_and_retention_work_on_a_locked_bucket(locked_store: ModelStore) -> None:
    # Given three versions and alias moves on a bucket where every object version is locked for 7 days
    store = locked_store
    for number in range(3):
        store.publish(make_manifest(), {"model.bin": f"model {number}".encode()})
    store.promote("demo", 2, by="t", reason="r")
    store.promote("demo", 3, by="t", reason="r")
    store.rollback("demo", by="t", reason="alarm")  # aliases and status files are overwritten: new versions

    # When retention deletes v1 (nothing protects it)
    plan = registry.plan_retention(store, "demo", RetentionPolicy(keep_last=1, keep_days=0))
    assert plan.to_delete == [1]
    registry.apply_retention(store, plan, by="ops")

    # Then v1 is gone for the registry, but every byte of it is still in the bucket, locked
    assert store.versions("demo") == [2, 3]
    client = boto3.client("s3", region_name="us-east-1")
    key = "models/demo/versions/000001/model.bin"
    versions = client.list_object_versions(Bucket=LOCKED_BUCKET, Prefix=key)
    (kept,) = versions["Versions"]
    assert [marker["Key"] for marker in versions["DeleteMarkers"]] == [key]
    recovered = client.get_object(Bucket=LOCKED_BUCKET, Key=key, VersionId=kept["VersionId"])
    assert recovered["Body"].read() == b"model 0"
    assert recovered["ObjectLockMode"] == "GOVERNANCE"
    # And deleting that version for good is refused without a governance bypass
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket=LOCKED_BUCKET, Key=key, VersionId=kept["VersionId"])
