"""Monitor function, on a schedule: drift of the serving version's captured traffic against its training baseline,
its live metric on the labelled rows, labelled captures written as training data, a monitoring record in the store
(sklambda/monitor.py does the work), and metrics for the alarms and the dashboard.

With RETRAIN_FUNCTION_NAME set (the template's RetrainOnMonitorAlarm parameter), drift or a quality drop starts a
retrain run: an asynchronous invocation of the retrain function with the reason, which takes the run lock like
any other trigger (a run in progress makes it a recorded skip).
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sklambda import metric_names
from sklambda.locations import open_object_store
from sklambda.monitor import MonitorConfig, MonitoringRecord, run_monitor
from sklambda.settings import MonitorSettings
from sklambda.store import ModelStore

logger = Logger()
metrics = Metrics()
warnings.filterwarnings("ignore", message="No application metrics to publish")
settings = MonitorSettings.from_env()
store = ModelStore.from_uri(settings.model_store_uri)
config = MonitorConfig(
    window_days=settings.monitor_window_days,
    lookback_days=settings.feedback_lookback_days,
    psi_threshold=settings.psi_threshold,
    live_metric_max_drop=settings.live_metric_max_drop,
    min_labels=settings.min_labels,
)


def _record_metrics(record: MonitoringRecord) -> None:
    metrics.add_metric(name=metric_names.MONITOR_ROWS, unit=MetricUnit.Count, value=record.captured_rows)
    metrics.add_metric(name=metric_names.MONITOR_LABELS, unit=MetricUnit.Count, value=record.labels_matched)
    metrics.add_metric(name=metric_names.MONITOR_UNMATCHED_LABELS, unit=MetricUnit.Count, value=record.unmatched_labels)
    metrics.add_metric(
        name=metric_names.MONITOR_LABELLED_ROWS_WRITTEN, unit=MetricUnit.Count, value=record.labelled_rows_written
    )
    if record.drift is not None and record.drift.rows:
        metrics.add_metric(name=metric_names.DRIFT_MAX_PSI, unit=MetricUnit.NoUnit, value=record.drift.max_psi)
        metrics.add_metric(name=metric_names.DRIFTED_COLUMNS, unit=MetricUnit.Count, value=len(record.drifted_columns))
        for column, drift in record.drift.columns.items():
            metrics.add_metric(name=metric_names.column_psi(column), unit=MetricUnit.NoUnit, value=drift.psi)
        if record.drift.output_psi is not None:
            metrics.add_metric(name=metric_names.OUTPUT_PSI, unit=MetricUnit.NoUnit, value=record.drift.output_psi)
    quality = record.quality
    if quality is not None and quality.labels >= record.min_labels:
        metrics.add_metric(name=metric_names.LIVE_METRIC, unit=MetricUnit.NoUnit, value=quality.live)
        if quality.held_out is not None:
            metrics.add_metric(name=metric_names.HELD_OUT_METRIC, unit=MetricUnit.NoUnit, value=quality.held_out)
        if quality.drop is not None:
            metrics.add_metric(name=metric_names.LIVE_METRIC_DROP, unit=MetricUnit.NoUnit, value=quality.drop)


def _start_retrain(record: MonitoringRecord) -> bool:
    if not settings.retrain_function_name or not record.alarms:
        return False
    from sklambda.aws import invoke_event  # boto3 only when a retrain may be started

    reason = "; ".join(record.alarms)[:500]
    invoke_event(settings.retrain_function_name, {"monitor_alarm": {"reason": reason, "version": record.version}})
    metrics.add_metric(name=metric_names.MONITOR_RETRAIN_STARTED, unit=MetricUnit.Count, value=1)
    return True


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    record = run_monitor(
        store,
        open_object_store(settings.capture_uri),
        settings.model_name or "",
        alias=settings.model_alias,
        config=config,
        labelled_data=open_object_store(settings.labelled_data_uri) if settings.labelled_data_uri else None,
        today=datetime.now(UTC).date(),
    )
    _record_metrics(record)
    retrain = _start_retrain(record)
    # Aggregates only: no captured value reaches the log.
    logger.info(
        "monitor run",
        extra={
            "version": record.version,
            "rows": record.captured_rows,
            "drifted_columns": record.drifted_columns,
            "labels": record.labels_matched,
            "alarms": record.alarms,
            "retrain_started": retrain,
        },
    )
    return {
        "model": {"name": record.model, "version": record.version},
        "rows": record.captured_rows,
        "drifted_columns": record.drifted_columns,
        "max_psi": record.drift.max_psi if record.drift else None,
        "quality": record.quality.model_dump() if record.quality else None,
        "quality_breached": record.quality_breached,
        "labelled_rows_written": record.labelled_rows_written,
        "alarms": record.alarms,
        "retrain_started": retrain,
    }
