"""Manifest signatures (issue 13): signed at publish with an AWS KMS asymmetric key (moto), verified locally with
the cached public key before a pickled artifact loads; forged, unsigned, foreign and misplaced manifests refused."""

from __future__ import annotations

import base64
import io
import json
import pathlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import joblib
import pytest

from sklambda import aws
from sklambda.aws import KmsSigningKey
from sklambda.errors import IntegrityError, VersionRefused
from sklambda.manifest import ManifestSignature, sha256_hex
from sklambda.objects import LocalObjects
from sklambda.signing import SIGNING_ALGORITHM, ManifestSigning, kms_signing, signed_statement
from sklambda.store import ModelStore
from tests.conftest import LambdaContext, load_event
from tests.unit.test_store import make_manifest

pytestmark = pytest.mark.unit


@pytest.fixture
def kms(aws_mock: None) -> Iterator[Any]:
    aws.kms_client.cache_clear()
    yield boto3.client("kms", region_name="us-east-1")
    aws.kms_client.cache_clear()


def new_key(kms: Any) -> str:
    return str(kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"])


class CountingKey(KmsSigningKey):
    """The KMS key, counting GetPublicKey calls."""

    public_key_reads = 0

    def public_key_der(self) -> bytes:
        self.public_key_reads += 1
        return super().public_key_der()


@pytest.fixture
def key_arn(kms: Any) -> str:
    return new_key(kms)


@pytest.fixture(params=["local", "kms"])
def verify_locally(request: pytest.FixtureRequest) -> bool:
    """Verification with the cached public key (`cryptography`), or by asking KMS (the Lambda layers)."""
    return bool(request.param == "local")


@pytest.fixture
def signed_store(key_arn: str, tmp_path: Path, verify_locally: bool) -> ModelStore:
    signing = ManifestSigning(CountingKey(key_arn), verify_locally=verify_locally)
    return ModelStore(LocalObjects(tmp_path / "store"), signing=signing)


def test_publish_signs_and_kms_itself_verifies_the_signature(signed_store: ModelStore, kms: Any, key_arn: str) -> None:
    # When a version is published by a store with a signing key
    stored = signed_store.publish(make_manifest(), {"model.joblib": b"pickle"})

    # Then its manifest carries a signature by that key over the name, version and checksum...
    read = signed_store.manifest("demo", 1)
    assert read.signature is not None
    assert (read.signature.key_id, read.signature.algorithm) == (key_arn, SIGNING_ALGORITHM)
    assert read.signature == stored.signature
    assert (
        signed_statement(read) == f"sklambda-manifest-v1\nname=demo\nversion=1\nsha256={read.body_sha256()}\n".encode()
    )
    # ...that KMS's own Verify accepts (so local verification checks what KMS signed)
    verdict = kms.verify(
        KeyId=key_arn,
        Message=signed_statement(read),
        MessageType="RAW",
        Signature=base64.b64decode(read.signature.value),
        SigningAlgorithm=SIGNING_ALGORITHM,
    )
    assert verdict["SignatureValid"] is True
    # And the pickled artifact loads after local verification
    assert signed_store.artifact(read, "model.joblib") == b"pickle"


def test_the_public_key_is_fetched_once_per_process(signed_store: ModelStore, verify_locally: bool) -> None:
    for _ in range(3):
        signed_store.publish(make_manifest(), {"model.joblib": b"pickle"})
    for version in (1, 2, 3):
        signed_store.artifact(signed_store.manifest("demo", version), "model.joblib")
    assert signed_store.signing is not None
    key = signed_store.signing.key
    assert isinstance(key, CountingKey)
    # Locally: one GetPublicKey for three loads; through KMS (kms:Verify per load): none
    assert key.public_key_reads == (1 if verify_locally else 0)


def test_a_forged_version_with_a_resealed_manifest_is_refused_before_unpickling(signed_store: ModelStore) -> None:
    # Given a signed version, then a writer with plain PutObject replaces its pickle and writes a re-sealed manifest
    signed_store.publish(make_manifest(), {"model.joblib": b"good"})
    forged = forge(signed_store, "demo", 1, b"evil")

    # Then the manifest still verifies against its own checksum (the checksum proves integrity, not authorship)...
    assert signed_store.manifest("demo", 1).artifacts["model.joblib"] == sha256_hex(b"evil")
    # ...but the pickle is refused: the signature does not cover this content
    with pytest.raises(IntegrityError, match="signature does not verify"):
        signed_store.artifact(forged, "model.joblib")


def test_an_unsigned_version_is_refused_when_signatures_are_required(key_arn: str, tmp_path: Path) -> None:
    # Given a version published without a key (a laptop store), then read by a deployment that requires signatures
    ModelStore(LocalObjects(tmp_path)).publish(make_manifest(), {"model.joblib": b"pickle"})
    required = ModelStore(LocalObjects(tmp_path), signing=ManifestSigning(KmsSigningKey(key_arn)))
    optional = ModelStore(LocalObjects(tmp_path), signing=ManifestSigning(KmsSigningKey(key_arn), required=False))
    unsigned = required.manifest("demo", 1)

    with pytest.raises(VersionRefused, match="is not signed"):
        required.artifact(unsigned, "model.joblib")
    # "optional" (a store moving to signatures) accepts it; artifacts that are not code never need a signature
    assert optional.artifact(unsigned, "model.joblib") == b"pickle"
    ModelStore(LocalObjects(tmp_path)).publish(make_manifest(), {"model.onnx": b"graph"})
    assert required.artifact(required.manifest("demo", 2), "model.onnx") == b"graph"


def test_a_signature_by_another_key_is_refused(kms: Any, key_arn: str, tmp_path: Path, verify_locally: bool) -> None:
    other = ModelStore(LocalObjects(tmp_path), signing=ManifestSigning(KmsSigningKey(new_key(kms))))
    other.publish(make_manifest(), {"model.joblib": b"pickle"})
    signing = ManifestSigning(KmsSigningKey(key_arn), verify_locally=verify_locally)
    ours = ModelStore(LocalObjects(tmp_path), signing=signing)
    with pytest.raises(IntegrityError, match="does not verify"):
        ours.artifact(ours.manifest("demo", 1), "model.joblib")


def test_a_manifest_read_from_another_models_or_versions_key_is_refused(signed_store: ModelStore) -> None:
    # Given two signed versions of demo and one of other
    signed_store.publish(make_manifest(), {"model.joblib": b"one"})
    signed_store.publish(make_manifest(), {"model.joblib": b"two"})
    signed_store.publish(make_manifest(name="other"), {"model.joblib": b"three"})
    objects = signed_store.objects

    # When v1's manifest (signed, self-consistent) is copied over v2's, and demo's over other's
    objects.put("demo/versions/000002/manifest.json", objects.get("demo/versions/000001/manifest.json").data)
    objects.put("other/versions/000001/manifest.json", objects.get("demo/versions/000001/manifest.json").data)

    # Then neither is accepted where it was found
    with pytest.raises(IntegrityError, match="stored as demo v2 describes demo v1"):
        signed_store.manifest("demo", 2)
    with pytest.raises(IntegrityError, match="stored as other v1 describes demo v1"):
        signed_store.manifest("other", 1)


def test_a_store_without_a_key_neither_signs_nor_verifies(tmp_path: Path) -> None:
    assert kms_signing(None) is None
    assert kms_signing("") is None
    store = ModelStore(LocalObjects(tmp_path))
    stored = store.publish(make_manifest(), {"model.joblib": b"pickle"})
    assert stored.signature is None
    assert b"signature" not in store.objects.get("demo/versions/000001/manifest.json").data
    assert store.artifact(stored, "model.joblib") == b"pickle"


def test_signing_failure_publishes_nothing(kms: Any, tmp_path: Path) -> None:
    # A key the publisher cannot use (here: one that does not exist) stops the publish before the manifest
    key = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    store = ModelStore(LocalObjects(tmp_path), signing=ManifestSigning(KmsSigningKey(key)))
    with pytest.raises(Exception, match="signing the manifest"):
        store.publish(make_manifest(), {"model.joblib": b"pickle"})
    assert store.versions("demo") == []
    assert store.incomplete_versions("demo") == [1]


# ------------------------------------------------------------------------------------------ the fault, end to end


def forge(store: ModelStore, name: str, version: int, pickle_bytes: bytes) -> Any:
    """What a principal with unconditional PutObject can do: overwrite the pickle, re-seal the manifest."""
    folder = f"{name}/versions/{version:06d}/"
    manifest = store.manifest(name, version)
    artifacts = manifest.artifacts | {"model.joblib": sha256_hex(pickle_bytes)}
    forged = manifest.model_copy(update={"artifacts": artifacts, "manifest_sha256": None})
    store.objects.put(folder + "model.joblib", pickle_bytes)
    store.objects.put(folder + "manifest.json", forged.sealed())
    return forged.model_copy(update={"manifest_sha256": forged.body_sha256()})


class Payload:
    """A pickle that creates a file when loaded: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def malicious_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(Payload(marker), buffer)
    return buffer.getvalue()


def test_forged_model_is_refused_by_the_sklearn_runtime_and_serving_continues_on_the_last_good_version(
    fresh_handler: Callable[..., ModuleType],
    trained_store: Path,
    key_arn: str,
    tmp_path: Path,
    verify_locally: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (without `cryptography`, as in the Lambda layers, the function asks KMS to verify)
    monkeypatch.setattr("sklambda.signing.can_verify_locally", lambda: verify_locally)
    # Given a signed store: v1 (the trained sample model) serving through the sklearn runtime, and v2, a signed
    # copy of it
    root = tmp_path / "store"
    publisher = ModelStore(LocalObjects(root), signing=ManifestSigning(KmsSigningKey(key_arn)))
    source = ModelStore.from_uri(str(trained_store))
    v1 = source.manifest("penguins", 1)
    files = {file: source.artifact(v1, file) for file in v1.artifacts}
    for _ in range(2):
        publisher.publish(v1.model_copy(update={"artifacts": {}, "manifest_sha256": None}), files)
    publisher.promote("penguins", 1, by="test", reason="first")
    app = fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(root),
        MODEL_NAME="penguins",
        ALIAS_REFRESH_SECONDS="0",
        SERVING_RUNTIME="sklearn",
        MANIFEST_SIGNING_KEY=key_arn,
    )
    assert served_version(app) == 1

    # When a principal with unconditional PutObject replaces v2's pickle with one that runs code, writes a
    # re-sealed manifest, and the alias moves to v2
    marker = tmp_path / "payload-ran"
    forge(publisher, "penguins", 2, malicious_pickle(marker))
    publisher.promote("penguins", 2, by="attacker", reason="forged")

    # Then the sklearn runtime refuses v2 before unpickling it, and v1 keeps answering
    assert served_version(app) == 1
    assert not marker.exists()
    # (the same pickle does run code when loaded without the check: the test's payload is real)
    joblib.load(io.BytesIO(malicious_pickle(marker)))
    assert marker.exists()


def test_an_unsigned_champion_is_not_served_by_the_sklearn_runtime_when_signatures_are_required(
    fresh_handler: Callable[..., ModuleType], local_store_copy: Path, key_arn: str
) -> None:
    app = fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(local_store_copy),
        MODEL_NAME="penguins",
        ALIAS_REFRESH_SECONDS="0",
        SERVING_RUNTIME="sklearn",
        MANIFEST_SIGNING_KEY=key_arn,
    )
    response = app.lambda_handler(load_event("predict"), LambdaContext())
    assert response["statusCode"] == 503


def served_version(app: ModuleType) -> int:
    response = app.lambda_handler(load_event("predict"), LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    return int(json.loads(response["body"])["model"]["version"])


def test_signature_record_round_trips_in_the_stored_json(signed_store: ModelStore) -> None:
    signed_store.publish(make_manifest(), {"model.joblib": b"x"})
    stored = json.loads(signed_store.objects.get("demo/versions/000001/manifest.json").data)
    assert ManifestSignature(**stored["signature"]).algorithm == SIGNING_ALGORITHM
