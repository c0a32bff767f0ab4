"""The only module that talks to AWS (boto3). Everything else receives the objects made here.

Retries are bounded so that a failing service gives a clear error inside the Lambda timeout rather than a
timeout: botocore "standard" mode, 3 attempts, short connect/read timeouts (measured in shared notes: legacy
mode with 5 attempts against a 503ing server took 6 s, standard with 3 took 2.2 s).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sklambda.errors import NotFound, PreconditionFailed, StoreUnavailable
from sklambda.objects import Blob

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=2,
    read_timeout=5,
)


@functools.cache
def s3_client() -> S3Client:
    # One client per process, reused across warm invocations; AWS_ENDPOINT_URL(_S3) points it at a local
    # S3 (moto server) for tests and `sam local`, without any code path of our own for that.
    return boto3.client("s3", config=_CLIENT_CONFIG)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key


class S3Objects:
    """An S3 bucket + prefix behind the ObjectStore interface, with S3's conditional writes
    (If-None-Match: * to create only, If-Match: etag to compare-and-swap)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client

    @classmethod
    def from_uri(cls, uri: str) -> S3Objects:
        bucket, prefix = split_s3_uri(uri)
        return cls(bucket, prefix)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _call(self, operation: str, key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, Key=self.prefix + key, **kwargs)
        except ClientError as error:
            code, status = _error_code(error), _http_status(error)
            if code in {"NoSuchKey", "404", "NotFound"} or status == 404:
                raise NotFound(f"{self.uri(key)} does not exist") from None
            if code in {"PreconditionFailed", "ConditionalRequestConflict"} or status in {409, 412}:
                raise PreconditionFailed(f"{self.uri(key)}: conditional write lost ({code})") from None
            if status == 304:
                raise
            raise StoreUnavailable(f"S3 {operation} on {self.uri(key)} failed: {code or status}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"S3 {operation} on {self.uri(key)} failed: {error}") from error

    def get(self, key: str) -> Blob:
        response = self._call("get_object", key)
        return Blob(response["Body"].read(), response["ETag"].strip('"'))

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        if etag is None:
            return self.get(key)
        try:
            response = self._call("get_object", key, IfNoneMatch=f'"{etag}"')
        except ClientError as error:
            if _http_status(error) == 304:
                return None
            raise
        return Blob(response["Body"].read(), response["ETag"].strip('"'))

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = f'"{if_match}"'
        response = self._call("put_object", key, Body=data, ChecksumAlgorithm="SHA256", **conditions)
        return str(response["ETag"]).strip('"')

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        except ClientError as error:
            if _error_code(error) == "NoSuchBucket":
                raise NotFound(f"bucket {self.bucket} does not exist") from None
            raise StoreUnavailable(f"S3 list on {self.uri(prefix)} failed: {_error_code(error)}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"S3 list on {self.uri(prefix)} failed: {error}") from error
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("delete_object", key)


@functools.cache
def lambda_client() -> Any:
    # Read timeout covers a cold predict function loading and self-testing a model.
    return boto3.client("lambda", config=Config(retries={"mode": "standard", "max_attempts": 2}, read_timeout=60))


def invoke_json(function_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Invoke a function synchronously with a JSON payload and return its JSON result."""
    try:
        response = lambda_client().invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=orjson.dumps(payload)
        )
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable(f"invoking {function_name} failed: {error}") from error
    body = response["Payload"].read()
    if response.get("FunctionError"):
        raise StoreUnavailable(f"{function_name} failed: {body[:500]!r}")
    result = orjson.loads(body)
    if not isinstance(result, dict):
        raise StoreUnavailable(f"{function_name} returned {type(result).__name__}, expected an object")
    return result


def invoke_event(function_name: str, payload: dict[str, Any]) -> None:
    """Invoke a function asynchronously (InvocationType=Event): Lambda queues the event and answers 202 at once;
    its retries and on-failure destination are the function's EventInvokeConfig."""
    try:
        response = lambda_client().invoke(
            FunctionName=function_name, InvocationType="Event", Payload=orjson.dumps(payload)
        )
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable(f"invoking {function_name} asynchronously failed: {error}") from error
    if response.get("StatusCode") != 202:
        raise StoreUnavailable(f"invoking {function_name} asynchronously answered {response.get('StatusCode')}")


@functools.cache
def sns_client() -> Any:
    return boto3.client("sns", config=_CLIENT_CONFIG)


def publish_message(topic_arn: str, subject: str, message: dict[str, Any], attributes: dict[str, str]) -> str:
    """Publish a JSON message to an SNS topic; `attributes` become string message attributes (for filtering)."""
    try:
        response = sns_client().publish(
            TopicArn=topic_arn,
            Subject=subject[:100],  # SNS's limit
            Message=orjson.dumps(message).decode(),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            },
        )
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable(f"publishing to {topic_arn} failed: {error}") from error
    return str(response["MessageId"])
