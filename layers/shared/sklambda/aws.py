"""The only module that talks to AWS (the AWS SDK for Python). Everything else receives the objects made here.

Reading the model store (the predict path): signed GETs made here with botocore's own SigV4 signer
(`botocore.auth.S3SigV4Auth` over `botocore.awsrequest`) and sent with urllib3, without a botocore client. A client
loads the S3 service model, endpoint rules and partitions when it is created: measured from the built bundle
(benchmarks/cold_start.py) that is most of the SDK's share of a cold start. Conditional reads (If-None-Match, the
alias check) are plain headers. Credentials: Lambda's environment variables (AWS_ACCESS_KEY_ID...), else botocore's
credential chain (profiles, SSO, instance roles) on a laptop. Endpoint: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
(a local S3 server) or the region's S3 endpoint.

Everything else (writes, listings, Lambda, SNS, CodeDeploy) uses botocore clients, which read the same
configuration.

Time limits: inside a `sklambda.deadlines.within` block (the predict handler sets one per request and one for its
init), every read and its retries end by that one deadline, body included, however slowly the store answers or
trickles; outside one, a call gives up within RETRY_BUDGET_SECONDS of its start. For botocore clients, a hook
added here refuses any retry that could not finish in time, counting one more attempt (connect + read timeout)
plus the longest backoff botocore may pick (measured in tests/integration against a local server answering 503,
SlowDown, nothing at all, after 5 s, or a byte at a time).
"""

from __future__ import annotations

import functools
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from sklambda import deadlines
from sklambda.errors import NotFound, PreconditionFailed, StoreUnavailable
from sklambda.objects import Blob

if TYPE_CHECKING:
    import botocore.session
    from botocore.awsrequest import AWSPreparedRequest
    from botocore.config import Config
    from mypy_boto3_s3 import S3Client

# A failed S3 call gives up within this many seconds of its start when no deadline is set.
RETRY_BUDGET_SECONDS = 6.0
_CONNECT_TIMEOUT = 1.0
# Per socket read, not per download: a large artifact streams fine as long as bytes keep coming (within the
# deadline).
_READ_TIMEOUT = 2.0
_MAX_ATTEMPTS = 5
_DEADLINE = "sklambda_retry_deadline"
# botocore's standard backoff is rand(0, 1) * min(scale * 2 ** (attempt - 1), 20) with scale 1 for throttling
# (less for other errors), plus at most 5 s more when S3 sends x-amz-retry-after.
_MAX_BACKOFF_SECONDS = 20.0
_RETRY_AFTER_EXTRA_SECONDS = 5.0


def _call_deadline() -> float:
    """When a call starting now must have ended: the current deadline, else the per-call budget."""
    budget = time.monotonic() + RETRY_BUDGET_SECONDS
    deadline = deadlines.current()
    return budget if deadline is None else min(budget, deadline)


def _start_retry_clock(context: dict[str, Any], **_: Any) -> None:
    context[_DEADLINE] = _call_deadline()


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
    import botocore.session

    return botocore.session.get_session()


@functools.cache
def _client_config() -> Config:
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": _MAX_ATTEMPTS},
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
    )


def make_s3_client(**client_options: Any) -> S3Client:
    """An S3 client with bounded timeouts and retries that stop by the deadline (or RETRY_BUDGET_SECONDS)."""
    # botocore's stubs type every client as BaseClient; this one is S3's.
    client = cast("S3Client", _session().create_client("s3", config=_client_config(), **client_options))
    client.meta.events.register("before-call.s3", _start_retry_clock)
    # The stubs type handlers as returning None; botocore reads needs-retry handlers' return values.
    client.meta.events.register_first("needs-retry.s3", _refuse_retry_past_deadline)  # type: ignore[arg-type]
    return client


@functools.cache
def s3_client() -> S3Client:
    # One client per process, reused across warm invocations; AWS_ENDPOINT_URL(_S3) points it at a local
    # S3 (moto server) for tests and `sam local`, without any code path of our own for that.
    return make_s3_client()


