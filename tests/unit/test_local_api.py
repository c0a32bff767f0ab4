"""devtools.local_api: SAM's API Gateway emulation in front of handlers run in-process, over a toy template."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from samcli.local.lambdafn.exceptions import FunctionNotFound

from devtools.local_api import LocalApi

pytestmark = pytest.mark.unit

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "local_api"
TEMPLATE = FIXTURE_DIR / "template.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]

Response = tuple[int, dict[str, str], bytes]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def echo(api: LocalApi, path: str = "/echo", **kwargs: Any) -> dict[str, Any]:
    status, _, body = http(kwargs.pop("method", "GET"), api.url + path, **kwargs)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


@pytest.fixture(scope="module")
def api() -> Iterator[LocalApi]:
    with LocalApi(TEMPLATE, port=0) as local_api:
        yield local_api


def test_routes_are_read_from_the_template_by_samcli(api: LocalApi) -> None:
    # Given the fixture template's explicit AWS::Serverless::Api and two functions
    # When the routes are listed
    routes = sorted(api.routes)

    # Then they are exactly the template's events, one per method
    assert routes == [
        ("GET", "/boom", "StatusFunction"),
        ("GET", "/echo", "EchoFunction"),
        ("GET", "/items/{item_id}", "EchoFunction"),
        ("GET", "/slow", "StatusFunction"),
        ("GET", "/status", "StatusFunction"),
        ("POST", "/echo", "EchoFunction"),
    ]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", api.url)


def test_get_passes_query_string_headers_and_the_proxy_event_shape(api: LocalApi) -> None:
    # Given a GET with a query string and a custom header
    # When it goes through the local API
    result = echo(api, "/echo?model=iris&limit=3", headers={"X-Test": "abc"})

    # Then the handler got SAM's API Gateway proxy event
    assert result["event"] == {
        "httpMethod": "GET",
        "resource": "/echo",
        "path": "/echo",
        "body": None,
        "pathParameters": None,
    }
    assert result["query"] == {"model": "iris", "limit": "3"}
    assert result["header_x_test"] == "abc"
    assert result["stage"] == "dev"


def test_post_passes_the_body(api: LocalApi) -> None:
    # Given a POST with a JSON body
    payload = json.dumps({"features": [5.1, 3.5, 1.4, 0.2]}).encode()

    # When it goes through the local API
    result = echo(api, method="POST", body=payload, headers={"Content-Type": "application/json"})

    # Then the handler receives the body as the string API Gateway passes
    assert result["event"]["httpMethod"] == "POST"
    assert result["event"]["body"] == payload.decode()


def test_path_parameters(api: LocalApi) -> None:
    # Given a route with a path parameter
    # When it is called
    result = echo(api, "/items/42")

    # Then the parameter and the route template both reach the handler
    assert result["event"]["pathParameters"] == {"item_id": "42"}
    assert result["event"]["resource"] == "/items/{item_id}"
    assert result["event"]["path"] == "/items/42"


def test_lambda_context_comes_from_the_template(api: LocalApi) -> None:
    # Given EchoFunction with MemorySize 512 and the Globals Timeout of 5 s
    # When it is called twice
    first, second = echo(api)["context"], echo(api)["context"]

    # Then the context carries the runtime's fields (memory as a string, like awslambdaric's)
    assert first["function_name"] == "EchoFunction"
    assert first["function_version"] == "$LATEST"
    assert first["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:EchoFunction"
    assert first["memory_limit_in_mb"] == "512"
    assert first["log_group_name"] == "/aws/lambda/EchoFunction"
    assert 4000 < first["remaining_ms"] <= 5000
    assert re.fullmatch(r"[0-9a-f-]{36}", first["aws_request_id"])
    assert first["aws_request_id"] != second["aws_request_id"]


def test_environment_resolves_globals_parameters_and_pseudo_parameters(api: LocalApi) -> None:
    # Given Globals variables and function variables using !Ref and !Sub
    # When EchoFunction is called
    result = echo(api)

    # Then samcli resolved them; a resource's Ref resolves to its logical id
    assert result["env_at_import"] == {
        "GREETING": "hello",
        "SHARED_FLAG": "from-globals",
        "SERVICE_NAME": "toy-service",
        "MODEL_NAME": "iris-default",
        "REGION_AND_MODEL": "us-east-1/iris-default",
        "BUCKET_NAME": "ToyBucket",
        "EXTRA": None,
        "FILE_ONLY": None,
    }
    assert result["env_at_invoke"] == result["env_at_import"]


def test_two_app_modules_do_not_clash_and_each_sees_its_own_environment(api: LocalApi) -> None:
    # Given two functions whose handlers are both app.lambda_handler, with different GREETING and SHARED_FLAG
    greeting_before = os.environ.get("GREETING")

    # When both are called
    echo_result = echo(api)
    status, _, status_body = http("GET", api.url + "/status")

    # Then each ran its own app.py with its own environment, and ours is restored afterwards
    assert re.fullmatch(r"_local_lambda_\d+_EchoFunction\.app", echo_result["module"])
    assert echo_result["env_at_invoke"]["GREETING"] == "hello"
    assert echo_result["layer"] == "toylib"
    assert (status, status_body) == (200, b"bonjour from-status-function 200")
    assert os.environ.get("GREETING") == greeting_before


def test_module_stays_warm_between_invocations(api: LocalApi) -> None:
    # Given EchoFunction has been imported once
    first = echo(api)["invocation"]

    # When it is called again
    second = echo(api)["invocation"]

    # Then the same module handled it (its invocation counter kept counting)
    assert second == first + 1


def test_env_vars_file_env_overrides_and_parameter_overrides(tmp_path: Path) -> None:
    # Given an env-vars file in SAM's format, --env values and parameter overrides
    env_vars_file = tmp_path / "env.json"
    env_vars_file.write_text(
        json.dumps(
            {
                "Parameters": {"SHARED_FLAG": "file-all", "FILE_ONLY": "not-declared-so-ignored"},
                "EchoFunction": {"MODEL_NAME": "file-echo"},
            }
        )
    )
    local_api = LocalApi(
        TEMPLATE,
        port=0,
        env_overrides={"GREETING": "cli-greeting", "EXTRA": "cli-extra"},
        env_vars_file=env_vars_file,
        parameter_overrides={"ModelName": "param-model", "AWS::Region": "eu-west-1"},
    )

    # When both functions are called
    with local_api:
        result = echo(local_api)
        status_response = http("GET", local_api.url + "/status")

    # Then file values override declared variables only (as sam does), and --env wins and may add variables
    assert result["env_at_import"] == {
        "GREETING": "cli-greeting",
        "SHARED_FLAG": "file-all",
        "SERVICE_NAME": "toy-service",
        "MODEL_NAME": "file-echo",
        "REGION_AND_MODEL": "eu-west-1/param-model",
        "BUCKET_NAME": "ToyBucket",
        "EXTRA": "cli-extra",
        "FILE_ONLY": None,
    }
    assert result["context"]["invoked_function_arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:EchoFunction"
    assert status_response[0] == 200
    assert status_response[2] == b"cli-greeting file-all 200"


def test_handler_exception_is_a_502_and_the_server_keeps_serving(
    api: LocalApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a route whose handler raises
    # When it is called
    status, _, body = http("GET", api.url + "/boom")

    # Then API Gateway's 502, the traceback on stderr, and the next request still works
    assert status == 502
    assert json.loads(body) == {"message": "Internal server error"}
    assert "[ERROR] RuntimeError: boom from the status handler" in capsys.readouterr().err
    assert http("GET", api.url + "/status")[0] == 200


def test_non_200_status_and_headers_are_passed_through(api: LocalApi) -> None:
    # Given a handler that returns the status code asked for, with its own headers
    # When it is asked for a 418
    status, headers, body = http("GET", api.url + "/status?code=418")

    # Then status, headers and body come back unchanged
    assert status == 418
    assert headers["X-Function"] == "status"
    assert headers["Content-Type"] == "text/plain"
    assert body == b"bonjour from-status-function 418"


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("DELETE", "/echo")])
def test_unknown_route_is_a_403_like_api_gateway(api: LocalApi, method: str, path: str) -> None:
    # Given a path or method the template does not define
    # When it is called
    status, _, body = http(method, api.url + path)

    # Then SAM's answer, which is API Gateway's
    assert status == 403
    assert json.loads(body) == {"message": "Missing Authentication Token"}


def test_handler_running_past_its_timeout_is_a_502(api: LocalApi, capsys: pytest.CaptureFixture[str]) -> None:
    # Given StatusFunction (Timeout 1 s) whose /slow route takes 1.2 s
    # When it is called
    status, _, _ = http("GET", api.url + "/slow")

    # Then the result is discarded as Lambda would, with Lambda's message on stderr
    assert status == 502
    assert "Task timed out after 1.00 seconds" in capsys.readouterr().err


def test_invoke_returns_the_result_or_raises_the_handler_error(api: LocalApi) -> None:
    # Given a direct, non-API event
    # When it is invoked synchronously
    result = api.invoke("EchoFunction", {"source": "test", "n": 1})

    # Then the handler's JSON result comes back; errors and unknown functions raise
    assert result == {"function": "echo", "event": {"source": "test", "n": 1}, "thread": "MainThread"}
    with pytest.raises(ValueError, match="asked to fail"):
        api.invoke("StatusFunction", {"fail": True})
    with pytest.raises(FunctionNotFound):
        api.invoke("NoSuchFunction", {})


def test_invoke_async_runs_in_the_background(api: LocalApi) -> None:
    # Given a handler that takes 0.3 s
    started = time.perf_counter()

    # When it is invoked asynchronously
    future = api.invoke_async("StatusFunction", {"sleep_seconds": 0.3})

    # Then the call returns at once and the handler runs on another thread
    assert time.perf_counter() - started < 0.1
    assert not future.done()
    result = future.result(timeout=2)
    assert result["function"] == "status"
    assert result["greeting"] == "bonjour"
    assert result["thread"].startswith("lambda-event")


def test_cli_help_explains_each_option() -> None:
    # Given the command line entry point
    # When asked for help
    completed = subprocess.run(
        [sys.executable, "-m", "devtools.local_api", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    # Then it exits 0 and documents every option
    assert completed.returncode == 0, completed.stderr
    for option in (
        "--template",
        "--host",
        "--port",
        "--lambda-port",
        "--env-vars",
        "--env KEY=VALUE",
        "--parameter-overrides",
    ):
        assert option in completed.stdout


@pytest.fixture(scope="module")
def api_with_lambda() -> Iterator[LocalApi]:
    with LocalApi(TEMPLATE, port=0, lambda_port=0) as local_api:
        yield local_api


def lambda_client(api: LocalApi) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "lambda",
        endpoint_url=api.lambda_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}),
    )


def test_the_lambda_invoke_api_runs_a_function_synchronously(api_with_lambda: LocalApi) -> None:
    # Given the Lambda Invoke API beside the local API (what `sam local start-lambda` serves)
    client = lambda_client(api_with_lambda)

    # When boto3 invokes a function by its logical id, RequestResponse
    response = client.invoke(FunctionName="EchoFunction", Payload=json.dumps({"source": "boto3"}))

    # Then the in-process handler ran and its result is the payload
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read())["event"] == {"source": "boto3"}


def test_the_lambda_invoke_api_reports_a_handler_error(api_with_lambda: LocalApi) -> None:
    response = lambda_client(api_with_lambda).invoke(FunctionName="StatusFunction", Payload=json.dumps({"fail": True}))
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorMessage"] == "asked to fail"


def test_the_lambda_invoke_api_runs_event_invocations_in_the_background(
    api_with_lambda: LocalApi, tmp_path: Path
) -> None:
    # Given a handler that takes 0.5 s and leaves a file behind
    trace = tmp_path / "ran.txt"
    started = time.perf_counter()

    # When it is invoked with InvocationType=Event
    response = lambda_client(api_with_lambda).invoke(
        FunctionName="StatusFunction",
        InvocationType="Event",
        Payload=json.dumps({"sleep_seconds": 0.5, "touch": str(trace)}),
    )

    # Then the call answers 202 at once, and the function runs afterwards
    assert response["StatusCode"] == 202
    assert time.perf_counter() - started < 0.5
    deadline = time.monotonic() + 10
    while not trace.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trace.exists()


def test_the_functions_find_the_lambda_invoke_api_in_their_environment(api_with_lambda: LocalApi) -> None:
    # Given the running servers
    # When a function's environment is read
    environment = api_with_lambda.runner.env_overrides

    # Then its boto3 is pointed at the local Lambda Invoke API
    assert environment["AWS_ENDPOINT_URL_LAMBDA"] == api_with_lambda.lambda_url


def test_without_a_lambda_port_there_is_no_lambda_invoke_api() -> None:
    with LocalApi(TEMPLATE, port=0) as local_api:
        assert "AWS_ENDPOINT_URL_LAMBDA" not in local_api.runner.env_overrides
        with pytest.raises(RuntimeError, match="no Lambda Invoke API"):
            local_api.lambda_url  # noqa: B018
