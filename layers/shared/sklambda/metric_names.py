"""The metrics the functions write (namespace POWERTOOLS_METRICS_NAMESPACE, dimension `service`), by name: the
template's alarms and dashboard read these names (tests/integration/test_metrics_contract.py checks both sides)."""

from __future__ import annotations

import re
from typing import Final

# predict
LATENCY: Final = "Latency"  # handler time of a successful POST /predict, ms
ROWS_PREDICTED: Final = "RowsPredicted"
MODEL_VERSION: Final = "ModelVersion"  # a gauge: the version serving
ERRORS: Final = "Errors"  # every refused or failed request, next to Error<kind> (error_kind)
# the model cache (sklambda.serving.ModelCache events)
MODEL_LOADED: Final = "ModelLoaded"
MODEL_LOAD_REFUSED: Final = "ModelLoadRefused"
STORE_UNAVAILABLE: Final = "StoreUnavailable"
SERVING_LAST_GOOD_MODEL: Final = "ServingLastGoodModel"
# admin
ALIAS_PROMOTED: Final = "AliasPromoted"
ALIAS_ROLLED_BACK: Final = "AliasRolledBack"
ADMIN_REFUSED: Final = "AdminRefused"
# promotion guard, pre-traffic hook
MODEL_ROLLED_BACK: Final = "ModelRolledBack"
ROLLOUT_CHECK_FAILED: Final = "RolloutCheckFailed"
# retrain (one Retrain<Status> per finished run: retrain_outcome)
RETRAIN_SECONDS: Final = "RetrainSeconds"
RETRAIN_SKIPPED: Final = "RetrainSkipped"
# runs handed to SageMaker Training (training/engines.py) and runs a job finished (training/sagemaker_job.py)
RETRAIN_HANDED_OVER: Final = "RetrainHandedOver"
RETRAIN_JOB_RUNS: Final = "RetrainJobRuns"
RETRAIN_STATUSES: Final = ("promoted", "rejected", "failed")
CHAMPION_SCORE: Final = "ChampionScore"
CHALLENGER_SCORE: Final = "ChallengerScore"
# capture (predict), feedback, monitor (docs/monitoring.md)
CAPTURE_DROPPED: Final = "CaptureDropped"  # capture records Firehose refused or that failed to send
FEEDBACK_LABELS: Final = "FeedbackLabels"
FEEDBACK_REFUSED: Final = "FeedbackRefused"
MONITOR_ROWS: Final = "MonitorRows"
MONITOR_LABELS: Final = "MonitorLabels"
MONITOR_UNMATCHED_LABELS: Final = "MonitorUnmatchedLabels"
MONITOR_LABELLED_ROWS_WRITTEN: Final = "MonitorLabelledRowsWritten"
MONITOR_RETRAIN_STARTED: Final = "MonitorRetrainStarted"
DRIFT_MAX_PSI: Final = "DriftMaxPsi"
DRIFTED_COLUMNS: Final = "DriftedColumns"
OUTPUT_PSI: Final = "OutputPsi"
LIVE_METRIC: Final = "LiveMetric"
HELD_OUT_METRIC: Final = "HeldOutMetric"
LIVE_METRIC_DROP: Final = "LiveMetricDrop"
# Powertools' own (capture_cold_start_metric)
COLD_START: Final = "ColdStart"


def error_kind(kind: str) -> str:
    return f"Error{kind}"


def retrain_outcome(status: str) -> str:
    return f"Retrain{status.capitalize()}"


def column_psi(column: str) -> str:
    # One drift metric per input column, printable and short whatever the column names are.
    return "Psi_" + re.sub(r"[^A-Za-z0-9_.-]", "_", column)[:200]


def predicted_class(label: object) -> str:
    # CloudWatch metric names: keep them printable and short whatever the class labels are.
    return "Predicted_" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(label))[:200]


# Every fixed name (error_kind and predicted_class make open-ended families).
FIXED: Final = frozenset(
    {value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str)}
    | {retrain_outcome(status) for status in RETRAIN_STATUSES}
)
