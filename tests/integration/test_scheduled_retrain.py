"""Retraining through the real handlers, in-process, against S3, SNS and SQS under moto, driven by the events/
files: the schedule runs a retrain at once; POST /retrain answers 202 and queues the run as an asynchronous
invocation of the same function (captured here and delivered, as the Lambda service would); GET /retrain/{id}
reports it. Then the gate scenarios and the faults of issue 5, each a test."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest

from sklambda import aws
from sklambda.runs import RunLock, RunLog
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from training.config import DEFAULT_CONFIG

pytestmark = pytest.mark.integration

FUNCTION_NAME = "sklambda-retrain"


@dataclass
class RetrainContext(LambdaContext):
    """The retrain function's context: 15 minutes and 3008 MB, as the template gives it."""

    function_name: str = FUNCTION_NAME
    memory_limit_in_mb: int = 3008
    remaining_ms: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Cloud:
    """The handlers and what they talk to under moto."""

    bucket: str
    retrain: ModuleType
    predict: ModuleType
    queue_url: str
    invocations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def store(self) -> ModelStore:
        return ModelStore.from_uri(f"s3://{self.bucket}/models")

    def upload(self, frame: pd.DataFrame | bytes, key: str = "data/penguins.csv") -> None:
        body = frame if isinstance(frame, bytes) else frame.to_csv(index=False).encode()
        boto3.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)

    def schedule(self, context: LambdaContext | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.retrain.lambda_handler(
            load_event("retrain-schedule"), context or RetrainContext()
        )
        return result

    def post(self, context: LambdaContext | None = None) -> tuple[int, dict[str, Any]]:
        response = self.retrain.lambda_handler(load_event("retrain-api"), context or RetrainContext())
        return response["statusCode"], json.loads(response["body"])

    def deliver(self) -> dict[str, Any]:
        """What the Lambda service does with the queued asynchronous invocation: run the function with it."""
        function_name, payload = self.invocations.pop(0)
        assert function_name == FUNCTION_NAME  # the function invoked itself
        result: dict[str, Any] = self.retrain.lambda_handler(payload, RetrainContext())
        return result

    def get_run(self, run_id: str) -> tuple[int, dict[str, Any]]:
        event = load_event("retrain-run")
        event["path"] = f"/retrain/{run_id}"
        event["pathParameters"] = {"run_id": run_id}
        response = self.retrain.lambda_handler(event, RetrainContext())
        return response["statusCode"], json.loads(response["body"])

    def list_runs(self) -> list[dict[str, Any]]:
        response = self.retrain.lambda_handler(load_event("retrain-runs"), RetrainContext())
        assert response["statusCode"] == 200, response["body"]
        runs: list[dict[str, Any]] = json.loads(response["body"])["runs"]
        return runs

    def predict_answer(self) -> tuple[int, list[Any], list[Any]]:
        response = self.predict.lambda_handler(load_event("predict"), LambdaContext())
        assert response["statusCode"] == 200, response["body"]
        body = json.loads(response["body"])
        return body["model"]["version"], body["predictions"], body["probabilities"]

    def champion(self) -> int | None:
        state = self.store.alias("penguins", "champion")
        return state.record.version if state else None

    def notifications(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]


@pytest.fixture
def cloud(s3_bucket: str, fresh_handler: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    # The outcome topic with a queue subscribed, to read what the runs publish.
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name="retrain-outcomes")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="outcomes")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    aws.sns_client.cache_clear()
    boto3.client("s3").upload_file(str(PENGUINS_CSV), s3_bucket, "data/penguins.csv")
    environment = {
        "MODEL_STORE_URI": f"s3://{s3_bucket}/models",
        "MODEL_NAME": "penguins",
        "DATA_URI": f"s3://{s3_bucket}/data/",
        "ALIAS_REFRESH_SECONDS": "0",
        "RETRAIN_TOPIC_ARN": topic_arn,
    }
    retrain = fresh_handler("functions.retrain.app", **environment)
    predict = fresh_handler("functions.predict.app", **environment)
    # No code version (a checkout may be clean or dirty): every run trains, even on the champion's own data and
    # configuration. The "nothing new" tests set one.
    monkeypatch.setattr(retrain, "CODE_VERSION", None)
    cloud = Cloud(bucket=s3_bucket, retrain=retrain, predict=predict, queue_url=queue_url)
    # moto runs no Lambda code: record the asynchronous self-invocation; `deliver` plays the Lambda service.
    monkeypatch.setattr(aws, "invoke_event", lambda name, payload: cloud.invocations.append((name, payload)))
    yield cloud
    aws.sns_client.cache_clear()


