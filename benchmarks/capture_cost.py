"""What capture costs POST /predict (not part of `make bench`): the warm handler with capture off and on, side by
side, single row and 1000 rows, medians of interleaved repetitions (benchmarks/serving.py's approach).

    PYTHONPATH=layers/shared:. .venv/bin/python -m benchmarks.capture_cost

"on" samples every request (CaptureSampleRate 1) into the in-memory buffer; the sender is replaced by one that
accepts the batch without a network call, so the table shows the hot path's own cost (sampling draw, encoding,
append) including the flush bookkeeping every 500 requests, but not Firehose's round trip on the request that
flushes (one PutRecordBatch per 500 captured requests or per CAPTURE_MAX_AGE_SECONDS, whichever comes first).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile

import orjson

from benchmarks.report import interleaved, seconds
from benchmarks.serving import Context, event_with, load_handler, quiet_stdout, request_rows, train_models
from sklambda.store import ModelStore


def main() -> None:
    store_uri = tempfile.mkdtemp(prefix="capture-cost-")
    train_models(store_uri, tempfile.mkdtemp(prefix="capture-cost-data-"))
    store = ModelStore.from_uri(store_uri)
    context = Context()
    print("| model | request | capture off | capture on | cost of capture |")
    print("|---|---|---|---|---|")
    for label, name in (("sample LR", "penguins"), ("forest 100", "penguins-forest")):
        alias = store.alias(name, "champion")
        assert alias is not None
        manifest = store.manifest(name, alias.record.version)
        os.environ.pop("CAPTURE_LOCAL_FOLDER", None)
        off = load_handler(store_uri, name, "onnx")
        os.environ["CAPTURE_LOCAL_FOLDER"] = tempfile.mkdtemp(prefix="capture-sink-")
        on = load_handler(store_uri, name, "onnx")
        os.environ.pop("CAPTURE_LOCAL_FOLDER")
        assert off.capture is None
        assert on.capture is not None
        on.capture.send = lambda batch: 0  # no network: the hot path's own cost
        for rows, repeats in ((1, 3000), (1000, 300)):
            event = event_with(orjson.dumps({"instances": request_rows(manifest, rows)}).decode())
            with quiet_stdout():
                assert on.lambda_handler(event, context)["statusCode"] == 200
                without, with_capture = interleaved(
                    functools.partial(off.lambda_handler, event, context),
                    functools.partial(on.lambda_handler, event, context),
                    repeats,
                )
            print(
                f"| {label} | {rows} row{'s' if rows > 1 else ''} | {seconds(without)} | {seconds(with_capture)} "
                f"| +{seconds(with_capture - without)} ({(with_capture / without - 1) * 100:+.0f}%) |",
                file=sys.stdout,
                flush=True,
            )


if __name__ == "__main__":
    main()
