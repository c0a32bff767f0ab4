"""The registry's guarantees under faults, each a test that fails if the guarantee breaks: concurrent promotions,
crashes mid-publish, tampered artifacts, a scikit-learn version mismatch, and S3 failing during alias reads."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sklambda import registry
from sklambda.aws import RETRY_BUDGET_SECONDS
from sklambda.errors import AliasConflict, IntegrityError, NotFound, StoreUnavailable, VersionRefused
from sklambda.manifest import Manifest
from sklambda.objects import LocalObjects
from sklambda.store import ModelStore
from tests.conftest import BUCKET, PENGUINS_CSV, REPO, LambdaContext, load_event, upload_store
from tests.faults import Crash, CrashingObjects, Fault, S3FaultProxy, elapsed, promote_in_process
from tests.unit.test_store import make_manifest
from training.config import load_config
from training.pipeline import TrainingRun, run_training

pytestmark = pytest.mark.integration

PREDICT_TIMEOUT_SECONDS = 10  # template.yaml: PredictFunction Timeout
INIT_LIMIT_SECONDS = 10  # Lambda's init phase (on demand)


def publish_three_and_promote_first(store: ModelStore) -> None:
    for number in range(3):
        store.publish(make_manifest(), {"model.bin": f"model {number}".encode()})
    store.promote("demo", 1, by="setup", reason="first")


def predict_app(fresh_handler: Callable[..., ModuleType], store: Path, **environment: str) -> ModuleType:
    """A cold predict function on a local store, re-reading the alias on every request."""
    return fresh_handler(
        "functions.predict.app",
        MODEL_STORE_URI=str(store),
        MODEL_NAME="penguins",
        ALIAS_REFRESH_SECONDS="0",
        **environment,
    )


def predict(app: ModuleType, context: LambdaContext) -> tuple[int, dict[str, Any]]:
    response = app.lambda_handler(load_event("predict"), context)
    return response["statusCode"], json.loads(response["body"])


# ------------------------------------------------------------------------------------------- concurrent promotions


def test_two_concurrent_promotions_one_wins_one_conflicts(store: ModelStore) -> None:
    # Given v1 champion, and two operators promoting v2 and v3 at the same moment: both read the alias, then
    # both pass the serving check together (the barrier), then both write
    publish_three_and_promote_first(store)
    barrier = threading.Barrier(2, timeout=30)
    outcomes: dict[int, object] = {}

    def check_together(manifest: Manifest) -> None:
        barrier.wait()

    def operator(version: int) -> None:
        try:
            outcomes[version] = registry.promote(
                store, "demo", version, alias="champion", by=f"operator {version}", reason="race", check=check_together
            )
        except AliasConflict as error:
            outcomes[version] = error

    # When both run
    threads = [threading.Thread(target=operator, args=(version,)) for version in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Then exactly one won and the other got a conflict that says nothing changed
    conflicts = [v for v, outcome in outcomes.items() if isinstance(outcome, AliasConflict)]
    winners = [v for v, outcome in outcomes.items() if isinstance(outcome, registry.AliasChange)]
    assert len(conflicts) == 1, outcomes
    assert len(winners) == 1, outcomes
    assert "was moved by someone else meanwhile; nothing was changed" in str(outcomes[conflicts[0]])
    # And the history shows exactly one move after the first promotion, the winner's; the loser stays a candidate
    state = store.alias("demo", "champion")
    assert state is not None
    assert state.record.version == winners[0]
    assert [(m.from_version, m.to_version, m.by) for m in state.record.history] == [
        (None, 1, "setup"),
        (1, winners[0], f"operator {winners[0]}"),
    ]
    assert store.status("demo", conflicts[0]).status == "candidate"


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_two_processes_promoting_at_once_one_wins(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Given a store two separate processes can reach: a folder, or S3 (a moto server)
    if backend == "local":
        uri = str(tmp_path / "store")
    else:
        request.getfixturevalue("s3_proxy")  # the bucket, and AWS_ENDPOINT_URL for the child processes
        uri = f"s3://{BUCKET}/models"
    publish_three_and_promote_first(ModelStore.from_uri(uri))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()

    # When two processes promote v2 and v3, both having read the alias before either writes
    processes = [
        context.Process(target=promote_in_process, args=(uri, version, barrier, results)) for version in (2, 3)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)

    # Then one won, the other got the conflict, and the alias history has one move after the first
    assert sorted(kind for kind, _ in outcomes) == ["conflict", "won"], outcomes
    (winner,) = [value for kind, value in outcomes if kind == "won"]
    state = ModelStore.from_uri(uri).alias("demo", "champion")
    assert state is not None
    assert [(m.from_version, m.to_version) for m in state.record.history] == [(None, 1), (1, winner)]


# ------------------------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, 5])
def test_a_publish_that_crashes_at_any_write_leaves_no_version_and_the_champion_alone(
    store: ModelStore, crash_at: int
) -> None:
    # Given v1 champion
    store.publish(make_manifest(), {"model.bin": b"one"})
    store.promote("demo", 1, by="setup", reason="first")
    champion = store.alias("demo", "champion")
    crashing = ModelStore(CrashingObjects(store.objects, crash_at=crash_at))

    # When a publish of two files (claim, 2 files, status, manifest: 5 writes) dies before write number `crash_at`
    with pytest.raises(Crash):
        crashing.publish(make_manifest(), {"model.bin": b"two", "model.onnx": b"two"})

    # Then the champion is untouched, and the partial version is not a version: not listed, not loadable
    assert store.alias("demo", "champion") == champion
    assert store.versions("demo") == [1]
    assert registry.list_versions(store, "demo").versions[-1].version == 1
    with pytest.raises(NotFound):
        store.manifest("demo", 2)
    # And it is reported as incomplete once its number was taken, and never reused
    assert store.incomplete_versions("demo") == ([2] if crash_at > 1 else [])
    assert store.publish(make_manifest(), {"model.bin": b"three"}).version == (3 if crash_at > 1 else 2)


@pytest.mark.parametrize("crash_on", ["manifest.json", "aliases/champion.json"])
def test_a_retrain_that_crashes_before_the_alias_moves_leaves_the_champion_serving(
    crash_on: str,
    local_store_copy: Path,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
) -> None:
    # Given the predict function serving v1
    app = predict_app(fresh_handler, local_store_copy)
    assert predict(app, lambda_context)[1]["model"]["version"] == 1

    # When a retrain dies after uploading its artifacts: before its manifest, or before the alias write
    crashing = ModelStore(CrashingObjects(LocalObjects(local_store_copy), crash_on=crash_on))
    with pytest.raises(Crash):
        run_training(
            TrainingRun(store=crashing, data_uri=str(PENGUINS_CSV), config=load_config(None)),
            trigger="cli",
            by="crashing retrain",
        )

    # Then v1 still serves, the alias never moved, and v2 is loadable only if its manifest was written
    status, body = predict(app, lambda_context)
    assert (status, body["model"]["version"]) == (200, 1)
    store = ModelStore.from_uri(str(local_store_copy))
    state = store.alias("penguins", "champion")
    assert state is not None
    assert (state.record.version, len(state.record.history)) == (1, 1)
    if crash_on == "manifest.json":
        assert store.versions("penguins") == [1]
        assert store.incomplete_versions("penguins") == [2]
    else:
        assert store.versions("penguins") == [1, 2]
        assert store.status("penguins", 2).status == "candidate"


_KILL_DURING_RENAME = """
import os, sys
import sklambda.objects as objects
target = sys.argv[2]
real_replace = os.replace