def expire_lock(cloud: Cloud) -> None:
    """As if the lock's time to live had passed."""
    record = json.loads(cloud.store.objects.get("penguins/runs/lock.json").data)
    record["expires_at"] = 0
    cloud.store.objects.put("penguins/runs/lock.json", json.dumps(record).encode())


def penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS_CSV)


def weak_config(tmp_path: Path) -> Path:
    """The training configuration with a far weaker estimator (regularised to near-constant output)."""
    weak = tmp_path / "weak.toml"
    weak.write_text(
        DEFAULT_CONFIG.read_text().replace(
            "[estimator.params.classification]\n", "[estimator.params.classification]\nC = 1e-6\n"
        )
    )
    return weak


# ------------------------------------------------------------------------------------------- triggers


def test_the_first_scheduled_run_promotes_and_is_recorded_and_announced(
    cloud: Cloud, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an empty model store (no champion) and the sample data under DATA_URI
    # When the schedule fires
    run = cloud.schedule()

    # Then v1 passes every gate check (the must-hold cases included) and becomes the champion
    assert (run["status"], run["version"], run["trigger"]) == ("promoted", 1, "schedule"), run
    checks = {check["name"]: check["passed"] for check in run["gate"]}
    assert checks["first version"]
    assert checks["serving self-test"]
    assert sum(name.startswith("case: ") for name in checks) == 4
    assert all(checks.values())
    assert cloud.champion() == 1
    # And the run record has the data fingerprint, the rows, the metrics and the time per stage
    assert run["data"]["rows"] == 344
    assert len(run["data"]["sha256"]) == 64
    assert run["metrics"]["accuracy"] > 0.95
    assert run["champion_metrics"] is None
    stages = [
        *("load", "validate", "prepare", "fit", "evaluate", "convert", "parity"),
        *("gate", "publish", "self-test", "promote"),
    ]
    assert list(run["stages"]) == stages
    # And the keys the retrain reply had before runs were recorded are still there
    assert run["model"] == {"name": "penguins", "version": 1}
    assert (run["promoted"], run["champion"], run["seconds"]) == (True, None, run["stages"])
    status, recorded = cloud.get_run(run["run_id"])
    assert status == 200
    assert recorded == run
    # And the outcome went to the SNS topic and out as a metric
    (message,) = cloud.notifications()
    assert message["Subject"] == f"penguins v1 promoted: retrain run {run['run_id']}"
    assert message["MessageAttributes"]["status"]["Value"] == "promoted"
    assert json.loads(message["Message"])["run_id"] == run["run_id"]
    assert '"RetrainPromoted"' in capsys.readouterr().out


def test_post_retrain_answers_202_and_the_queued_run_promotes_the_challenger(cloud: Cloud) -> None:
    cloud.schedule()

    # When the API asks for a retrain
    status, queued = cloud.post()

    # Then it answers 202 with a run id at once, having queued the run as an asynchronous self-invocation
    assert status == 202, queued
    assert queued["status_url"] == f"/retrain/{queued['run_id']}"
    assert cloud.invocations == [(FUNCTION_NAME, {"retrain_run": {"run_id": queued["run_id"], "trigger": "api"}})]
    status, pending = cloud.get_run(queued["run_id"])
    assert (status, pending["status"]) == (200, "queued")
    assert pending["by"] == "POST /retrain by arn:aws:iam::123456789012:user/data-scientist: new data uploaded"

    # When the Lambda service delivers that invocation
    cloud.deliver()

    # Then the challenger (same data) is at least as good and is promoted, compared on the same held-out rows
    status, run = cloud.get_run(queued["run_id"])
    assert (run["status"], run["version"], run["champion_version"]) == ("promoted", 2, 1), run
    assert run["champion"] == {"version": 1, "metrics": run["champion_metrics"]}
    assert run["champion_metrics"]["accuracy"] == run["metrics"]["accuracy"]
    assert cloud.predict_answer()[0] == 2
    assert next(item["run_id"] for item in cloud.list_runs()) == queued["run_id"]


@pytest.mark.parametrize("body", ["{not json", '{"reason": 3}', '{"reason": "ok", "force": true}', "[1]"])
def test_post_retrain_with_a_malformed_body_is_400_and_queues_nothing(cloud: Cloud, body: str) -> None:
    event = load_event("retrain-api")
    event["body"] = body
    response = cloud.retrain.lambda_handler(event, RetrainContext())
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"].startswith("the body must be empty or JSON")
    assert cloud.invocations == []
    assert cloud.list_runs() == []


def test_unknown_or_malformed_run_id_is_404(cloud: Cloud) -> None:
    assert cloud.get_run("20260101T000000000Z-00000000")[0] == 404
    status, body = cloud.get_run("..%2Flock")
    assert status == 404
    assert "run ids look like" in body["error"]


def test_a_queued_run_whose_invocation_never_came_shows_as_abandoned_once_its_lock_expired(cloud: Cloud) -> None:
    # Given a run queued by the API whose asynchronous invocation was lost, and its lock expired
    status, queued = cloud.post()
    expire_lock(cloud)

    # When its state is asked for
    status, run = cloud.get_run(queued["run_id"])

    # Then it says what happened, and the next trigger runs
    assert (status, run["status"]) == (200, "abandoned")
    assert cloud.schedule()["status"] == "promoted"


# ------------------------------------------------------------------------------------------- gate scenarios


def test_a_worse_challenger_is_rejected_and_the_champion_and_serving_answer_stay(
    cloud: Cloud, fresh_handler: Callable[..., ModuleType], tmp_path: Path
) -> None:
    cloud.schedule()
    answer_before = cloud.predict_answer()

    # Given a training configuration changed to a far weaker estimator
    cloud.retrain = fresh_handler("functions.retrain.app", TRAINING_CONFIG=str(weak_config(tmp_path)))

    # When the API triggers a retrain and it runs
    _status, queued = cloud.post()
    cloud.deliver()

    # Then v2 exists but is rejected with the reasons; v1 stays champion and predict answers exactly as before
    run = cloud.get_run(queued["run_id"])[1]
    assert (run["status"], run["version"]) == ("rejected", 2)
    failed = {check["name"]: check["detail"] for check in run["gate"] if not check["passed"]}
    assert failed["beats champion"].startswith("worse than the champion: accuracy")
    assert cloud.store.status("penguins", 2).status == "rejected"
    assert cloud.store.status("penguins", 2).reason == run["reason"]
    assert cloud.champion() == 1
    assert cloud.predict_answer() == answer_before
    assert [m["MessageAttributes"]["status"]["Value"] for m in cloud.notifications()] == ["promoted", "rejected"]


def test_the_gate_requires_the_configured_minimum_improvement(
    cloud: Cloud, fresh_handler: Callable[..., ModuleType], tmp_path: Path
) -> None:
    cloud.schedule()
    # Given [gate] asking for at least 0.01 more accuracy than the champion (MLflow min_absolute_change)
    strict = tmp_path / "strict.toml"
    strict.write_text(DEFAULT_CONFIG.read_text().replace("[gate]\n", "[gate]\nmin_absolute_change = 0.01\n"))
    cloud.retrain = fresh_handler("functions.retrain.app", TRAINING_CONFIG=str(strict))

    # When the same data is retrained (an equally good challenger)
    run = cloud.schedule()

    # Then it is rejected: equal is not enough
    assert run["status"] == "rejected"
    assert "does not beat the champion by enough" in run["reason"]
    assert cloud.champion() == 1


def test_a_garbage_data_day_with_scrambled_labels_is_not_promoted(
    cloud: Cloud, fresh_handler: Callable[..., ModuleType], tmp_path: Path
) -> None:
    # Given a champion, then a data day whose labels are scrambled: on its own held-out split the champion
    # scores badly too, so "the challenger beats the champion on the new rows" alone would let it through
    cloud.schedule()
    scrambled = penguins()
    scrambled["species"] = np.random.default_rng(7).permutation(scrambled["species"].to_numpy())
    cloud.upload(scrambled)

    # When the schedule fires
    run = cloud.schedule()

    # Then data validation stops it: the champion collapses on the new rows
    assert run["status"] == "failed"
    assert "labels look changed or scrambled" in run["data_problems"][0]
    assert cloud.store.versions("penguins") == [1]

    # And with that check switched off, the must-hold cases still reject the challenger
    lenient = tmp_path / "lenient.toml"
    lenient.write_text(DEFAULT_CONFIG.read_text().replace("max_champion_metric_drop = 0.2\n", ""))
    lenient.write_text(lenient.read_text().replace("[data]\n", "[data]\nmax_champion_metric_drop = 1.0\n"))
    cloud.retrain = fresh_handler("functions.retrain.app", TRAINING_CONFIG=str(lenient))
    run = cloud.schedule()
    assert run["status"] == "rejected"
    failed_cases = [c for c in run["gate"] if c["name"].startswith("case: ") and not c["passed"]]
    assert failed_cases
    assert cloud.champion() == 1


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        pytest.param(
            lambda f: f.drop(columns=["bill_length_mm"]), "schema drift: column 'bill_length_mm'", id="column"
        ),
        pytest.param(
            lambda f: f.assign(body_mass_g=f["body_mass_g"].astype(str) + " g"),
            "schema drift: column 'body_mass_g': expected numbers",
            id="type",
        ),
        pytest.param(
            lambda f: f.assign(island=f["island"].replace({"Biscoe": "Atlantis"})),
            "drift: column 'island'",
            id="categories",
        ),
        pytest.param(lambda f: f.assign(body_mass_g=f["body_mass_g"] * 1000), "outside the champion's", id="units"),
        pytest.param(lambda f: f.head(30), "too few rows: 30", id="rows"),
        pytest.param(lambda f: f.assign(species="Adelie"), "has a single class ('Adelie')", id="one-class"),
    ],
)
def test_drifting_data_fails_the_run_with_a_report_and_nothing_moves(
    cloud: Cloud, corrupt: Callable[[pd.DataFrame], pd.DataFrame], problem: str
) -> None:
    cloud.schedule()
    cloud.upload(corrupt(penguins()))

    run = cloud.schedule()

    assert run["status"] == "failed"
    assert run["reason"] == "the training data failed validation"
    assert any(problem in line for line in run["data_problems"]), run["data_problems"]
    assert cloud.store.versions("penguins") == [1]
    assert cloud.champion() == 1
    assert cloud.notifications()[-1]["MessageAttributes"]["status"]["Value"] == "failed"


