"""Shared fixtures: events from events/, a Lambda context, stores (local folder and S3 under moto), a trained
sample model, and fresh imports of the handlers (they read their configuration once, at import, like Lambda)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws
from moto.core.config import DefaultConfig
from moto.core.models import botocore_stubber
from moto.s3 import responses as moto_s3_responses
from moto.server import ThreadedMotoServer

from sklambda import aws
from sklambda.store import ModelStore
from tests.faults import S3FaultProxy

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"
PENGUINS_CSV = REPO / "training" / "data" / "penguins.csv"
BUCKET = "sklambda-test-models"

# No test may reach real AWS: fake credentials and a fixed region for boto3 (moto intercepts the calls).
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    POWERTOOLS_METRICS_NAMESPACE="SklambdaTests",
    POWERTOOLS_SERVICE_NAME="tests",
)


# S3 evaluates If-Match / If-None-Match atomically with the write; moto 5.2.5's put_object checks the condition and
# then writes without a lock, so two threads can both pass the check (seen: two run-lock winners). Serialising
# moto's put_object gives the tests S3's guarantee; our code relies on S3's, not on this.
_moto_put_object = moto_s3_responses.S3Response.put_object
_moto_put_lock = threading.Lock()


def _atomic_put_object(self: moto_s3_responses.S3Response) -> Any:
    with _moto_put_lock:
        return _moto_put_object(self)


moto_s3_responses.S3Response.put_object = _atomic_put_object  # type: ignore[method-assign]


def load_event(name: str) -> dict[str, Any]:
    """An event from events/ (the same files `sam local invoke -e` uses)."""
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


@dataclass
class LambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


def moto_transport(request: Any, deadline: float) -> aws.HttpReply:
    """sklambda.aws's signed GETs through moto's in-process mock (which intercepts botocore clients' sends only),
    else over the network as in production."""
    response = botocore_stubber("before-send.s3.GetObject", request)
    if response is None:
        return aws.urllib3_transport(request, deadline)
    return aws.HttpReply(response.status_code, response.headers, response.content)


def _clear_aws_clients() -> None:
    for client in (
        aws.s3_client,
        aws.lambda_client,
        aws.sns_client,
        aws.codedeploy_client,
        aws.kms_client,
        aws.stepfunctions_client,
        aws.sagemaker_client,
        aws.cloudwatch_client,
        aws.firehose_client,
    ):
        client.cache_clear()


@contextlib.contextmanager
def moto_aws(config: DefaultConfig | None = None) -> Iterator[None]:
    """moto for every AWS call inside: the cached clients are rebuilt inside the mock, and the store's signed GETs
    (which bypass botocore's client: aws.transport) go to moto too."""
    _clear_aws_clients()
    # Set and restored here, not with monkeypatch: a test's own monkeypatch.undo() must not take it away.
    production_transport, aws.transport = aws.transport, moto_transport
    try:
        with mock_aws(config=config):
            yield
    finally:
        aws.transport = production_transport
        _clear_aws_clients()


@pytest.fixture
def aws_mock() -> Iterator[None]:
    """moto for every AWS call in the test."""
    with moto_aws():
        yield


@pytest.fixture
def s3_bucket(aws_mock: None) -> str:
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return BUCKET


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    """The same tests run against both backends: a local folder and S3 (moto)."""
    if request.param == "local":
        return ModelStore.from_uri(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_bucket")
    return ModelStore.from_uri(f"s3://{bucket}/models")


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store holding the sample model as v1 (champion), trained once per test session."""
    from training.cli import main

    root = tmp_path_factory.mktemp("trained") / "store"
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", str(root)]) == 0
    return root


@pytest.fixture
def local_store_copy(trained_store: Path, tmp_path: Path) -> Path:
    """A private copy of the trained store that a test may change."""
    target = tmp_path / "store"
    shutil.copytree(trained_store, target)
    return target


@pytest.fixture
def fresh_handler(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    """Import a handler module anew under the given environment (a cold start)."""

    def load(module: str, **environment: str) -> ModuleType:
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        sys.modules.pop(module, None)
        return importlib.import_module(module)

    return load


@pytest.fixture
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free local port, for what the in-process mock cannot reach (other processes, a
    fault-injecting proxy). Its state is reset afterwards."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    yield url
    requests.post(f"{url}/moto-api/reset", timeout=10)
    server.stop()


@pytest.fixture
def s3_proxy(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3FaultProxy]:
    """The versioned test bucket on a moto server, reached through a proxy that can fail on demand: every S3
    client made in the test (AWS_ENDPOINT_URL) goes through it."""
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    proxy = S3FaultProxy(moto_server).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    aws.s3_client.cache_clear()
    yield proxy
    aws.s3_client.cache_clear()
    proxy.stop()


def upload_store(local_root: Path, s3_uri: str) -> None:
    """Copy a local model store into S3 key by key (the layouts are the same)."""
    store = ModelStore.from_uri(s3_uri)
    for path in sorted(local_root.rglob("*")):
        key = path.relative_to(local_root).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in key.split("/")):
            store.objects.put(key, path.read_bytes())


@pytest.fixture(params=["local", "s3"])
def three_versions(request: pytest.FixtureRequest, trained_store: Path, tmp_path: Path) -> str:
    """A store (local folder, or S3 under moto) holding the sample model as v1 and v2 (champion, promoted in turn
    by `train`) and v3 (published, not promoted). Returns its URI."""
    from training.cli import main

    if request.param == "local":
        uri = str(tmp_path / "store")
        shutil.copytree(trained_store, uri)
    else:
        uri = f"s3://{request.getfixturevalue('s3_bucket')}/models"
        upload_store(trained_store, uri)
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", uri]) == 0
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", uri, "--no-promote"]) == 0
    return uri