def replace(source, destination):
    if str(destination).endswith(target):
        os._exit(9)  # the process dies between writing the temporary file and renaming it into place
    real_replace(source, destination)

objects.os.replace = replace
from sklambda.store import ModelStore
from tests.unit.test_store import make_manifest
store = ModelStore.from_uri(sys.argv[1])
if target == "manifest.json":
    store.publish(make_manifest(), {"model.bin": b"two"})
else:
    store.promote("demo", 2, by="killed", reason="dies mid-write")
"""


@pytest.mark.parametrize("target", ["manifest.json", "champion.json"])
def test_a_process_killed_mid_write_leaves_the_previous_state(tmp_path: Path, target: str) -> None:
    # Given a local store with v1 champion (and a complete v2 for the alias case)
    root = tmp_path / "store"
    store = ModelStore.from_uri(str(root))
    store.publish(make_manifest(), {"model.bin": b"one"})
    store.promote("demo", 1, by="setup", reason="first")
    if target == "champion.json":
        store.publish(make_manifest(), {"model.bin": b"two"})
    champion = store.alias("demo", "champion")

    # When a process is killed (exit 9) right before renaming the file into place
    result = subprocess.run(
        [sys.executable, "-c", _KILL_DURING_RENAME, str(root), target],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'layers' / 'shared'}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 9, result.stderr.decode()

    # Then the alias is what it was, no new version appeared, and the orphaned temporary file is never listed
    assert store.alias("demo", "champion") == champion
    assert store.versions("demo") == ([1] if target == "manifest.json" else [1, 2])
    leftovers = [p.name for p in root.rglob(f".{target}.*.tmp")]
    assert len(leftovers) == 1
    assert not [key for key in store.objects.list("demo/") if key.endswith(".tmp")]


# ------------------------------------------------------------------------------------------- loading


def republish(store: ModelStore, version: int, files: dict[str, bytes] | None = None) -> Manifest:
    """Publish a copy of `version` as a new version (optionally with other file contents)."""
    manifest = store.manifest("penguins", version)
    contents = files or {file: store.artifact(manifest, file) for file in manifest.artifacts}
    return store.publish(manifest.model_copy(update={"artifacts": {}, "manifest_sha256": None}), contents)


def emitted_metrics(output: str) -> set[str]:
    """Metric names in the Embedded Metric Format lines Powertools printed."""
    names: set[str] = set()
    for line in output.splitlines():
        if line.startswith("{") and "_aws" in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names.update(metric["Name"] for metric in directive["Metrics"])
    return names


def test_a_tampered_artifact_is_refused_and_serving_continues_on_the_last_good_version(
    local_store_copy: Path,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given predict serving v1, and a v2 published and then altered on disk (its ONNX bytes changed)
    app = predict_app(fresh_handler, local_store_copy)
    assert predict(app, lambda_context)[1]["model"]["version"] == 1
    store = ModelStore.from_uri(str(local_store_copy))
    republish(store, 1)
    onnx_path = local_store_copy / "penguins" / "versions" / "000002" / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        store.artifact(store.manifest("penguins", 2), "model.onnx")
    capsys.readouterr()

    # When the alias is moved to v2 anyway (no serving check) and a request comes in
    store.promote("penguins", 2, by="attacker", reason="no check")
    status, body = predict(app, lambda_context)

    # Then v1 keeps answering, and the refusal is counted in a metric
    assert (status, body["model"]["version"]) == (200, 1)
    assert "ModelLoadRefused" in emitted_metrics(capsys.readouterr().out)

    # And a cold start, with no good version to fall back on, answers 503 saying why in public words (the
    # log has which file and which checksums)
    cold = fresh_handler("functions.predict.app")
    status, body = predict(cold, lambda_context)
    assert status == 503
    assert "refused penguins v2: its files do not match their checksums" in body["error"]
    assert "sha256" not in body["error"]


def pickled_with_another_sklearn(store: ModelStore) -> bytes:
    """v1's pipeline pickled as if by scikit-learn 1.0.2 (the version stamp every estimator pickles with)."""
    import io

    import joblib
    import sklearn.base

    from sklambda.runtimes.sklearn import load_pipeline

    pipeline = load_pipeline(store.artifact(store.manifest("penguins", 1), "model.joblib"))
    buffer = io.BytesIO()
    real_version = sklearn.base.__version__
    sklearn.base.__version__ = "1.0.2"
    try:
        joblib.dump(pipeline, buffer)
    finally:
        sklearn.base.__version__ = real_version
    return buffer.getvalue()