def _parquet_bytes() -> bytes:
    buffer = io.BytesIO()
    penguins().to_parquet(buffer, engine="fastparquet", index=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        # A footer length read from garbage (~1.9 GB here) once made the reader exhaust the memory: framing first
        pytest.param(lambda: b"PAR1 this is not parquet", "not a Parquet file", id="garbage"),
        pytest.param(lambda: _parquet_bytes()[:-100], "not a Parquet file", id="truncated"),
        pytest.param(
            lambda: b"PAR1" + b"x" * 20 + (2**31 - 1).to_bytes(4, "little") + b"PAR1",
            "corrupt Parquet footer",
            id="footer",
        ),
        # well framed, but the footer length points into the column data: the reader's own error, reported
        pytest.param(
            lambda: _parquet_bytes()[:-8] + (10).to_bytes(4, "little") + b"PAR1", "cannot parse", id="damaged"
        ),
    ],
)
def test_an_unparseable_file_fails_the_run_with_a_report(
    cloud: Cloud, content: Callable[[], bytes], problem: str
) -> None:
    cloud.schedule()
    cloud.upload(content(), key="data/broken.parquet")

    run = cloud.schedule()

    assert run["status"] == "failed"
    assert run["reason"] == "the training data cannot be used"
    assert problem in run["data_problems"][0]
    assert "broken.parquet" in run["data_problems"][0]
    assert cloud.store.versions("penguins") == [1]