# ------------------------------------------------------------------------------------------ signed GETs


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class TransientError(Exception):
    """The request did not get a complete answer (connection refused or reset, a timeout): worth retrying."""


# Sends a signed request and reads the whole reply by the deadline (monotonic time), or raises TransientError.
Transport = Callable[["AWSPreparedRequest", float], HttpReply]
_BODY_CHUNK = 1 << 20


@functools.cache
def _pool() -> Any:
    import urllib3

    # AWS_CA_BUNDLE as botocore reads it; else the system's trust store.
    return urllib3.PoolManager(maxsize=4, retries=False, ca_certs=os.environ.get("AWS_CA_BUNDLE"))


def urllib3_transport(request: AWSPreparedRequest, deadline: float) -> HttpReply:
    """The request over urllib3 (what botocore itself sends with). Each socket wait is bounded by the time left,
    and the body is read in chunks checked against the deadline, so a store that trickles cannot hold it."""
    import urllib3

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransientError("deadline reached")
        return remaining

    try:
        response = _pool().request(
            request.method,
            request.url,
            headers=dict(request.headers.items()),
            preload_content=False,
            timeout=urllib3.Timeout(connect=min(_CONNECT_TIMEOUT, left()), read=min(_READ_TIMEOUT, left())),
            redirect=False,
        )
        try:
            chunks = []
            while chunk := response.read1(_BODY_CHUNK):
                chunks.append(chunk)
                sock = getattr(response.connection, "sock", None)
                if sock is not None:
                    sock.settimeout(min(_READ_TIMEOUT, left()))
            return HttpReply(response.status, response.headers, b"".join(chunks))
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as error:
        raise TransientError(f"{type(error).__name__}: {error}") from None
    except OSError as error:  # a socket timeout set mid-body
        raise TransientError(f"{type(error).__name__}: {error}") from None


# Tests replace this (moto's in-process mock intercepts botocore clients only; tests/conftest.py routes these
# requests through it).
transport: Transport = urllib3_transport

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def _region() -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return region or str(_session().get_config_variable("region") or "us-east-1")


def _endpoint(bucket: str) -> tuple[str, bool]:
    """(base URL, path-style?) for a bucket: a configured endpoint (a local S3) path-style, else the region's S3
    endpoint with the bucket in the host name (virtual-hosted style, as botocore does for DNS-safe names)."""
    configured = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if configured:
        return configured.rstrip("/"), True
    region = _region()
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    if "." in bucket or bucket.lower() != bucket:
        return f"https://s3.{region}.{domain}", True
    return f"https://{bucket}.s3.{region}.{domain}", False


class _EnvironmentCredentials(NamedTuple):
    """Keys from the environment, in the shape botocore's signer reads (its own frozen credentials,
    botocore.credentials.ReadOnlyCredentials, are this same named tuple): importing botocore.credentials for them
    (with dateutil's parser, the SSO token provider, subprocess...) was a measurable share of a cold start with
    the model in S3."""

    access_key: str
    secret_key: str
    token: str | None


def _credentials() -> Any:
    """Lambda's (and CI's) environment variables, read at each request (SnapStart restores with new ones);
    else botocore's credential chain, refreshed by botocore."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return _EnvironmentCredentials(key, secret, os.environ.get("AWS_SESSION_TOKEN"))
    chain = _session().get_credentials()
    if chain is None:
        raise StoreUnavailable("no AWS credentials found (environment, profile or role)")
    return chain.get_frozen_credentials()


def _backoff(attempt: int) -> float:
    """Full jitter, as botocore's standard mode: rand(0, 1) * min(0.1 * 2 ** attempt, 2) seconds."""
    jitter: float = random.random()  # noqa: S311 - jitter, not security
    return jitter * min(0.1 * 2.0**attempt, 2.0)


