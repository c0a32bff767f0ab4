"""The loop under moto (S3 and Kinesis Data Firehose), the handlers in-process, driven by the events/ files:
predict captures what it serves through Firehose, POST /feedback stores labels, the monitor compares the capture
with the version's baseline and scores the labels, and the labelled rows become training data a retrain run reads.

moto's Firehose writes to `<Prefix>yyyy/mm/dd/hh/` and does not evaluate dynamic partitioning: the test stream's
prefix is what the template's partitioning gives today's v1 records (capture/penguins/version=1/date=<today>/).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pandas as pd
import pytest

from sklambda.contract_derivation import frame_to_instances
from sklambda.store import ModelStore
from tests.conftest import BUCKET, PENGUINS_CSV, LambdaContext, load_event, upload_store

pytestmark = pytest.mark.integration

STREAM = "sklambda-capture"
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture
def loop(s3_bucket: str, trained_store: Path, fresh_handler: Callable[..., ModuleType]) -> dict[str, ModuleType]:
    # Given the trained model in S3 and a Firehose stream writing today's v1 captures to the capture prefix
    upload_store(trained_store, f"s3://{s3_bucket}/models")
    today = datetime.now(UTC).date().isoformat()
    boto3.client("firehose", region_name="us-east-1").create_delivery_stream(
        DeliveryStreamName=STREAM,
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/capture",
            "BucketARN": f"arn:aws:s3:::{s3_bucket}",
            "Prefix": f"capture/penguins/version=1/date={today}/",
        },
    )
    common = {"MODEL_STORE_URI": f"s3://{s3_bucket}/models", "MODEL_NAME": "penguins"}
    predict = fresh_handler(
        "functions.predict.app", **common, CAPTURE_STREAM_NAME=STREAM, CAPTURE_MAX_AGE_SECONDS="3600"
    )
    feedback = fresh_handler("functions.feedback.app", **common, CAPTURE_URI=f"s3://{s3_bucket}/capture")
    monitor = fresh_handler(
        "functions.monitor.app",
        **common,
        CAPTURE_URI=f"s3://{s3_bucket}/capture",
        LABELLED_DATA_URI=f"s3://{s3_bucket}/data/labelled/",
        MIN_LABELS="20",
    )
    return {"predict": predict, "feedback": feedback, "monitor": monitor}


def penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS_CSV)


def serve(app: ModuleType, frame: pd.DataFrame, rows_per_request: int = 8) -> list[tuple[str, list[str]]]:
    """POST /predict the frame's rows; returns (request id, predictions) per request. Capture is flushed at the end
    (as the next request after CAPTURE_MAX_AGE_SECONDS would)."""
    answered = []
    instances = frame_to_instances(frame, FEATURES)
    for start in range(0, len(instances), rows_per_request):
        event = load_event("predict")
        request_id = f"req-{start:05d}"
        event["requestContext"]["requestId"] = request_id
        event["body"] = json.dumps({"instances": instances[start : start + rows_per_request]})
        response = app.lambda_handler(event, LambdaContext())
        assert response["statusCode"] == 200, response["body"]
        answered.append((request_id, json.loads(response["body"])["predictions"]))
    assert app.capture is not None
    assert app.capture.flush() == 0
    return answered


def send_feedback(app: ModuleType, labels: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    event = load_event("feedback")
    event["body"] = json.dumps({"labels": labels})
    response = app.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def run_monitor(app: ModuleType, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], dict[str, float]]:
    result = app.lambda_handler(load_event("monitor-schedule"), LambdaContext())
    emitted: dict[str, float] = {}
    output = capsys.readouterr()
    # Captured values and labels never reach a log line (categories and classes of the served rows as sentinels;
    # predict's per-class metric names are metrics, not logs)
    logged = [line for line in (output.out + output.err).splitlines() if '"_aws"' not in line]
    for value in ("Biscoe", "Dream", "Torgersen", "Adelie", "Gentoo", "Chinstrap"):
        assert not any(value in line for line in logged), value
    for line in output.out.splitlines():
        if '"_aws"' in line:
            document = json.loads(line)
            for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = document[definition["Name"]]
                emitted[definition["Name"]] = value[-1] if isinstance(value, list) else value
    return result, emitted


def test_traffic_from_the_training_distribution_raises_no_alarm(
    loop: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the training table served as it is (all 344 rows, through the contract)
    serve(loop["predict"], penguins())
    # When the monitor runs
    result, emitted = run_monitor(loop["monitor"], capsys)
    # Then it saw every row, no column drifted, nothing alarms, and the metrics say so
    assert result["rows"] == 344
    assert result["drifted_columns"] == []
    assert result["alarms"] == []
    assert result["max_psi"] < 0.2
    assert emitted["MonitorRows"] == 344
    assert emitted["DriftedColumns"] == 0
    assert emitted["DriftMaxPsi"] < 0.2
    assert "Psi_body_mass_g" in emitted
    # And the monitoring record is in the store
    records = ModelStore.from_uri(f"s3://{BUCKET}/models").objects.list("penguins/monitoring/")
    assert len(records) == 1


def test_one_scaled_column_raises_drift_on_that_column_only(
    loop: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given traffic whose body mass is 1.5 times what training saw
    frame = penguins()
    frame["body_mass_g"] = frame["body_mass_g"] * 1.5
    serve(loop["predict"], frame)
    # When the monitor runs
    result, emitted = run_monitor(loop["monitor"], capsys)
    # Then body_mass_g drifts and no other column does
    assert result["drifted_columns"] == ["body_mass_g"]
    assert result["alarms"]
    assert "body_mass_g" in result["alarms"][0]
    assert emitted["Psi_body_mass_g"] > 0.2
    assert emitted["DriftedColumns"] == 1
    assert all(value < 0.2 for name, value in emitted.items() if name.startswith("Psi_") and name != "Psi_body_mass_g")


def test_feedback_contradicting_predictions_drops_the_live_metric(
    loop: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given served traffic, and labels that contradict every prediction of the first 10 requests
    answered = serve(loop["predict"], penguins())
    labels = [
        {"request_id": request_id, "row": row, "label": next(c for c in CLASSES if c != predicted)}
        for request_id, predictions in answered[:10]
        for row, predicted in enumerate(predictions)
    ]
    status, body = send_feedback(loop["feedback"], labels)
    assert status == 202
    assert body["accepted"] == 80
    assert body["model"] == {"name": "penguins", "version": 1}
    # When the monitor runs
    result, emitted = run_monitor(loop["monitor"], capsys)
    # Then the live accuracy (0 on 80 labels) is far below the held-out accuracy: the quality alarm's metric says so
    quality = result["quality"]
    assert quality["metric"] == "accuracy"
    assert quality["labels"] == 80
    assert quality["live"] == 0.0
    assert result["quality_breached"]
    assert emitted["LiveMetricDrop"] > 0.1
    assert emitted["LiveMetric"] == 0.0
    assert any("live accuracy" in alarm for alarm in result["alarms"])


def test_labelled_captures_become_training_data_that_a_retrain_reads(
    loop: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    from training.config import load_config
    from training.pipeline import TrainingRun, run_training

    # Given served traffic labelled with the truth for 40 rows, and the original training table under data/
    frame = penguins()
    answered = serve(loop["predict"], frame)
    truth = frame["species"].tolist()
    labels = [
        {"request_id": request_id, "row": row, "label": truth[index * 8 + row]}
        for index, (request_id, predictions) in enumerate(answered[:5])
        for row in range(len(predictions))
    ]
    assert send_feedback(loop["feedback"], labels)[0] == 202
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.put_object(Bucket=BUCKET, Key="data/penguins.csv", Body=PENGUINS_CSV.read_bytes())
    # When the monitor runs, then a retrain run reads data/
    result, _ = run_monitor(loop["monitor"], capsys)
    assert result["labelled_rows_written"] == 40
    written = s3.list_objects_v2(Bucket=BUCKET, Prefix="data/labelled/")["Contents"]
    labelled = pd.read_csv(s3.get_object(Bucket=BUCKET, Key=written[0]["Key"])["Body"])
    assert list(labelled.columns) == list(penguins().columns)
    assert len(labelled) == 40
    assert labelled["species"].tolist() == truth[:40]
    store = ModelStore.from_uri(f"s3://{BUCKET}/models")
    record = run_training(
        TrainingRun(store=store, data_uri=f"s3://{BUCKET}/data/", config=load_config(None)), trigger="test", by="test"
    )
    # Then the run validated and trained on both files: the table's 344 rows and the 40 labelled ones
    assert record.status in {"promoted", "rejected"}, record.reason
    assert record.data is not None
    assert record.data.files == 2
    assert record.data.rows == 344 + 40


def test_bad_feedback_gets_a_clear_4xx(loop: dict[str, ModuleType]) -> None:
    app = loop["feedback"]
    request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    cases: list[tuple[str | None, int, str]] = [
        ("{not json", 400, "not valid JSON"),
        (json.dumps({"labels": [{"request_id": request_id, "row": 0, "label": 3}]}), 422, "not one of the classes"),
        (json.dumps({"labels": [{"request_id": "../../x", "row": 0, "label": "Adelie"}]}), 422, "not a request id"),
        (json.dumps({"labels": [{"request_id": request_id, "row": -1, "label": "Adelie"}]}), 422, "whole number"),
        (json.dumps({"labels": [{"request_id": request_id, "label": "Adelie"}] * 5001}), 413, "more than the 5000"),
        (json.dumps({"label": "Adelie"}), 400, "expected JSON"),
        (None, 400, "no body"),
    ]
    for body, status, message in cases:
        event = load_event("feedback")
        event["body"] = body
        response = app.lambda_handler(event, LambdaContext())
        reply = json.loads(response["body"])
        assert response["statusCode"] == status, (body and body[:80], reply)
        assert message in reply["error"] or any(message in p["message"] for p in reply.get("problems", [])), reply
        assert reply["request_id"]
    # A wrong content type is 415, and nothing was stored for any of them
    event = load_event("feedback")
    event["headers"] = {"Content-Type": "text/plain"}
    assert app.lambda_handler(event, LambdaContext())["statusCode"] == 415
    assert "Contents" not in boto3.client("s3", region_name="us-east-1").list_objects_v2(
        Bucket=BUCKET, Prefix="capture/penguins/feedback/"
    )


def test_drift_starts_a_retrain_only_when_asked(
    loop: dict[str, ModuleType],
    fresh_handler: Callable[..., ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklambda import aws

    started: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(aws, "invoke_event", lambda name, payload: started.append((name, payload)))
    frame = penguins()
    frame["body_mass_g"] = frame["body_mass_g"] * 1.5
    serve(loop["predict"], frame)
    # Given the default (no retrain function named): drift alarms, and nothing is started
    result, _ = run_monitor(loop["monitor"], capsys)
    assert result["alarms"]
    assert not result["retrain_started"]
    assert started == []
    # When RetrainOnMonitorAlarm names the retrain function
    monitor = fresh_handler(
        "functions.monitor.app",
        MODEL_STORE_URI=f"s3://{BUCKET}/models",
        MODEL_NAME="penguins",
        CAPTURE_URI=f"s3://{BUCKET}/capture",
        RETRAIN_FUNCTION_NAME="sklambda-retrain",
    )
    result, emitted = run_monitor(monitor, capsys)
    # Then the same drift starts one retrain run, asynchronously, with the reason
    assert result["retrain_started"]
    assert emitted["MonitorRetrainStarted"] == 1
    ((name, payload),) = started
    assert name == "sklambda-retrain"
    assert "body_mass_g" in payload["monitor_alarm"]["reason"]


def test_the_retrain_function_runs_a_monitor_alarm_with_its_reason(
    s3_bucket: str, fresh_handler: Callable[..., ModuleType]
) -> None:
    # Given the retrain function with training data and no model yet
    boto3.client("s3", region_name="us-east-1").upload_file(str(PENGUINS_CSV), s3_bucket, "data/penguins.csv")
    retrain = fresh_handler(
        "functions.retrain.app",
        MODEL_STORE_URI=f"s3://{s3_bucket}/models",
        MODEL_NAME="penguins",
        DATA_URI=f"s3://{s3_bucket}/data/",
    )
    # When the monitor's asynchronous invocation arrives
    result = retrain.lambda_handler(
        {"monitor_alarm": {"reason": "drift: PSI above 0.2 on body_mass_g"}}, LambdaContext()
    )
    # Then one run is carried out, recorded as triggered by the monitor with the reason
    assert result["status"] == "promoted", result
    record = json.loads(
        ModelStore.from_uri(f"s3://{s3_bucket}/models")
        .objects.get(f"penguins/runs/records/{result['run_id']}.json")
        .data
    )
    assert record["trigger"] == "monitor"
    assert "drift: PSI above 0.2 on body_mass_g" in record["by"]