def test_a_pipeline_pickled_under_another_sklearn_is_refused_not_served(
    local_store_copy: Path,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given predict serving v1 with the scikit-learn runtime, and a v2 whose pickle says scikit-learn 1.0.2
    from sklambda.runtimes.sklearn import load_pipeline
    from sklambda.serving import load_version, served

    app = predict_app(fresh_handler, local_store_copy, SERVING_RUNTIME="sklearn")
    assert predict(app, lambda_context)[1]["model"]["version"] == 1
    store = ModelStore.from_uri(str(local_store_copy))
    stale = pickled_with_another_sklearn(store)
    v2 = republish(store, 1, {"model.joblib": stale, "model.onnx": store.objects.get(
        "penguins/versions/000001/model.onnx").data})  # fmt: skip

    # Then unpickling it is an error naming both versions (the checksum is fine: these are the published bytes)
    with pytest.raises(VersionRefused, match=r"pickled with scikit-learn 1\.0\.2, this process has 1\."):
        load_pipeline(stale)
    with pytest.raises(VersionRefused, match=r"pickled with scikit-learn 1\.0\.2"):
        load_version(store, served(v2), "sklearn")

    # And when the alias moves to it, serving stays on v1 and counts the refusal
    capsys.readouterr()
    store.promote("penguins", 2, by="t", reason="no check")
    status, body = predict(app, lambda_context)
    assert (status, body["model"]["version"]) == (200, 1)
    assert "ModelLoadRefused" in emitted_metrics(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------- S3 failing


@pytest.mark.parametrize("fault", ["503", "slowdown", "hang"])
def test_alias_read_gives_up_within_the_budget_with_a_clear_error(s3_proxy: S3FaultProxy, fault: Fault) -> None:
    # Given a store on S3 with a champion, reached through a proxy that now fails every request
    store = ModelStore.from_uri(f"s3://{BUCKET}/models")
    store.publish(make_manifest(), {"model.bin": b"one"})
    store.promote("demo", 1, by="setup", reason="first")

    with s3_proxy.failing(fault):
        # When the alias is read (what a warm predict function does every ALIAS_REFRESH_SECONDS)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            store.alias_if_changed("demo", "champion", None)
        seconds = elapsed(started)

    # Then it retried a bounded number of times and gave up well inside the function timeout, saying why
    assert seconds < RETRY_BUDGET_SECONDS + 0.5 < PREDICT_TIMEOUT_SECONDS
    expected = {"503": "ServiceUnavailable", "slowdown": "SlowDown", "hang": "Read timed out"}[fault]
    assert str(raised.value).startswith(f"S3 GET of s3://{BUCKET}/models/demo/aliases/champion.json failed: ")
    assert expected in str(raised.value)
    if fault == "hang":
        assert s3_proxy.failed_requests >= 1
    else:
        assert 2 <= s3_proxy.failed_requests <= 5
    # And the store answers again as soon as S3 does
    state = store.alias("demo", "champion")
    assert state is not None
    assert state.record.version == 1


def test_predict_keeps_serving_while_s3_fails_and_cold_starts_answer_503_in_time(
    s3_proxy: S3FaultProxy,
    trained_store: Path,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
) -> None:
    # Given the trained store in S3 and a warm predict function serving v1 from it
    upload_store(trained_store, f"s3://{BUCKET}/models")
    environment = {"MODEL_STORE_URI": f"s3://{BUCKET}/models", "MODEL_NAME": "penguins", "ALIAS_REFRESH_SECONDS": "0"}
    warm = fresh_handler("functions.predict.app", **environment)
    assert predict(warm, lambda_context)[0] == 200

    faults: list[Fault] = ["503", "slowdown", "hang"]
    for fault in faults:
        with s3_proxy.failing(fault):
            # When S3 fails while a request re-reads the alias
            started = time.monotonic()
            status, body = predict(warm, lambda_context)
            # Then the last good model answers, inside the function timeout
            assert (status, body["model"]["version"]) == (200, 1), fault
            assert elapsed(started) < PREDICT_TIMEOUT_SECONDS

            # And a cold start, with nothing loaded yet, ends its init inside Lambda's init limit and answers 503
            # with the reason, inside the timeout too
            started = time.monotonic()
            cold = fresh_handler("functions.predict.app", **environment)
            assert elapsed(started) < INIT_LIMIT_SECONDS
            started = time.monotonic()
            status, body = predict(cold, lambda_context)
            assert status == 503, fault
            assert body["error"].startswith("no model available: the model store is unavailable; retrying"), fault
            assert "s3://" not in body["error"], fault
            assert elapsed(started) < PREDICT_TIMEOUT_SECONDS
