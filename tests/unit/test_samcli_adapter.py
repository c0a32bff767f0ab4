"""devtools/samcli_adapter.py: the one place that uses SAM CLI's internals. On an incompatible SAM CLI these fail
loudly, naming what is missing, before any local API serves a request."""

from __future__ import annotations

from pathlib import Path

import pytest
from samcli.commands.local.cli_common.invoke_context import InvokeContext
from samcli.local.lambdafn.env_vars import EnvironmentVariables

from devtools import samcli_adapter
from devtools.local_api import LocalApi
from devtools.samcli_adapter import TESTED_VERSION, IncompatibleSamCli, check_compatible

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_the_installed_sam_cli_has_everything_the_local_api_uses() -> None:
    check_compatible()


def test_the_pinned_sam_cli_is_the_one_the_adapter_was_written_against() -> None:
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    assert pins["aws-sam-cli"].strip() == TESTED_VERSION
    assert samcli_adapter.installed_version() == TESTED_VERSION


def test_a_sam_cli_without_a_private_helper_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a SAM CLI release that dropped two of the internals the local API relies on
    monkeypatch.delattr(InvokeContext, "_get_env_vars_value")
    monkeypatch.setattr(EnvironmentVariables, "_DEFAULT_AWS_CREDS", {})
    # When the compatibility check runs, or a local API is made
    with pytest.raises(IncompatibleSamCli) as refused:
        check_compatible()
    # Then it names each missing piece and the version that has them
    message = str(refused.value)
    assert "InvokeContext._get_env_vars_value" in message
    assert "EnvironmentVariables._DEFAULT_AWS_CREDS" in message
    assert f"pip install aws-sam-cli=={TESTED_VERSION}" in message
    with pytest.raises(IncompatibleSamCli):
        LocalApi(REPO / "template.yaml", port=0)


def test_a_changed_runner_interface_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def invoke(self: object, function_identifier: str, event: str) -> None: ...

    monkeypatch.setattr(samcli_adapter.LocalLambdaRunner, "invoke", invoke)
    with pytest.raises(IncompatibleSamCli, match=r"LocalLambdaRunner.invoke\(function_identifier, event, tenant_id"):
        check_compatible()
