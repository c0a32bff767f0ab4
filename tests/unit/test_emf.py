"""sklambda.emf.FastEMFProvider writes what Powertools' own CloudWatch EMF provider writes, and refuses what it
refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricResolution, MetricUnit
from aws_lambda_powertools.metrics.exceptions import MetricUnitError, MetricValueError
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from sklambda.emf import FastEMFProvider

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Test")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "test")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)


def documents(make: Callable[[], AmazonCloudWatchEMFProvider], calls: Callable[[Any], None], capsys: Any) -> list[Any]:
    """The EMF documents a provider prints for the same calls, timestamps removed."""
    provider = make()
    calls(provider)
    found = []
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        document["_aws"].pop("Timestamp")
        found.append(document)
    return found


def requests(provider: Any) -> None:
    for rows in (1, 3, 1000):
        provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=0.25 * rows)
        provider.add_metric(name="RowsPredicted", unit=MetricUnit.Count, value=rows)
        provider.add_metric(name=" Padded ", unit="Count", value=True)
        provider.add_metric(name="Fast", unit="Seconds", value=1.5, resolution=MetricResolution.High)
        provider.add_dimension(name="function_name", value="predict")
        provider.add_metadata(key="request_id", value=f"r{rows}")
        provider.flush_metrics()


def many_values(provider: Any) -> None:
    for index in range(250):  # Powertools writes a document every 100 values of one metric
        provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=index)
    provider.flush_metrics()


def many_metrics(provider: Any) -> None:
    for index in range(150):  # and every 100 metrics
        provider.add_metric(name=f"Metric{index}", unit=MetricUnit.Count, value=index)
    provider.flush_metrics()


def default_dimensions(provider: Any) -> None:
    # Default dimensions come back after every flush; a second dimension set lasts one flush
    provider.set_default_dimensions(environment="prod", tier=2)
    requests(provider)
    provider.add_dimensions(route="predict")
    provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=1.0)
    provider.flush_metrics()
    provider.set_default_dimensions(region="eu-west-1")
    requests(provider)


def changing_units(provider: Any) -> None:
    # One name with another unit or resolution, a unit as its enum and as its string, in one set and across sets
    for _ in range(2):
        provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=1.0)
        provider.add_metric(name="Latency", unit=MetricUnit.Seconds, value=2.0)
        provider.add_metric(name="Latency", unit="Seconds", value=3.0)
        provider.add_metric(name="Rows", unit="Count", value=1)
        provider.flush_metrics()
        provider.add_metric(name="Rows", unit=MetricUnit.Count, value=2, resolution=MetricResolution.High)
        provider.add_metric(name="Rows", unit=MetricUnit.Count, value=3, resolution=1)
        provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=4)
        provider.flush_metrics()


def cold_start(provider: Any) -> None:
    # The handler's decorator: the cold-start metric (a document of its own) on the first call only
    class Context:
        function_name = "predict"

    def handler(event: Any, context: Any) -> None:
        provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=event)

    decorated = provider.log_metrics(handler, capture_cold_start_metric=True)
    from aws_lambda_powertools.metrics.provider import cold_start as flag

    flag.is_cold_start = True
    for event in (1.0, 2.0, 3.0):
        decorated(event, Context())


@pytest.mark.parametrize("calls", [requests, many_values, many_metrics, default_dimensions, changing_units, cold_start])
def test_the_same_documents_as_powertools(calls: Callable[[Any], None], capsys: pytest.CaptureFixture[str]) -> None:
    # Given the same calls on Powertools' provider and on ours
    expected = documents(AmazonCloudWatchEMFProvider, calls, capsys)
    # When ours writes its documents
    found = documents(FastEMFProvider, calls, capsys)
    # Then they are the same
    assert found == expected
    assert len(found) > 1


def test_invalid_metrics_are_refused_as_powertools_refuses_them() -> None:
    # Given a provider that has validated a metric once
    provider = FastEMFProvider()
    provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=1.0)
    # When the same metric comes with a value that is not a number, or a new one with an unknown unit
    # Then both are refused
    with pytest.raises(MetricValueError):
        provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value="slow")  # type: ignore[arg-type]
    with pytest.raises(MetricUnitError):
        provider.add_metric(name="Size", unit="Parsecs", value=1.0)


def test_disabled_metrics_are_not_written(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Given POWERTOOLS_METRICS_DISABLED when the provider is made
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    provider = FastEMFProvider()
    # When a metric is added and flushed
    provider.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=1.0)
    provider.flush_metrics()
    # Then nothing is written
    assert capsys.readouterr().out == ""