def signed_get(bucket: str, key: str, headers: Mapping[str, str] | None = None) -> HttpReply:
    """GET an S3 object, signed with SigV4, retried on throttling, 5xx and connection problems until the deadline
    (`sklambda.deadlines`, else RETRY_BUDGET_SECONDS). Any status S3 answers with is returned (200, 304, 404...);
    StoreUnavailable when no answer came in time."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    deadline = _call_deadline()
    base, path_style = _endpoint(bucket)
    path = "/" + urllib.parse.quote(key, safe="/~")
    url = f"{base}/{bucket}{path}" if path_style else f"{base}{path}"
    problem = "no attempt"
    for attempt in range(_MAX_ATTEMPTS):
        request = AWSRequest(method="GET", url=url, headers=dict(headers or {}))
        S3SigV4Auth(_credentials(), "s3", _region()).add_auth(request)
        try:
            reply = transport(request.prepare(), deadline)
        except TransientError as error:
            problem = str(error)
        else:
            if reply.status not in _RETRYABLE_STATUS:
                return reply
            problem = f"HTTP {reply.status} {_s3_error_code(reply.body)}".strip()
        pause = _backoff(attempt)
        # Another attempt only if it can get a reply in time (a connect and a first byte, at the least).
        if time.monotonic() + pause + 0.1 >= deadline:
            break
        time.sleep(pause)
    raise StoreUnavailable(f"S3 GET of s3://{bucket}/{key} failed: {problem}")


def _s3_error_code(body: bytes) -> str:
    start, end = body.find(b"<Code>"), body.find(b"</Code>")
    return body[start + 6 : end].decode(errors="replace") if 0 <= start < end else ""


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
        blob = self.get_if_changed(key, None)
        assert blob is not None  # only a conditional read answers "not modified"
        return blob

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        reply = signed_get(self.bucket, self.prefix + key, {"If-None-Match": f'"{etag}"'} if etag else None)
        if reply.status == 200:
            return Blob(reply.body, reply.headers.get("ETag", "").strip('"'))
        if reply.status == 304:
            return None
        code = _s3_error_code(reply.body)
        if reply.status == 404:
            raise NotFound(f"{self.uri(key)} does not exist")
        raise StoreUnavailable(f"S3 GET on {self.uri(key)} failed: {code or reply.status}")

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = f'"{if_match}"'
        response = self._call("put_object", key, Body=data, ChecksumAlgorithm="SHA256", **conditions)
        return str(response["ETag"]).strip('"')

    def list(self, prefix: str) -> list[str]:
        # The same listing as `sizes` (one paging loop, one set of error replies), keys only.
        return sorted(self.sizes(prefix))

    def delete(self, key: str) -> None:
        self._call("delete_object", key)

    def sizes(self, prefix: str) -> dict[str, int]:
        """Size of every object under prefix, from the listing alone (no object is read)."""
        sizes: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                sizes.update({item["Key"][len(self.prefix) :]: int(item["Size"]) for item in page.get("Contents", [])})
        except ClientError as error:
            if _error_code(error) == "NoSuchBucket":
                raise NotFound(f"bucket {self.bucket} does not exist") from None
            raise StoreUnavailable(f"S3 list on {self.uri(prefix)} failed: {_error_code(error)}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"S3 list on {self.uri(prefix)} failed: {error}") from error
        return sizes


@functools.cache
def lambda_client() -> Any:
    # Read timeout covers a cold predict function loading and self-testing a model.
    from botocore.config import Config

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
    return _session().create_client("sns", config=_client_config())


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
    return _session().create_client("codedeploy", config=_client_config())


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


# ------------------------------------------------------------------ KMS: manifest signing (sklambda.signing)


@functools.cache
def kms_client() -> Any:
    return _session().create_client("kms", config=_client_config())


class KmsSigningKey:
    """An AWS KMS asymmetric key (ECC_NIST_P256, SIGN_VERIFY). The key policy decides who may Sign (the publishing
    roles) and who may fetch the public half (the readers, which verify locally)."""

    def __init__(self, key_id: str, client: Any = None) -> None:
        self.key_id = key_id
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = kms_client()
        return self._client

    def sign(self, message: bytes) -> bytes:
        try:
            response = self.client.sign(
                KeyId=self.key_id, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
            )
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"signing the manifest with KMS key {self.key_id} failed: {error}") from error
        return bytes(response["Signature"])

    def public_key_der(self) -> bytes:
        try:
            response = self.client.get_public_key(KeyId=self.key_id)
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"reading the public key of KMS key {self.key_id} failed: {error}") from error
        return bytes(response["PublicKey"])

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            response = self.client.verify(
                KeyId=self.key_id,
                Message=message,
                MessageType="RAW",
                Signature=signature,
                SigningAlgorithm="ECDSA_SHA_256",
            )
        except ClientError as error:
            if _error_code(error) == "KMSInvalidSignatureException":
                return False
            raise StoreUnavailable(f"verifying a signature with KMS key {self.key_id} failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"verifying a signature with KMS key {self.key_id} failed: {error}") from error
        return bool(response["SignatureValid"])


# ---------------------------------------------------------------- SageMaker Training jobs and their state machine
@functools.cache
def stepfunctions_client() -> Any:
    return _session().create_client("stepfunctions", config=_client_config())


@functools.cache
def sagemaker_client() -> Any:
    return _session().create_client("sagemaker", config=_client_config())


def start_execution(state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
    """Start a Step Functions execution named `name` (unique per state machine for 90 days: a second start of
    the same run fails instead of starting a second job) and return its ARN."""
    try:
        response = stepfunctions_client().start_execution(
            stateMachineArn=state_machine_arn, name=name, input=orjson.dumps(payload).decode()
        )
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable(f"starting an execution of {state_machine_arn} failed: {error}") from error
    return str(response["executionArn"])


def stop_execution(execution_arn: str, cause: str) -> None:
    try:
        stepfunctions_client().stop_execution(executionArn=execution_arn, cause=cause[:32768])
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable(f"stopping {execution_arn} failed: {error}") from error


def describe_training_job(job_name: str) -> dict[str, Any]:
    """SageMaker's view of a training job (status, secondary status, failure reason, times); NotFound if none
    was created (yet: the state machine creates it moments after the run is handed over)."""
    try:
        response: dict[str, Any] = sagemaker_client().describe_training_job(TrainingJobName=job_name)
    except ClientError as error:
        if _error_code(error) in {"ValidationException", "ResourceNotFound"}:
            raise NotFound(f"no training job {job_name}") from None
        raise StoreUnavailable(f"describing training job {job_name} failed: {error}") from error
    except BotoCoreError as error:
        raise StoreUnavailable(f"describing training job {job_name} failed: {error}") from error
    return response


def stop_training_job(job_name: str) -> None:
    """Ask SageMaker to stop a job (its container gets SIGTERM, then SIGKILL after a grace period)."""
    try:
        sagemaker_client().stop_training_job(TrainingJobName=job_name)
    except ClientError as error:
        if _error_code(error) in {"ValidationException", "ResourceNotFound"}:
            raise NotFound(f"no running training job {job_name}: {error}") from None
        raise StoreUnavailable(f"stopping training job {job_name} failed: {error}") from error
    except BotoCoreError as error:
        raise StoreUnavailable(f"stopping training job {job_name} failed: {error}") from error


@functools.cache
def cloudwatch_client() -> Any:
    return _session().create_client("cloudwatch", config=_client_config())


def put_metrics(namespace: str, dimensions: dict[str, str], values: dict[str, tuple[float, str]]) -> None:
    """Put metrics {name: (value, unit)} with these dimensions: what a SageMaker job reports of its run (its
    logs reach CloudWatch through SageMaker's agent, which does not extract embedded metric format)."""
    if not values:
        return
    dimension_list = [{"Name": name, "Value": value} for name, value in dimensions.items()]
    try:
        cloudwatch_client().put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": name, "Dimensions": dimension_list, "Value": value, "Unit": unit}
                for name, (value, unit) in values.items()
            ],
        )
    except (ClientError, BotoCoreError) as error:
        raise StoreUnavailable(f"putting metrics in {namespace} failed: {error}") from error


# Capture (sklambda/capture.py) flushes inside a prediction: short timeouts and one retry, so that a slow or
# failing Firehose costs that request at most a few seconds and drops the batch (counted) rather than the request.
@functools.cache
def firehose_client() -> Any:
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=1.0, read_timeout=2.0)
    return _session().create_client("firehose", config=config)


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
