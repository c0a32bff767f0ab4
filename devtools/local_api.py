"""Serve a SAM template's API routes on localhost by running the real Lambda handlers in this process, no Docker.

`sam local start-api` needs a container runtime. This keeps everything of it except the container: the HTTP side is
SAM CLI's own API Gateway emulation (`LocalApigwService`, the Flask app behind `sam local start-api`), fed with the
routes SAM CLI's own providers read from the template, so routing, the proxy event and the response mapping are
SAM's. Only the Lambda runtime is replaced: `InProcessLambdaRunner` imports each function's handler here and calls it,
with the function's environment (resolved by samcli too) applied to `os.environ` around the import and each call.

It also serves the Lambda Invoke API on a second port, as `sam local start-lambda` does: SAM CLI's own
`LocalLambdaHttpService` in front of the same in-process runner, so a handler that invokes a function with boto3
(`InvocationType=Event` or `RequestResponse`) reaches the local function. The functions' boto3 finds it through
AWS_ENDPOINT_URL_LAMBDA, which is set for them (with placeholder credentials when the host has none).

Every samcli name it uses comes through devtools/samcli_adapter.py (SAM CLI has no public Python API); a LocalApi
checks there first that the installed SAM CLI has them. `make serve` runs it through devtools/serve.py.

    python -m devtools.local_api --template template.yaml --port 3000 --env MODEL_STORE_URI=model-store
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import io
import itertools
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType, TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, make_server

from devtools.samcli_adapter import (
    ApiProvider,
    IntrinsicsSymbolTable,
    LocalApigwService,
    LocalLambdaHttpService,
    LocalLambdaRunner,
    NoApisDefined,
    SamFunctionProvider,
    SamLocalStackProvider,
    check_compatible,
    env_vars_values,
    flask_app,
    placeholder_credentials,
    resolve_code_path,
    route_lines,
    stop_event_invocations,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000  # the port `sam local start-api` uses
DEFAULT_LAMBDA_PORT = 3001  # the port `sam local start-lambda` uses
# For the functions' boto3 when the host has no credentials: the local Lambda service does not check signatures.
_LOCAL_LAMBDA_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local-lambda", "AWS_SECRET_ACCESS_KEY": "local-lambda"}

# samcli's placeholder credentials, used when it found none.
_PLACEHOLDER_CREDENTIALS = placeholder_credentials()


class LambdaTimeoutError(Exception):
    """The handler ran past the function's Timeout; real Lambda would have stopped it and returned an error."""


class LambdaMarshalError(Exception):
    """The handler returned something that is not JSON; the real runtime reports `Runtime.MarshalError`."""

    lambda_error_type = "Runtime.MarshalError"


@dataclass
class LambdaContext:
    """The `context` argument, with the attribute names and types of the Python runtime's (awslambdaric)."""

    aws_request_id: str
    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: str  # a str in the real runtime as well: it is read from AWS_LAMBDA_FUNCTION_MEMORY_SIZE
    log_group_name: str
    log_stream_name: str
    deadline: float = field(repr=False)  # a time.monotonic() value
    tenant_id: str | None = None
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class _WarmFunction:
    """What survives between invocations of one function: its imported module, like a warm Lambda container."""

    package_name: str
    handler: Any