def test_data_under_a_prefix_in_several_files_and_formats_is_read_together(cloud: Cloud) -> None:
    # Given the sample split into a CSV and a Parquet file under the prefix
    frame = penguins()
    buffer = io.BytesIO()
    frame.iloc[200:].to_parquet(buffer, engine="fastparquet", index=False)
    cloud.upload(frame.iloc[:200])
    cloud.upload(buffer.getvalue(), key="data/more.parquet")

    run = cloud.schedule()

    assert (run["status"], run["data"]["files"], run["data"]["rows"]) == ("promoted", 2, 344), run


# ------------------------------------------------------------------------------------------- faults


def test_overlapping_triggers_start_one_training(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a scheduled run that is in the middle of training
    import training.pipeline

    entered, release = threading.Event(), threading.Event()
    real_train = training.pipeline.train

    def slow_train(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return real_train(*args, **kwargs)

    monkeypatch.setattr("training.pipeline.train", slow_train)
    results: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: results.append(cloud.schedule()))
    first.start()
    assert entered.wait(30)

    # When the schedule fires again and the API is called meanwhile
    overlapping = cloud.schedule()
    status, refused = cloud.post()
    release.set()
    first.join(30)

    # Then neither starts a training: the schedule skips, the API answers 409 naming the running run
    assert overlapping["skipped"] is True
    assert status == 409
    assert refused["run_id"] == overlapping["running_run_id"] == results[0]["run_id"]
    assert cloud.invocations == []
    # And exactly one version was trained
    assert results[0]["status"] == "promoted"
    assert cloud.store.versions("penguins") == [1]
    assert [run["run_id"] for run in cloud.list_runs()] == [results[0]["run_id"]]


def test_a_duplicate_delivery_of_the_queued_invocation_trains_once(cloud: Cloud) -> None:
    # Given a queued run whose asynchronous invocation Lambda delivers twice (at-least-once delivery)
    _status, queued = cloud.post()
    cloud.invocations.append(cloud.invocations[0])

    # When both deliveries run, one after the other
    first, second = cloud.deliver(), cloud.deliver()

    # Then only the first trained; the second says why it did nothing
    assert (first["status"], first["run_id"]) == ("promoted", queued["run_id"])
    assert second == {
        "skipped": True,
        "reason": f"run {queued['run_id']} was already carried out (promoted)",
        "running_run_id": queued["run_id"],
    }
    assert cloud.store.versions("penguins") == [1]


def test_a_crash_after_publish_before_the_alias_move_promotes_nothing_and_frees_the_lock(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.schedule()
    answer_before = cloud.predict_answer()

    # Given the alias write fails with an unexpected error (after v2 was published and passed the gate)
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated crash between publish and promotion")

    monkeypatch.setattr(ModelStore, "promote", crash)

    # When the schedule fires, the invocation fails (so its event goes to the on-failure queue)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cloud.schedule()
    monkeypatch.undo()

    # Then v2 is published but not promoted (marked rejected so nobody promotes it by mistake), the champion and
    # the served answer are unchanged, the run is recorded as failed, and the lock is free for the next trigger
    assert cloud.store.versions("penguins") == [1, 2]
    assert cloud.store.status("penguins", 2).status == "rejected"
    assert cloud.champion() == 1
    assert cloud.predict_answer() == answer_before
    failed = cloud.list_runs()[0]
    assert (failed["status"], failed["version"]) == ("failed", 2)
    assert failed["reason"].startswith("internal error: RuntimeError")
    assert RunLock(cloud.store.objects, "penguins", ttl_seconds=960).current() is None
    assert cloud.schedule()["status"] == "promoted"


def test_a_killed_run_leaves_a_lock_that_expires(cloud: Cloud) -> None:
    # Given a run that died holding the lock (killed by the timeout: nothing handed the lock back)
    RunLock(cloud.store.objects, "penguins", ttl_seconds=960).acquire("20260101T000000000Z-deadbeef", "killed run")

    # When a trigger comes while its lease is valid, it is skipped
    assert cloud.schedule()["running_run_id"] == "20260101T000000000Z-deadbeef"

    # When the lease has expired (16 minutes later), the next trigger runs
    expire_lock(cloud)
    assert cloud.schedule()["status"] == "promoted"


def test_a_run_too_big_for_the_time_left_refuses_before_training(cloud: Cloud) -> None:
    # Given an invocation with 5 s left (less than the estimate with its safety margin and reserve)
    run = cloud.schedule(RetrainContext(remaining_ms=5_000))

    # Then it refuses clearly, with what to do, before anything is trained or published
    assert run["status"] == "failed"
    assert run["reason"].startswith("refusing to train 344 rows x 8 columns here")
    assert "python -m training retrain --data" in run["reason"]
    assert "train" not in run["stages"]
    assert cloud.store.versions("penguins") == []


def test_the_same_data_and_configuration_give_the_same_metrics(cloud: Cloud) -> None:
    first = cloud.schedule()
    second = cloud.schedule()
    assert first["metrics"] == second["metrics"] == second["champion_metrics"]
    assert first["data"]["sha256"] == second["data"]["sha256"]


def test_runs_are_listed_newest_first(cloud: Cloud) -> None:
    ids = [cloud.schedule()["run_id"] for _ in range(2)]
    assert [run["run_id"] for run in cloud.list_runs()] == ids[::-1]
    assert RunLog(cloud.store.objects, "penguins").run_ids() == ids[::-1]
