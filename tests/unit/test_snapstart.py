"""SnapStart (PredictWarmStart=snapstart): an instance resumes from a snapshot taken when the version was
published, after the model was loaded; the alias may have moved since. The predict function registers an
after-restore hook with the Lambda runtime's snapshot_restore_py, so the first request after a restore re-reads the
alias instead of serving the snapshot's model for up to ALIAS_REFRESH_SECONDS."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import PENGUINS_CSV, LambdaContext, load_event

pytestmark = pytest.mark.unit


def served_version(app: ModuleType, context: LambdaContext) -> int:
    reply = json.loads(app.lambda_handler(load_event("predict"), context)["body"])
    version: int = reply["model"]["version"]
    return version


def test_after_a_restore_the_first_request_reads_the_alias_again(
    fresh_handler: Callable[..., ModuleType],
    local_store_copy: Path,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training.cli import main

    # Given the Lambda runtime's hook module (a stand-in that keeps what registers, as the runtime does)
    after_restore: list[Callable[[], None]] = []
    runtime_hooks = types.ModuleType("snapshot_restore_py")
    runtime_hooks.register_after_restore = after_restore.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime_hooks)
    # And the predict function initialised (the snapshot) serving v1, re-reading the alias once an hour
    app = fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(local_store_copy),
        MODEL_NAME="penguins",
        ALIAS_REFRESH_SECONDS="3600",
    )
    assert served_version(app, lambda_context) == 1
    # When v2 is promoted while the snapshot waits
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", str(local_store_copy)]) == 0
    assert served_version(app, lambda_context) == 1  # within the refresh interval: the snapshot's model
    # And Lambda restores an instance from the snapshot, calling the hooks
    assert after_restore == [app.cache.recheck]
    for hook in after_restore:
        hook()
    # Then the first request is answered by the version the alias names now
    assert served_version(app, lambda_context) == 2
