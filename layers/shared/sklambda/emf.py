"""Powertools Metrics for a hot path: the same CloudWatch EMF documents as Powertools' own provider writes, for
less time per request. `Metrics(provider=FastEMFProvider())` in a handler; nothing else changes.

Why a subclass: in the predict handler, Powertools' AmazonCloudWatchEMFProvider was a large share of the time the
handler may add to a single-row prediction (benchmarks/serving.py measures it): every `add_metric` formats a debug
message with the metric's values whether or not debug logging is on and checks the unit against the list of
units, and every flush builds its document through debug-formatting and dimension-validating calls (the service
dimension is re-added and validated at every flush, the default dimensions at every clear), then stdlib json,
then print. This keeps Powertools' validation for the
first use of each (name, unit, resolution) and for any value that is not a plain int or float, its document
(serialize_metric_set), its limits (a metric set is written out at MAX_METRICS) and its flush semantics
(POWERTOOLS_METRICS_DISABLED, the empty-set warning, clearing after a flush). What changes: a metric already
validated is appended without validating it again; the document of the usual flush (no explicit arguments, at
least one metric, a namespace) is built in one step from the sets as they are, the service and default dimensions
copied as Powertools validated them the first time; it is written with one write of orjson's text (the same JSON,
compact, as Powertools writes it); and POWERTOOLS_METRICS_DISABLED is read once, when the provider is made.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_DIMENSIONS, MAX_METRICS

_PLAIN_NUMBERS = (int, float)


class FastEMFProvider(AmazonCloudWatchEMFProvider):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # name -> (unit, resolution) as last passed, (Unit, StorageResolution) as Powertools validated and stored
        # them. Keyed by the name alone: a tuple key with a MetricUnit in it is hashed by Enum.__hash__, a Python
        # call, at every add_metric.
        self._validated: dict[str, tuple[Any, Any, tuple[str, int]]] = {}
        # POWERTOOLS_METRICS_DISABLED / POWERTOOLS_DEV, read once like every other setting (Powertools reads the
        # environment at every flush).
        self._disabled = is_metrics_disabled()
        # The dimension set as Powertools' clear_metrics leaves it (the default dimensions, validated), for the
        # default dimensions it was made from; None until Powertools has made it once.
        self._cleared: tuple[dict[str, Any], dict[str, str]] | None = None

    def add_metric(self, name: str, unit: Any, value: float, resolution: Any = 60) -> None:
        known = self._validated.get(name)
        metric = self.metric_set.get(name)
        if (
            known is None
            or (known[0] is not unit and known[0] != unit)
            or (known[1] is not resolution and known[1] != resolution)
            or type(value) not in _PLAIN_NUMBERS
            # Near a limit: Powertools writes the set out and starts a new one.
            or len(self.metric_set) >= MAX_METRICS - 1
            or (metric is not None and len(metric["Value"]) >= MAX_METRICS - 1)
        ):
            super().add_metric(name=name, unit=unit, value=value, resolution=resolution)
            stored = self.metric_set.get(name)
            if stored is not None:  # `name` had no surrounding spaces: the next call can find it as it is
                self._validated[name] = (unit, resolution, (stored["Unit"], stored["StorageResolution"]))
            return
        unit_name, storage_resolution = known[2]
        if metric is None:  # the entry Powertools makes (its defaultdict(list) costs more to create than a dict)
            self.metric_set[name] = {
                "Unit": unit_name,
                "StorageResolution": storage_resolution,
                "Value": [float(value)],
            }
            return
        metric["Unit"], metric["StorageResolution"] = unit_name, storage_resolution
        metric["Value"].append(float(value))

    def serialize_metric_set(
        self, metrics: dict[str, Any] | None = None, dimensions: dict[str, Any] | None = None, metadata: Any = None
    ) -> Any:
        service = self.service
        add_service = bool(service) and not self.dimension_set.get("service")
        if (
            metrics is not None
            or dimensions is not None
            or metadata is not None
            or not self.metric_set
            or self.namespace is None
            # Where Powertools' add_dimension would refuse or warn: it decides.
            or (add_service and ("service" in self.dimension_set or not self._plain_service()))
        ):
            return super().serialize_metric_set(metrics, dimensions, metadata)
        if add_service:
            self.dimension_set["service"] = service
        definitions = []
        values = {}
        for name, metric in self.metric_set.items():
            definition = {"Name": name, "Unit": metric.get("Unit", "")}
            if metric.get("StorageResolution", 60) == 1:
                definition["StorageResolution"] = 1
            definitions.append(definition)
            values[name] = metric.get("Value", 0)
        dimension_arrays = [list(self.dimension_set)]
        all_dimensions = dict(self.dimension_set)
        for dimension_set in self.dimension_sets:
            all_dimensions.update(dimension_set)
            dimension_arrays.append(list(dimension_set))
        return {
            "_aws": {
                "Timestamp": self.timestamp or int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {"Namespace": self.namespace, "Dimensions": dimension_arrays, "Metrics": definitions}
                ],
            },
            **all_dimensions,
            **self.metadata_set,
            **values,
        }

    def _plain_service(self) -> bool:
        """Whether Powertools' add_dimension would add the service dimension as it is, without a warning."""
        service = self.service
        return isinstance(service, str) and bool(service.strip()) and len(self.dimension_set) < MAX_DIMENSIONS

    def clear_metrics(self) -> None:
        if self._cleared is None or self._cleared[0] != self.default_dimensions:
            super().clear_metrics()
            self._cleared = (dict(self.default_dimensions), dict(self.dimension_set))
            return
        self.metric_set.clear()
        self.dimension_sets.clear()
        self.metadata_set.clear()
        self.dimension_set.clear()
        self.dimension_set.update(self._cleared[1])

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if not self.metric_set or self._disabled:
            super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)
            return
        document = self.serialize_metric_set()
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE).decode())
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
