"""The registry from the command line, against a local folder and S3 (moto): publish v1, v2, v3; promote v3;
serve; roll back; serve v2 again. Then every other command and their clear errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import ModuleType

import pytest

from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from training.cli import main

pytestmark = pytest.mark.integration


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def served_version(app: ModuleType, context: LambdaContext) -> int:
    response = app.lambda_handler(load_event("predict"), context)
    assert response["statusCode"] == 200, response["body"]
    version: int = json.loads(response["body"])["model"]["version"]
    return version


def test_promote_serve_roll_back_serve_again_from_the_command_line(
    three_versions: str,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = three_versions
    app = fresh_handler("functions.predict.app", MODEL_STORE_URI=uri, MODEL_NAME="penguins", ALIAS_REFRESH_SECONDS="0")

    # Given v1, v2 (champion) and v3 (candidate), listed as such, newest first
    code, out, _ = cli(capsys, "versions", "--store", uri)
    assert code == 0
    header, *lines = out.splitlines()[1:]
    assert header.split() == ["version", "created", "accuracy", "status", "alias", "reason"]
    alias, reason = header.index("alias"), header.index("reason")
    rows = [(line.split()[0], line.split()[4], line[alias:reason].strip(), line[reason:]) for line in lines]
    assert [row[:3] for row in rows] == [
        ("3", "candidate", "-"),
        ("2", "promoted", "champion"),
        ("1", "promoted", "champion (rollback)"),
    ]
    assert rows[0][3].startswith("passed the gate")  # a verdict recorded: promotable
    assert rows[2][3] == "first version: no champion to compare with"
    assert served_version(app, lambda_context) == 2

    # When v3 is promoted: it is served
    code, out, _ = cli(capsys, "promote", "3", "--reason", "canary looked fine", "--store", uri)
    assert (code, out.splitlines()[0]) == (0, "champion of penguins: v2 → v3")
    assert served_version(app, lambda_context) == 3

    # When the champion is rolled back: v2 is served again, and v3 is retired
    code, out, _ = cli(capsys, "rollback", "--reason", "error rate alarm", "--store", uri)
    assert (code, out.splitlines()[0]) == (0, "champion of penguins: v3 → v2 (rolled back)")
    assert served_version(app, lambda_context) == 2
    store = ModelStore.from_uri(uri)
    assert store.status("penguins", 3).status == "retired"

    # Then the history shows every move, who made it and why
    code, out, _ = cli(capsys, "history", "--store", uri, "--json")
    moves = [(m["kind"], m["from_version"], m["to_version"], m["reason"]) for m in json.loads(out)["history"]]
    assert moves[-2:] == [
        ("promote", 2, 3, "canary looked fine"),
        ("rollback", 3, 2, "error rate alarm"),
    ]
    assert json.loads(out)["history"][-1]["by"].endswith("(python -m training rollback)")


def test_describe_diff_and_history_print_what_the_store_recorded(
    three_versions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = three_versions
    code, out, _ = cli(capsys, "describe", "3", "--store", uri)
    assert code == 0
    labels = {line.split()[0] for line in out.splitlines()[1:] if line.startswith("  ") and not line.startswith("    ")}
    assert {"created", "status", "aliases", "task", "data", "metrics", "libraries", "runtimes", "sha256"} <= labels
    assert re.search(r"sha256 model\.onnx\s+[0-9a-f]{64}", out)
    assert re.search(r"island\s+categorical\s+string\s+no\s+Biscoe, Dream, Torgersen", out)

    code, out, _ = cli(capsys, "diff", "1", "3", "--store", uri)
    assert code == 0
    assert out.splitlines()[0] == "penguins v1 → v3"
    assert "contract: unchanged" in out
    assert "data: same table (same sha256)" in out

    code, out, _ = cli(capsys, "history", "--store", uri)
    assert out.splitlines()[0] == "champion of penguins: v2 (rollback goes to: v1)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "9", "--reason", "typo"], "error: model penguins has no version 9\n"),
        (["describe", "9"], "error: model penguins has no version 9\n"),
        (["history", "--alias", "staging"], "error: model penguins has no alias 'staging'\n"),
        (["rollback", "--alias", "staging", "--reason", "x"], "error: alias 'staging' of penguins does not exist"),
    ],
)
def test_mistakes_get_a_clear_error_and_change_nothing(
    three_versions: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    store = ModelStore.from_uri(three_versions)
    before = store.alias("penguins", "champion")
    code, out, err = cli(capsys, *args, "--store", three_versions)
    assert (code, out) == (2, "")
    assert err.startswith(message)
    assert store.alias("penguins", "champion") == before


def test_a_rejected_version_and_a_rollback_too_far_are_refused(
    three_versions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklambda.manifest import StatusRecord

    uri = three_versions
    store = ModelStore.from_uri(uri)
    store.set_status("penguins", 3, StatusRecord(status="rejected", reason="worse than the champion"))
    code, _, err = cli(capsys, "promote", "3", "--reason", "try", "--store", uri)
    assert (code, err) == (2, "error: penguins v3 was rejected (worse than the champion); it cannot be promoted\n")

    # Two rollbacks go 2 → 1 → nothing left
    assert cli(capsys, "rollback", "--reason", "a", "--store", uri)[0] == 0
    before = store.alias("penguins", "champion")
    code, _, err = cli(capsys, "rollback", "--reason", "b", "--store", uri)
    assert (code, err) == (2, "error: alias 'champion' of penguins has no previous version to roll back to\n")
    assert store.alias("penguins", "champion") == before


def test_promote_refuses_a_version_the_serving_runtime_cannot_load(
    three_versions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given v3's ONNX bytes altered after publish
    store = ModelStore.from_uri(three_versions)
    store.objects.put("penguins/versions/000003/model.onnx", b"not a model")
    before = store.alias("penguins", "champion")

    # When promoting it
    code, _, err = cli(capsys, "promote", "3", "--reason", "try", "--store", three_versions)

    # Then the self-test refuses it before the alias moves
    assert code == 2
    assert "model.onnx: sha256" in err
    assert store.alias("penguins", "champion") == before


def test_prune_is_a_dry_run_unless_applied_and_keeps_the_champions(
    three_versions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given v1 (previous champion, on the rollback stack), v2 champion, v3 never promoted, and a newer v4
    uri = three_versions
    assert main(["train", "--data", str(PENGUINS_CSV), "--store", uri, "--no-promote"]) == 0
    store = ModelStore.from_uri(uri)
    keys = store.objects.list("penguins/")

    # When pruning with the tightest policy (keep the newest 1, no age), as a dry run
    code, out, _ = cli(capsys, "prune", "--keep-last", "1", "--keep-days", "0", "--store", uri)

    # Then it shows the plan, with a reason for every version, and deletes nothing
    assert code == 0
    assert out.splitlines()[0].endswith("(dry run, nothing deleted: pass --apply to delete)")
    assert [line.split(maxsplit=2) for line in out.splitlines()[2:]] == [
        ["1", "keep", "on the champion rollback stack; previous champion"],
        ["2", "keep", "current champion"],
        ["3", "delete", "older than 0 days, not among the newest 1"],
        ["4", "keep", "among the newest 1"],
    ]
    assert store.objects.list("penguins/") == keys

    # When applied
    code, out, _ = cli(capsys, "prune", "--keep-last", "1", "--keep-days", "0", "--apply", "--store", uri)

    # Then only v3 is gone; the champion still serves and the listing reports the deletion
    assert (code, out.splitlines()[-1]) == (0, "deleted: v3")
    assert store.versions("penguins") == [1, 2, 4]
    code, out, _ = cli(capsys, "versions", "--store", uri)
    assert out.splitlines()[-1] == "deleted by retention: 3"
