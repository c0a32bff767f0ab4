"""Powertools Metrics for a hot path: the same CloudWatch EMF documents as Powertools' own provider writes, for
less time per request. `Metrics(provider=FastEMFProvider())` in a handler; nothing else changes.

Why a subclass: in the predict handler, Powertools' AmazonCloudWatchEMFProvider was a large share of the time the
handler may add to a single-row prediction (benchmarks/serving.py measures it): every `add_metric` formats a debug
message with the metric's values whether or not debug logging is on and checks the unit against the list of
units, and every flush goes through stdlib json, then print. This keeps Powertools' validation for the
first use of each (name, unit, resolution) and for any value that is not a plain int or float, its document
(serialize_metric_set), its limits (a metric set is written out at MAX_METRICS) and its flush semantics
(POWERTOOLS_METRICS_DISABLED, the empty-set warning, clearing after a flush). What changes: a metric already
validated is appended without validating it again, the document is written with orjson (the same JSON, compact,
as Powertools writes it), and POWERTOOLS_METRICS_DISABLED is read once, when the provider is made.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

import orjson
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

_PLAIN_NUMBERS = (int, float)


class FastEMFProvider(AmazonCloudWatchEMFProvider):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # (name, unit, resolution) as passed -> (Unit, StorageResolution) as Powertools validated and stored them
        self._validated: dict[tuple[str, Any, Any], tuple[str, int]] = {}
        # POWERTOOLS_METRICS_DISABLED / POWERTOOLS_DEV, read once like every other setting (Powertools reads the
        # environment at every flush).
        self._disabled = is_metrics_disabled()

    def add_metric(self, name: str, unit: Any, value: float, resolution: Any = 60) -> None:
        key = (name, unit, resolution)
        known = self._validated.get(key)
        metric = self.metric_set.get(name)
        if (
            known is None
            or type(value) not in _PLAIN_NUMBERS
            # Near a limit: Powertools writes the set out and starts a new one.
            or len(self.metric_set) >= MAX_METRICS - 1
            or (metric is not None and len(metric["Value"]) >= MAX_METRICS - 1)
        ):
            super().add_metric(name=name, unit=unit, value=value, resolution=resolution)
            stored = self.metric_set.get(name)
            if stored is not None:  # `name` had no surrounding spaces: the next call can find it as it is
                self._validated[key] = (stored["Unit"], stored["StorageResolution"])
            return
        if metric is None:
            metric = self.metric_set[name] = defaultdict(list)
        metric["Unit"], metric["StorageResolution"] = known
        metric["Value"].append(float(value))

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if not self.metric_set or self._disabled:
            super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)
            return
        document = self.serialize_metric_set()
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        self.clear_metrics()


def fast_metrics() -> Metrics:
    """Powertools Metrics (namespace and service from POWERTOOLS_* as usual, the process-wide metric set that
    every Metrics instance shares) writing through FastEMFProvider."""
    shared = Metrics()
    return Metrics(
        provider=FastEMFProvider(
            metric_set=shared.metric_set,
            dimension_set=shared.dimension_set,
            metadata_set=shared.metadata_set,
            default_dimensions=shared.default_dimensions,
        )
    )