class InProcessLambdaRunner(LocalLambdaRunner):  # type: ignore[misc]  # samcli ships no type hints
    """A samcli `LocalLambdaRunner` (1.170.0) whose `invoke` runs the handler in this process instead of a container.

    Kept from the parent: `get_function` (lookup and validation), `get_invoke_config` and `_make_env_vars` (code path,
    Timeout, MemorySize, and the environment: template variables, then shell values, then the env-vars file, exactly
    as `sam local` resolves them). Replaced: the container runtime. `LocalApigwService` calls
    `invoke(name, event_json, stdout=..., stderr=...)` and reads the function's JSON result from `stdout`.

    One lock serialises all invocations, like a single Lambda container: `os.environ` and `sys.path` are process-wide
    and are switched to the invoked function's for the duration of its import (cold start) and each call.
    """

    _runner_serial = itertools.count()

    def __init__(
        self,
        function_provider: SamFunctionProvider,
        template_dir: Path,
        *,
        region: str,
        account_id: str,
        env_vars_values: Mapping[str, Any] | None = None,
        env_overrides: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            local_runtime=None,  # the container runtime: never used, invoke() below replaces it
            function_provider=function_provider,
            cwd=str(template_dir),
            real_path=str(template_dir),
            aws_region=region,
            env_vars_values=dict(env_vars_values or {}),
        )
        self.account_id = account_id
        self.env_overrides = dict(env_overrides or {})
        # Unique per runner, so two runners (say two LocalApi in one test session) never share an imported module.
        self._module_prefix = f"_local_lambda_{next(self._runner_serial)}_"
        self._invoke_lock = threading.Lock()
        self._lock_holder: int | None = None
        self._warm: dict[str, _WarmFunction] = {}
        self._log_streams: dict[str, str] = {}
        # One worker: "Event" invocations run in the background, in the order they were sent.
        self._event_invoker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda-event")
        for function in self.provider.get_all():  # fail now, not on the first request, on a malformed env-vars file
            self.get_invoke_config(function)

    def get_aws_creds(self) -> dict[str, str]:
        # The parent loads the host's credentials (boto3 session) to copy them into the container. In-process the
        # handler already has the host's credential chain, so pass only the region and never read credentials here.
        return {"region": self.aws_region}

    # The interface LocalApigwService and LocalLambdaHttpService drive (samcli 1.170.0 LocalLambdaRunner.invoke).
    def invoke(
        self,
        function_identifier: str,
        event: str,
        tenant_id: str | None = None,
        stdout: Any = None,
        stderr: Any = None,
        **_container_options: Any,
    ) -> dict[str, str] | None:
        """Invoke like the container runtime does: the result (or the runtime's error document) goes to `stdout`.

        Returns the response headers LocalLambdaHttpService adds: X-Amz-Function-Error when the handler failed, as
        the Lambda service sets it (samcli's own test for an error document misses the runtime's `requestId` key).
        LocalApigwService ignores the return value."""
        function = self.get_function(function_identifier, tenant_id)
        request_id = str(uuid.uuid4())
        headers = None
        payload = json.loads(event)
        _fresh_api_request_id(payload)
        try:
            response = self._invoke_function(function, payload, request_id, stderr, tenant_id)
        except LambdaTimeoutError as error:
            # Like a stopped container: no response at all, which LocalApigwService answers with a 502; the Lambda
            # service reports the timeout as an unhandled error.
            if _container_options.get("invocation_type") is None:
                return None
            response = json.dumps(_runtime_error_document(error, request_id))
            headers = {"X-Amz-Function-Error": "Unhandled"}
        except Exception as error:
            response = json.dumps(_runtime_error_document(error, request_id))
            headers = {"X-Amz-Function-Error": "Unhandled"}
        if stdout is not None:
            stdout.write_str(response)
        return headers

    def invoke_handler(self, function_identifier: str, event: Any) -> Any:
        """Invoke synchronously (InvocationType=RequestResponse): the handler's result as JSON would return it.

        Raises what the handler raised, `LambdaTimeoutError`, or `LambdaMarshalError` for a non-JSON result.
        """
        function = self.get_function(function_identifier)
        return json.loads(self._invoke_function(function, _as_json_value(event), str(uuid.uuid4()), None))

    def invoke_handler_async(self, function_identifier: str, event: Any) -> Future[Any]:
        """Invoke in the background (InvocationType=Event); errors are printed to stderr and kept in the Future."""
        function = self.get_function(function_identifier)  # an unknown function fails now, as lambda:Invoke does
        payload = _as_json_value(event)
        return self._event_invoker.submit(
            lambda: json.loads(self._invoke_function(function, payload, str(uuid.uuid4()), None))
        )

    def close(self) -> None:
        """Wait for background invocations, then forget the imported handler modules."""
        self._event_invoker.shutdown(wait=True)
        for warm in self._warm.values():
            _forget_modules(warm.package_name)
        self._warm.clear()

    def _invoke_function(
        self, function: Any, event: Any, request_id: str, stderr: Any, tenant_id: str | None = None
    ) -> str:
        with self._exclusive():
            config = self.get_invoke_config(function)  # reads the shell environment, so before ours is applied
            environment = self._environment_for(function, config)
            with _applied_environ(environment), _prepended_sys_path(self._search_path(function, config)):
                init_ms: float | None = None
                started = time.perf_counter()
                try:
                    warm = self._warm.get(function.full_path)
                    if warm is None:
                        warm = self._cold_start(function, config.handler, config.code_abs_path)
                        self._warm[function.full_path] = warm
                        init_ms = (time.perf_counter() - started) * 1000
                        started = time.perf_counter()  # like Lambda, the Timeout does not count the init phase
                    context = self._context_for(environment, request_id, config.timeout, tenant_id)
                    response = _marshal(warm.handler(event, context))
                except Exception as error:
                    frames = "".join(_handler_frames(error).format())
                    _log(stderr, f"[ERROR] {_error_type(error)}: {error}\nTraceback (most recent call last):\n{frames}")
                    raise
                finally:
                    duration_ms = (time.perf_counter() - started) * 1000
                    _log(stderr, _report_line(request_id, duration_ms, init_ms, config.memory))
        if duration_ms > config.timeout * 1000:
            message = f"{request_id} Task timed out after {config.timeout:.2f} seconds"
            _log(stderr, f"{datetime.now(UTC).isoformat()} {message}\n")
            raise LambdaTimeoutError(message)
        return response

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self._lock_holder == threading.get_ident():
            # The lock is not re-entrant on purpose: a nested call would see the caller's os.environ as its shell.
            raise RuntimeError("a handler invoked a function synchronously through the same runner; use invoke_async")
        with self._invoke_lock:
            self._lock_holder = threading.get_ident()
            try:
                yield
            finally:
                self._lock_holder = None

    def _environment_for(self, function: Any, config: Any) -> dict[str, str]:
        environment: dict[str, str] = dict(config.env_vars.resolve())
        for name, placeholder in _PLACEHOLDER_CREDENTIALS.items():
            if environment.get(name) == placeholder:
                del environment[name]  # keep the host's credential chain (see get_aws_creds)
        # What the Lambda service sets and samcli's EnvironmentVariables leaves to the container image.
        environment["AWS_LAMBDA_FUNCTION_NAME"] = function.functionname
        if not (function.logging_config or {}).get("LogGroup"):
            environment["AWS_LAMBDA_LOG_GROUP_NAME"] = f"/aws/lambda/{function.functionname}"
        environment["AWS_LAMBDA_LOG_STREAM_NAME"] = self._log_streams.setdefault(
            function.full_path, f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        )
        environment["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{function.runtime}"
        environment["LAMBDA_TASK_ROOT"] = config.code_abs_path
        environment["_HANDLER"] = config.handler
        environment.update(self.env_overrides)  # --env: every function, whether the template declares it or not
        return environment

    def _search_path(self, function: Any, config: Any) -> list[str]:
        """The function's code folder, then its layers' content, like /var/task then /opt/python in Lambda."""
        paths = [config.code_abs_path]
        for layer in function.layers:
            if not layer.codeuri:
                continue  # a layer given by ARN has no local content; its packages must be installed here
            layer_dir = Path(resolve_code_path(self.cwd, layer.codeuri))
            # A prebuilt layer keeps its packages in python/; a BuildMethod layer's folder becomes python/ at build.
            python_dir = layer_dir / "python"
            paths.append(str(python_dir if python_dir.is_dir() else layer_dir))
        return paths

    def _cold_start(self, function: Any, handler_spec: str, code_dir: str | None) -> _WarmFunction:
        """Import the handler's module under a package unique to this function, so two `app.py` never clash."""
        if not code_dir:
            raise NotImplementedError(f"{function.name}: only Zip functions (CodeUri + Handler) run in-process")
        module_path, _, handler_name = handler_spec.rpartition(".")
        if not module_path:
            raise ValueError(f"Bad handler {handler_spec!r}: expected 'module.function'")
        # A synthetic package whose __path__ is the CodeUri folder: `<package>.app` is that folder's app.py, and
        # relative imports inside it stay inside it.
        package_name = self._module_prefix + re.sub(r"\W", "_", function.full_path)
        package_spec = importlib.machinery.ModuleSpec(package_name, None, is_package=True)
        package_spec.submodule_search_locations = [code_dir]
        sys.modules[package_name] = importlib.util.module_from_spec(package_spec)
        try:
            module: ModuleType = importlib.import_module(f"{package_name}.{module_path.replace('/', '.')}")
            handler = getattr(module, handler_name)
        except BaseException:
            _forget_modules(package_name)  # a failed init is retried on the next invoke, as Lambda does
            raise
        return _WarmFunction(package_name=package_name, handler=handler)

    def _context_for(
        self, environment: Mapping[str, str], request_id: str, timeout_seconds: int, tenant_id: str | None
    ) -> LambdaContext:
        # Built from the environment, as awslambdaric builds it.
        function_name = environment["AWS_LAMBDA_FUNCTION_NAME"]
        return LambdaContext(
            aws_request_id=request_id,
            function_name=function_name,
            function_version=environment["AWS_LAMBDA_FUNCTION_VERSION"],
            invoked_function_arn=f"arn:aws:lambda:{self.aws_region}:{self.account_id}:function:{function_name}",
            memory_limit_in_mb=environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"],
            log_group_name=environment["AWS_LAMBDA_LOG_GROUP_NAME"],
            log_stream_name=environment["AWS_LAMBDA_LOG_STREAM_NAME"],
            deadline=time.monotonic() + timeout_seconds,
            tenant_id=tenant_id,
        )


def _fresh_api_request_id(event: Any) -> None:
    """Give an API Gateway event a request id of its own. samcli 1.170.0 (samcli.local.events.api_event) takes
    `requestContext.requestId` from a default argument evaluated once at import, so every request would share
    one id, where API Gateway gives each request its own (replies and logs carry it)."""
    if isinstance(event, dict) and isinstance(event.get("requestContext"), dict):
        event["requestContext"]["requestId"] = str(uuid.uuid4())


class LocalApi:
    """The API routes of a SAM template on http://HOST:PORT, served by SAM CLI's API Gateway emulation in-process.

    `with LocalApi("template.yaml", port=0) as api: requests.get(f"{api.url}/predict")`. Port 0 picks a free port.
    `stop()` is final: build a new LocalApi to serve again.
    """

    def __init__(
        self,
        template_path: str | os.PathLike[str],
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        lambda_port: int | None = None,
        env_overrides: Mapping[str, str] | None = None,
        env_vars_file: str | os.PathLike[str] | None = None,
        parameter_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        check_compatible()  # a clear message now rather than an AttributeError inside a server thread
        self.template_path = Path(template_path).resolve()
        self.host = host
        self.port = port
        # None: no Lambda Invoke API; 0: on a free port (chosen at start()).
        self.lambda_port = lambda_port
        template_dir = self.template_path.parent
        parameters = {name: str(value) for name, value in (parameter_overrides or {}).items()}
        pseudo_parameters = {**IntrinsicsSymbolTable.DEFAULT_PSEUDO_PARAM_VALUES, **parameters}
        region = pseudo_parameters["AWS::Region"]
        # The same calls `sam local start-api` makes (samcli 1.170.0): InvokeContext._get_stacks, then
        # LocalApiService's ApiProvider and InvokeContext's SamFunctionProvider, over the same stacks.
        stacks, _ = SamLocalStackProvider.get_stacks(
            str(self.template_path), parameter_overrides=parameters, global_parameter_overrides={"AWS::Region": region}
        )
        self.api = ApiProvider(stacks, cwd=str(template_dir)).api
        self.runner = InProcessLambdaRunner(
            SamFunctionProvider(stacks),
            template_dir,
            region=region,
            account_id=pseudo_parameters["AWS::AccountId"],
            env_vars_values=env_vars_values(str(env_vars_file) if env_vars_file else None),
            env_overrides=env_overrides,
        )
        self._servers: list[tuple[BaseWSGIServer, threading.Thread]] = []
        self._lambda_service: LocalLambdaHttpService | None = None

    @property
    def routes(self) -> list[tuple[str, str, str]]:
        """(method, path, function logical id) for every route, in the template's order."""
        return [(method, route.path, route.function_name) for route in self.api.routes for method in route.methods]

    @property
    def url(self) -> str:
        if self.port == 0:
            raise RuntimeError("port 0 is chosen when the server starts: call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def lambda_url(self) -> str:
        """Where the Lambda Invoke API listens (what AWS_ENDPOINT_URL_LAMBDA is set to for the functions)."""
        if not self.lambda_port:
            raise RuntimeError("no Lambda Invoke API: pass lambda_port, and call start() first when it is 0")
        return f"http://{self.host}:{self.lambda_port}"

    def start(self) -> Self:
        """Serve in background threads; returns at once."""
        if self._servers:
            raise RuntimeError("already started")
        if not self.api.routes:
            raise NoApisDefined("No APIs available in template")  # what `sam local start-api` says
        os.environ.setdefault("SAM_CLI_TELEMETRY", "0")  # samcli's request handler records telemetry events
        if self.lambda_port is not None:
            # LocalLambdaHttpService (samcli 1.170.0) is the Flask service behind `sam local start-lambda`; it
            # runs Event invocations on its own thread pool and answers 202, like the Lambda service.
            self._lambda_service = LocalLambdaHttpService(
                lambda_runner=self.runner, port=self.lambda_port, host=self.host
            )
            self.lambda_port = self._serve(flask_app(self._lambda_service), self.lambda_port, "local-lambda")
            self.runner.env_overrides.setdefault("AWS_ENDPOINT_URL_LAMBDA", self.lambda_url)
            if not _host_has_credentials():
                for name, value in _LOCAL_LAMBDA_CREDENTIALS.items():
                    self.runner.env_overrides.setdefault(name, value)
        service = LocalApigwService(api=self.api, lambda_runner=self.runner, port=self.port, host=self.host)
        app = _TextBodiesAsApiGateway(flask_app(service), self.api.binary_media_types)
        self.port = self._serve(app, self.port, "local-api")
        return self

    def _serve(self, app: Any, port: int, name: str) -> int:
        """Serve a samcli service's Flask app on a werkzeug server in a thread; returns the port. (samcli's own
        run() would block and install a SIGTERM handler, which only the main thread may do.)"""
        server = make_server(self.host, port, app, threaded=not self.runner.is_debugging())
        # A short poll interval: shutdown() waits for the serving loop's next poll, and tests stop servers often.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{name}-{server.server_port}", daemon=True
        )
        thread.start()
        self._servers.append((server, thread))
        return int(server.server_port)

    def stop(self) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join()
        self._servers.clear()
        if self._lambda_service is not None:
            stop_event_invocations(self._lambda_service)  # Event invocations still running finish first
            self._lambda_service = None
        self.runner.close()

    def invoke(self, function_logical_id: str, event: Any) -> Any:
        """Invoke a function directly (InvocationType=RequestResponse); see InProcessLambdaRunner.invoke_handler."""
        return self.runner.invoke_handler(function_logical_id, event)

    def invoke_async(self, function_logical_id: str, event: Any) -> Future[Any]:
        """Invoke a function in the background (InvocationType=Event); the Future is there for tests to wait on."""
        return self.runner.invoke_handler_async(function_logical_id, event)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _host_has_credentials() -> bool:
    import botocore.session  # only here: the module otherwise needs no AWS SDK

    return botocore.session.get_session().get_credentials() is not None


class _TextBodiesAsApiGateway:
    """WSGI middleware: a body that is not of a binary media type reaches the function as UTF-8 text, invalid
    bytes replaced by U+FFFD, as API Gateway passes it (binary uploads arrive garbled that way unless
    binaryMediaTypes lists their type). SAM CLI 1.170.0 answers such a request with 502 instead: it decodes
    strictly (samcli.local.apigw.event_constructor) and turns the UnicodeDecodeError into a Lambda failure."""

    def __init__(self, app: Any, binary_media_types: Sequence[str]) -> None:
        self.app = app
        self.binary_media_types = list(binary_media_types or [])

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        mimetype = str(environ.get("CONTENT_TYPE", "")).partition(";")[0].strip().lower()
        # samcli's test (event_constructor._should_base64_encode): those bodies go base64, untouched.
        binary = mimetype in self.binary_media_types or "*/*" in self.binary_media_types
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if not binary and length > 0:
            body = environ["wsgi.input"].read(length)
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                body = body.decode("utf-8", "replace").encode("utf-8")
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


@contextmanager
def _applied_environ(environment: Mapping[str, str]) -> Iterator[None]:
    """Lay the function's variables over os.environ; afterwards restore exactly those keys."""
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _prepended_sys_path(paths: Sequence[str]) -> Iterator[None]:
    """Put the function's folders first on sys.path for its sibling imports (`import helpers`) and layers."""
    added = [path for path in paths if path not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for path in added:
            sys.path.remove(path)


def _forget_modules(package_name: str) -> None:
    for name in [name for name in sys.modules if name == package_name or name.startswith(package_name + ".")]:
        del sys.modules[name]


def _as_json_value(event: Any) -> Any:
    """The event as the handler would get it in Lambda: decoded from JSON, sharing nothing with the caller."""
    return json.loads(json.dumps(event))


def _marshal(result: Any) -> str:
    try:
        return json.dumps(result)
    except (TypeError, ValueError) as error:
        raise LambdaMarshalError(f"Unable to marshal response: {error}") from error


def _error_type(error: BaseException) -> str:
    return str(getattr(error, "lambda_error_type", type(error).__name__))


def _runtime_error_document(error: BaseException, request_id: str) -> dict[str, Any]:
    """The document the Python runtime (awslambdaric make_error) returns when the handler raises.

    Its four keys are not a valid proxy response, so LocalApigwService answers 502, as API Gateway does.
    """
    return {
        "errorMessage": str(error),
        "errorType": _error_type(error),
        "requestId": request_id,
        "stackTrace": _handler_frames(error).format(),
    }


def _handler_frames(error: BaseException) -> traceback.StackSummary:
    """The traceback without this module's frames: the runtime reports only the function's own code."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__]
    return traceback.StackSummary.from_list(frames)


def _report_line(request_id: str, duration_ms: float, init_ms: float | None, memory_mb: int) -> str:
    line = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {memory_mb} MB"
    )
    if init_ms is not None:
        line += f"\tInit Duration: {init_ms:.2f} ms"
    return line + "\n"


def _log(stderr: Any, text: str) -> None:
    """Write to samcli's StreamWriter if the caller gave one, else to the current sys.stderr (as Lambda logs)."""
    if stderr is not None:
        stderr.write_str(text)
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


def _key_value(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name, value


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_api",
        description=(
            "Serve the API routes of a SAM template like `sam local start-api`, but run the Lambda handlers "
            "in this Python process (no Docker). Handlers are imported on their first request and stay warm."
        ),
    )
    parser.add_argument("--template", default="template.yaml", help="SAM template (default: template.yaml)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on, 0 for a free one (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--lambda-port",
        type=int,
        default=DEFAULT_LAMBDA_PORT,
        help=(
            "port of the Lambda Invoke API (what `sam local start-lambda` serves; functions reach it through "
            f"AWS_ENDPOINT_URL_LAMBDA), 0 for a free one, -1 for none (default: {DEFAULT_LAMBDA_PORT})"
        ),
    )
    parser.add_argument(
        "--env-vars",
        metavar="FILE",
        help=(
            "environment overrides in the format of `sam local --env-vars`: JSON "
            '{"Parameters": {...every function...}, "FunctionLogicalId": {...}} or a .env file; as in sam, it only '
            "overrides variables the template declares"
        ),
    )
    parser.add_argument(
        "--env",
        metavar="KEY=VALUE",
        type=_key_value,
        action="append",
        default=[],
        help="set an environment variable for every function, declared in the template or not (repeatable)",
    )
    parser.add_argument(
        "--parameter-overrides",
        metavar="KEY=VALUE",
        type=_key_value,
        nargs="+",
        action="extend",
        default=[],
        help="template parameter values, including pseudo parameters such as AWS::Region=eu-west-1",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _argument_parser().parse_args(argv)
    api = LocalApi(
        arguments.template,
        host=arguments.host,
        port=arguments.port,
        lambda_port=None if arguments.lambda_port < 0 else arguments.lambda_port,
        env_overrides=dict(arguments.env),
        env_vars_file=arguments.env_vars,
        parameter_overrides=dict(arguments.parameter_overrides),
    )
    return serve_until_stopped(api)


def serve_until_stopped(api: LocalApi, announce: Callable[[LocalApi], str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM, printing the routes as `sam local start-api` does, then `announce(api)`
    (written once the ports are known)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.INFO)  # one access line per request, as sam prints

    def stop_on_sigterm(_signal_number: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with api:
        for line in route_lines(api.api.routes, api.host, api.port):
            print(line)
        if api.lambda_port:
            print(f"Lambda Invoke API at {api.lambda_url} (the functions' AWS_ENDPOINT_URL_LAMBDA)")
        print(f"Serving {api.template_path.name} at {api.url} (handlers run in-process). Press Ctrl-C to stop.")
        if announce is not None:
            print(announce(api))
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Stopping.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
