"""`make demo-loop`: the monitoring loop on a laptop, through the real handlers in-process (no AWS, no Docker).

1. trains the sample model into <workdir>/store (its baseline is stored with the version);
2. yesterday: serves the training table as it is, captured to <workdir>/capture (the local stand-in for
   Firehose, same layout), and runs the monitor: no drift;
3. today: serves it again with body_mass_g scaled by 1.5, sends ground truth for 80 rows (half of them
   contradicting the predictions) to POST /feedback, and runs the monitor: drift on body_mass_g, the live metric
   below its threshold, the labelled rows written to <workdir>/data/labelled/;
4. writes the model report (<workdir>/report.html) with its monitoring section.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PENGUINS_CSV = REPO / "training" / "data" / "penguins.csv"
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]
ROWS_PER_REQUEST = 8


class _Context:
    function_name = "demo"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:demo"
    aws_request_id = "demo-request"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _handler(module: str, **environment: str) -> ModuleType:
    os.environ.update(environment)
    sys.modules.pop(module, None)
    return importlib.import_module(module)


def _event(path: str, body: str, request_id: str) -> dict[str, Any]:
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"requestId": request_id, "stage": "local"},
        "body": body,
        "isBase64Encoded": False,
    }


def serve(predict: ModuleType, frame: Any, day: str) -> list[tuple[str, list[Any]]]:
    from sklambda.contract_derivation import frame_to_instances

    features = [column for column in frame.columns if column != "species"]
    instances = frame_to_instances(frame, features)
    answered = []
    for start in range(0, len(instances), ROWS_PER_REQUEST):
        request_id = f"{day}-req-{start:05d}"
        body = json.dumps({"instances": instances[start : start + ROWS_PER_REQUEST]})
        reply = predict.lambda_handler(_event("/predict", body, request_id), _Context())
        if reply["statusCode"] != 200:
            raise SystemExit(f"predict refused a row: {reply['body']}")
        answered.append((request_id, json.loads(reply["body"])["predictions"]))
    predict.capture.flush()
    return answered


def monitor(workdir: Path, store_uri: str, day: datetime) -> Any:
    from sklambda.locations import open_object_store
    from sklambda.monitor import MonitorConfig, run_monitor
    from sklambda.store import ModelStore

    return run_monitor(
        ModelStore.from_uri(store_uri),
        open_object_store(str(workdir / "capture")),
        "penguins",
        config=MonitorConfig(window_days=0, min_labels=30),  # one day per run, to show two points in time
        labelled_data=open_object_store(str(workdir / "data" / "labelled")),
        today=day.date(),
    )


def describe(record: Any) -> str:
    drift = record.drift
    lines = [f"  captured rows: {record.captured_rows}, max PSI {drift.max_psi:.3f}" if drift else "  no drift data"]
    if drift:
        lines += [f"    {name:<18} PSI {column.psi:.3f}" for name, column in sorted(drift.columns.items())]
    if record.quality:
        quality = record.quality
        lines.append(
            f"  live {quality.metric} {quality.live:.3f} on {quality.labels} labels vs held-out {quality.held_out}"
        )
    lines.append(f"  alarms: {'; '.join(record.alarms) or 'none'}")
    if record.labelled_data:
        lines.append(f"  labelled rows written for the next retrain: {', '.join(record.labelled_data)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The monitoring loop, locally (see the module docstring).")
    parser.add_argument("--workdir", default="demo-loop", help="where the store, captures and report go")
    args = parser.parse_args(argv)
    saved = dict(os.environ)  # the handlers read their configuration from it; put it back afterwards
    try:
        return _loop(Path(args.workdir).resolve())
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _loop(workdir: Path) -> int:
    import pandas as pd

    from training.cli import main as training
    from training.report import report_html

    store_uri = str(workdir / "store")
    with contextlib.redirect_stdout(io.StringIO()):
        if training(["train", "--data", str(PENGUINS_CSV), "--store", store_uri]) != 0:
            raise SystemExit("training failed")
    print(f"1. trained penguins into {store_uri} (baseline stored with the version: python -m training describe)")
    common = {"MODEL_STORE_URI": store_uri, "MODEL_NAME": "penguins", "POWERTOOLS_METRICS_NAMESPACE": "Demo"}
    with contextlib.redirect_stdout(io.StringIO()):  # the handlers print their metrics (EMF)
        predict = _handler("functions.predict.app", **common, CAPTURE_LOCAL_FOLDER=str(workdir / "capture"))
        feedback = _handler("functions.feedback.app", **common, CAPTURE_URI=str(workdir / "capture"))
    frame = pd.read_csv(PENGUINS_CSV)
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)

    predict.capture.clock = lambda: yesterday.timestamp()
    with contextlib.redirect_stdout(io.StringIO()):
        serve(predict, frame, "day1")
    print(f"2. {yesterday.date()}: served the training table ({len(frame)} rows); monitor:")
    print(describe(monitor(workdir, store_uri, yesterday)))

    shifted = frame.assign(body_mass_g=frame["body_mass_g"] * 1.5)
    predict.capture.clock = time.time
    with contextlib.redirect_stdout(io.StringIO()):
        answered = serve(predict, shifted, "day2")
    truth = frame["species"].tolist()
    labels = []
    for index, (request_id, predictions) in enumerate(answered[:10]):
        for row, predicted in enumerate(predictions):
            contradict = row % 2 == 1  # half the labels say the model was wrong
            actual = next(c for c in CLASSES if c != predicted) if contradict else truth[index * ROWS_PER_REQUEST + row]
            labels.append({"request_id": request_id, "row": row, "label": actual})
    with contextlib.redirect_stdout(io.StringIO()):
        reply = feedback.lambda_handler(_event("/feedback", json.dumps({"labels": labels}), "feedback-1"), _Context())
    print(
        f"3. {now.date()}: served it with body_mass_g x 1.5; POST /feedback with {len(labels)} labels "
        f"-> {reply['statusCode']} {reply['body']}; monitor:"
    )
    print(describe(monitor(workdir, store_uri, now)))
    from sklambda.store import ModelStore

    report = workdir / "report.html"
    report.write_text(report_html(ModelStore.from_uri(store_uri), "penguins"))
    print(f"4. model report with its monitoring section: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
