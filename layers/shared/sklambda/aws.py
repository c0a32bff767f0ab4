"""The only module that talks to AWS (the AWS SDK for Python). Everything else receives the objects made here.

Clients come from botocore, the SDK's core that boto3 wraps: `import boto3` also imports s3transfer and boto3's
resource layer, which nothing here uses, and costs the predict function's cold start ~50 ms more (measured from
the built bundle: benchmarks/cold_start.py). botocore reads the same configuration (AWS_ENDPOINT_URL(_S3),
AWS_DEFAULT_REGION, the credential chain).

A failing S3 must give a clear error inside the Lambda timeout (predict: 10 s), not a timeout. botocore retries
by attempt count only, so its "standard" mode keeps deciding *whether* and *how long* to back off (throttling,
5xx, connection errors), and a hook added here refuses any retry that could not finish within
`RETRY_BUDGET_SECONDS` of the call's start, counting the worst case of one more attempt (connect + read timeout)
plus the longest backoff botocore may pick. A failing call therefore ends within the budget, whatever S3 does
(measured in tests/unit/test_s3_faults.py against a local server answering 503, SlowDown, or nothing at all).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import botocore.session
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sklambda.errors import NotFound, PreconditionFailed, StoreUnavailable
from sklambda.objects import Blob

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# A failed S3 call gives up within this many seconds of its start (well inside predict's 10 s timeout).
RETRY_BUDGET_SECONDS = 6.0
_CONNECT_TIMEOUT = 1.0
# Per socket read, not per download: a large artifact streams fine as long as bytes keep coming.
_READ_TIMEOUT = 2.0
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=_CONNECT_TIMEOUT,
    read_timeout=_READ_TIMEOUT,
)
_DEADLINE = "sklambda_retry_deadline"
# botocore's standard backoff is rand(0, 1) * min(scale * 2 ** (attempt - 1), 20) with scale 1 for throttling
# (less for other errors), plus at most 5 s more when S3 sends x-amz-retry-after.
_MAX_BACKOFF_SECONDS = 20.0
_RETRY_AFTER_EXTRA_SECONDS = 5.0


def _start_retry_clock(context: dict[str, Any], **_: Any) -> None:
    context[_DEADLINE] = time.monotonic() + RETRY_BUDGET_SECONDS


def _refuse_retry_past_deadline(
    request_dict: dict[str, Any], attempts: int, response: Any = None, **_: Any
) -> bool | None:
    """None lets botocore's own retry handler decide; False (registered first, so it wins) stops retrying."""
    deadline = request_dict.get("context", {}).get(_DEADLINE)
    if deadline is None:
        return None
    longest_backoff = min(2.0 ** (attempts - 1), _MAX_BACKOFF_SECONDS)
    if response is not None and "x-amz-retry-after" in response[0].headers:
        longest_backoff += _RETRY_AFTER_EXTRA_SECONDS
    worst_next_attempt = longest_backoff + _CONNECT_TIMEOUT + _READ_TIMEOUT
    return False if time.monotonic() + worst_next_attempt > deadline else None


@functools.cache
def _session() -> botocore.session.Session:
    """One botocore session per process (it loads the SDK's endpoint and partition data once)."""
    return botocore.session.get_session()


def make_s3_client(**client_options: Any) -> S3Client:
    """An S3 client with bounded timeouts and retries that stop within RETRY_BUDGET_SECONDS."""
    # botocore's stubs type every client as BaseClient; this one is S3's.
    client = cast("S3Client", _session().create_client("s3", config=_CLIENT_CONFIG, **client_options))
    client.meta.events.register("before-call.s3", _start_retry_clock)
    # The stubs type handlers as returning None; botocore reads needs-retry handlers' return values.
    client.meta.events.register_first("needs-retry.s3", _refuse_retry_past_deadline)  # type: ignore[arg-type]
    return client


@functools.cache
def s3_client() -> S3Client:
    # One client per process, reused across warm invocations; AWS_ENDPOINT_URL(_S3) points it at a local
    # S3 (moto server) for tests and `sam local`, without any code path of our own for that.
    return make_s3_client()


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
        return self._blob(key, self._call("get_object", key))

    def _blob(self, key: str, response: Any) -> Blob:
        try:
            data = response["Body"].read()  # streamed after the call returned: its errors need mapping too
        except BotoCoreError as error:
            raise StoreUnavailable(f"S3 read of {self.uri(key)} failed: {error}") from error
        return Blob(data, response["ETag"].strip('"'))

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        if etag is None:
            return self.get(key)
        try:
            response = self._call("get_object", key, IfNoneMatch=f'"{etag}"')
        except ClientError as error:
            if _http_status(error) == 304:
                return None
            raise
        return self._blob(key, response)

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
    return _session().create_client(
        "lambda", config=Config(retries={"mode": "standard", "max_attempts": 2}, read_timeout=60)
    )


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
    return _session().create_client("sns", config=_CLIENT_CONFIG)


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


@functools.cache
def codedeploy_client() -> Any:
    return _session().create_client("codedeploy", config=_CLIENT_CONFIG)


def report_hook_status(deployment_id: str, execution_id: str, *, passed: bool) -> None:
    """Tell CodeDeploy how a lifecycle hook (here: the predict rollout's pre-traffic check) ended; without this
    call the deployment waits for the hook's timeout and then fails."""
    try:
        codedeploy_client().put_lifecycle_event_hook_execution_status(
            deploymentId=deployment_id,
            lifecycleEventHookExecutionId=execution_id,
            status="Succeeded" if passed else "Failed",
        )
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable(f"reporting the hook status to CodeDeploy failed: {error}") from error


# Capture (sklambda/capture.py) flushes inside a prediction: short timeouts and one retry, so that a slow or
# failing Firehose costs that request at most a few seconds and drops the batch (counted) rather than the request.
_CAPTURE_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=1.0, read_timeout=2.0)


@functools.cache
def firehose_client() -> Any:
    return _session().create_client("firehose", config=_CAPTURE_CONFIG)


def firehose_sender(stream_name: str) -> Callable[[list[bytes]], int]:
    """A capture sender: PutRecordBatch of up to 500 records; the records Firehose refuses are sent once more.
    Returns how many were not accepted in the end; raises nothing (capture must not fail a prediction)."""

    def send(records: list[bytes]) -> int:
        pending = records
        for _attempt in range(2):
            try:
                response = firehose_client().put_record_batch(
                    DeliveryStreamName=stream_name, Records=[{"Data": data} for data in pending]
                )
            except (ClientError, BotoCoreError):
                return len(pending)
            if not response.get("FailedPutCount"):
                return 0
            pending = [
                data
                for data, result in zip(pending, response["RequestResponses"], strict=True)
                if result.get("ErrorCode")
            ]
        return len(pending)

    return send
