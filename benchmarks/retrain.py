"""A whole retrain run against the bare fit + score of the same pipeline on the same data (part of
`python -m benchmarks`).

- retrain: `training.pipeline.run_training`, the code path of the retrain function and `python -m training
  retrain`: take the run lock, read the data from S3 (the local moto server), validate it against the champion,
  train, evaluate, convert to ONNX, publish, gate (champion comparison, must-hold cases, invariants, the serving
  runtime's self-test), promote, record the run. Each repetition starts from a store holding one champion.
- floor: `pipeline.fit` on the same training split and `pipeline.score` on the same held-out split, already in
  memory: what any training job does at the least.

Tables are the sample data resampled with noise (benchmarks/retrain_scaling.py). The sample pipeline (logistic
regression) at the sample's own size (344 rows: the fixed costs of a run dominate; no target) and at `rows`
(default 100 000), and the 100-tree forest at `rows` too, a pipeline whose fit costs more than the rest of
the run. Target (issue 16): retrain <= 2.0x floor for the logistic regression at `rows`; the forest is reported
against the same bound.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.report import Row, ratio, seconds, verdict
from benchmarks.retrain_scaling import PENGUINS, synthesise
from sklambda.contract_derivation import derive_contract, encode_frame
from sklambda.locations import open_object_store
from sklambda.serving import local_self_test
from sklambda.store import ModelStore
from training.config import TrainingConfig, load_config
from training.dataset import clean
from training.features import infer_task, select_features
from training.model import build_estimator, build_pipeline, split
from training.pipeline import TrainingRun, run_training

# Issue 16's target (a 1.5x we once set ourselves was never met: a run validates, evaluates, converts, checks
# parity and gates on top of the fit, and none of those checks may be dropped to meet it).
TARGET_RETRAIN = 2.0
FOREST_CONFIG = Path(__file__).with_name("random_forest.toml")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Training logs each stage at INFO and the CLI prints; neither belongs in the benchmark's output."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.disable(previous)


class Floor:
    """The same pipeline on the same split as the run trains, prepared ahead: only fit + score are timed."""

    def __init__(self, frame: pd.DataFrame, config: TrainingConfig) -> None:
        target = config.model.target
        cleaned, _ = clean(frame, target)
        task = infer_task(cleaned[target], config.model.task)
        features = select_features(cleaned, config)
        self.parts = split(cleaned, features, target, task, config)
        contract = derive_contract(
            self.parts.x_train, numeric=features.numeric, categorical=features.categorical, target=target, task=task
        )
        self.x_train = encode_frame(self.parts.x_train, contract)
        self.x_test = encode_frame(self.parts.x_test, contract)
        self.features, self.config, self.task = features, config, task

    def __call__(self) -> float:
        pipeline: Any = build_pipeline(self.features, build_estimator(self.config, self.task))
        pipeline.fit(self.x_train, self.parts.y_train)
        return float(pipeline.score(self.x_test, self.parts.y_test))


def measure(
    rows: int, s3_prefix: str, repeats: int, scratch: Path, config_file: Path | None = None
) -> tuple[float, float, dict[str, float]]:
    """Medians of (retrain, floor) in seconds, and of the run's stages."""
    from training.cli import main as training_main

    config = load_config(config_file)
    options = ["--config", str(config_file)] if config_file else []
    frame = pd.read_csv(PENGUINS) if rows <= 0 else synthesise(rows)
    data_file = scratch / f"retrain-{config.model.name}-{rows}.csv"
    frame.to_csv(data_file, index=False)
    data_uri = f"{s3_prefix}/data/{data_file.name}"
    open_object_store(f"{s3_prefix}/data").put(data_file.name, data_file.read_bytes())
    floor = Floor(frame, config)
    runs, floors, stages = [], [], []
    for index in range(repeats):
        store_uri = f"{s3_prefix}/store-{config.model.name}-{rows}-{index}"
        with quiet():
            if training_main(["train", "--data", str(PENGUINS), "--store", store_uri, *options]) != 0:
                raise SystemExit("could not train the champion for the retrain benchmark")
        store = ModelStore.from_uri(store_uri)
        context = TrainingRun(
            store=store, data_uri=data_uri, config=config, serving_check=local_self_test(store, "onnx")
        )
        with quiet():
            started = time.perf_counter()
            record = run_training(context, trigger="benchmark", by="benchmarks.retrain")
            runs.append(time.perf_counter() - started)
            started = time.perf_counter()
            floor()
            floors.append(time.perf_counter() - started)
        if record.status != "promoted":
            raise SystemExit(f"the benchmark's retrain run was {record.status}: {record.reason}")
        stages.append(record.stages)
    stage_medians = {name: statistics.median(run[name] for run in stages) for name in stages[0]}
    return statistics.median(runs), statistics.median(floors), stage_medians


def run(rows: int, s3_prefix: str, repeats: int, scratch: Path) -> tuple[list[Row], list[str]]:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    # One BLAS/OpenMP thread on both sides: on a busy 2-core machine a second thread makes the same fit take
    # anywhere from 1x to 3x as long, which would drown the ratio in noise.
    with threadpool_limits(limits=1):
        return _run(rows, s3_prefix, repeats, scratch)


def _run(rows: int, s3_prefix: str, repeats: int, scratch: Path) -> tuple[list[Row], list[str]]:
    table, notes = [], []
    cases = [
        ("logistic regression (training/config.toml)", 0, None, False),
        ("logistic regression (training/config.toml)", rows, None, True),
        ("100-tree forest (benchmarks/random_forest.toml)", rows, FOREST_CONFIG, True),
    ]
    for pipeline, size, config_file, has_target in cases:
        retrain, floor, stages = measure(size, s3_prefix, repeats, scratch, config_file)
        shown = "344 (the sample)" if size <= 0 else f"{size:,}"
        table.append(
            Row(
                "retrain",
                f"{pipeline}, {shown} rows: retrain run end to end",
                seconds(retrain),
                f"fit + score {seconds(floor)}",
                ratio(retrain, floor),
                f"<= {TARGET_RETRAIN}x" if has_target else "",
                verdict(retrain <= TARGET_RETRAIN * floor) if has_target else "",
            )
        )
        stage_list = ", ".join(f"{name} {seconds(value)}" for name, value in stages.items())
        notes.append(f"retrain stages, {pipeline}, {shown} rows: {stage_list}")
    return table, notes
