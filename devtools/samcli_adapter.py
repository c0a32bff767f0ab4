"""The one module that touches SAM CLI's internals, for devtools/local_api.py.

SAM CLI has no public Python API: `sam local start-api` is a command, and its classes (the API Gateway emulation,
the template providers, the Lambda runner) are internal and change between releases. Every samcli name the local
API uses is imported or reached here, so an upgrade has one file to check, and `check_compatible()` (run when a
LocalApi is made, and by tests/unit/test_samcli_adapter.py) fails loudly, naming what is missing, instead of a
request failing later with an AttributeError deep inside a server thread.

Written against aws-sam-cli TESTED_VERSION; the pin is in requirements.txt.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

from samcli.commands.local.cli_common.invoke_context import InvokeContext
from samcli.commands.local.lib.exceptions import NoApisDefined
from samcli.commands.local.lib.local_api_service import LocalApiService
from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
from samcli.lib.intrinsic_resolver.intrinsics_symbol_table import IntrinsicsSymbolTable
from samcli.lib.providers.api_provider import ApiProvider
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
from samcli.lib.utils.codeuri import resolve_code_path
from samcli.local.apigw.local_apigw_service import LocalApigwService
from samcli.local.lambda_service.local_lambda_http_service import LocalLambdaHttpService
from samcli.local.lambdafn.env_vars import EnvironmentVariables

TESTED_VERSION = "1.170.0"

__all__ = [
    "TESTED_VERSION",
    "ApiProvider",
    "IncompatibleSamCli",
    "IntrinsicsSymbolTable",
    "LocalApigwService",
    "LocalLambdaHttpService",
    "LocalLambdaRunner",
    "NoApisDefined",
    "SamFunctionProvider",
    "SamLocalStackProvider",
    "check_compatible",
    "env_vars_values",
    "flask_app",
    "placeholder_credentials",
    "resolve_code_path",
    "route_lines",
    "stop_event_invocations",
]


class IncompatibleSamCli(RuntimeError):
    """The installed SAM CLI lacks something the local API relies on."""


# What LocalApigwService and LocalLambdaHttpService pass to LocalLambdaRunner.invoke, which the in-process runner
# replaces (devtools.local_api.InProcessLambdaRunner.invoke).
_INVOKE_PARAMETERS = ("function_identifier", "event", "tenant_id", "stdout", "stderr")


def check_compatible() -> None:
    """Raise IncompatibleSamCli naming every internal the local API needs that the installed samcli lacks."""
    missing = []
    if not callable(getattr(InvokeContext, "_get_env_vars_value", None)):
        missing.append("InvokeContext._get_env_vars_value (reads --env-vars files)")
    if not {"key", "secret"} <= set(getattr(EnvironmentVariables, "_DEFAULT_AWS_CREDS", {}) or {}):
        missing.append("EnvironmentVariables._DEFAULT_AWS_CREDS['key'/'secret'] (its placeholder credentials)")
    if not callable(getattr(LocalApiService, "_print_routes", None)):
        missing.append("LocalApiService._print_routes (the 'Mounting ...' lines)")
    for service in (LocalApigwService, LocalLambdaHttpService):
        if not callable(getattr(service, "create", None)) or "_app" not in inspect.getsource(service.create):
            missing.append(f"{service.__name__}.create() building the Flask app as ._app")
    if "executor" not in inspect.getsource(LocalLambdaHttpService):
        missing.append("LocalLambdaHttpService.executor (its thread pool for Event invocations)")
    invoke = inspect.signature(LocalLambdaRunner.invoke).parameters
    if not all(name in invoke for name in _INVOKE_PARAMETERS):
        missing.append(f"LocalLambdaRunner.invoke({', '.join(_INVOKE_PARAMETERS)}, ...)")
    for name in ("get_function", "get_invoke_config", "is_debugging"):
        if not callable(getattr(LocalLambdaRunner, name, None)):
            missing.append(f"LocalLambdaRunner.{name}")
    if not hasattr(IntrinsicsSymbolTable, "DEFAULT_PSEUDO_PARAM_VALUES"):
        missing.append("IntrinsicsSymbolTable.DEFAULT_PSEUDO_PARAM_VALUES")
    if missing:
        raise IncompatibleSamCli(
            f"aws-sam-cli {installed_version()} lacks what the local API needs (written against {TESTED_VERSION}; "
            f"pip install aws-sam-cli=={TESTED_VERSION}): " + "; ".join(missing)
        )


def installed_version() -> str:
    return version("aws-sam-cli")


def env_vars_values(path: str | None) -> dict[str, Any]:
    """An `--env-vars` file (JSON or .env) as `sam local` reads it."""
    values: dict[str, Any] = InvokeContext._get_env_vars_value(path)
    return values or {}


def placeholder_credentials() -> dict[str, str]:
    """The credentials samcli puts in a function's environment when it found none on the host."""
    credentials = EnvironmentVariables._DEFAULT_AWS_CREDS
    return {"AWS_ACCESS_KEY_ID": credentials["key"], "AWS_SECRET_ACCESS_KEY": credentials["secret"]}


def flask_app(service: LocalApigwService | LocalLambdaHttpService) -> Any:
    """The WSGI app a samcli service's create() built (its run() would block and install a signal handler)."""
    service.create()
    return service._app


def stop_event_invocations(service: LocalLambdaHttpService) -> None:
    """Wait for the Event invocations the local Lambda service still runs."""
    service.executor.shutdown(wait=True)


def route_lines(routes: Any, host: str, port: int) -> list[str]:
    """The "Mounting ... at http://..." lines `sam local start-api` prints."""
    return list(LocalApiService._print_routes(routes, host, port))
