"""The metrics the alarms and the dashboard read are the ones the handlers write: the same namespace, names and
dimension sets, read from the EMF lines the real handlers print (retrain twice, then predict) and compared with the
template's alarms and dashboard. A metric the template reads with other dimensions would stay empty in CloudWatch,
and its alarm would never fire."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.metrics.provider import cold_start

from sklambda import metric_names
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from tests.template.conftest import transformed_template

pytestmark = pytest.mark.integration


def emf_metrics(output: str) -> dict[str, tuple[str, frozenset[str], dict[str, Any]]]:
    """metric name -> (namespace, dimension names, the blob) for every EMF line printed."""
    found = {}
    for line in output.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            (dimensions,) = directive["Dimensions"]  # Powertools writes one dimension set per blob
            for metric in directive["Metrics"]:
                found[metric["Name"]] = (directive["Namespace"], frozenset(dimensions), blob)
    return found


def template_metrics(cfn: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Sklambda metric name -> the dimension names the alarms and the dashboard read it with."""
    read: dict[str, frozenset[str]] = {}
    for resource in cfn["Resources"].values():
        properties = resource["Properties"]
        if resource["Type"] == "AWS::CloudWatch::Alarm" and properties.get("Namespace") == "Sklambda":
            read[properties["MetricName"]] = frozenset(d["Name"] for d in properties["Dimensions"])
        if resource["Type"] == "AWS::CloudWatch::Dashboard":
            body = json.loads(re.sub(r"\$\{[^}]+\}", "x", properties["DashboardBody"]["Fn::Sub"]))
            for widget in body["widgets"]:
                for row in widget["properties"].get("metrics", []):
                    if row[0] == "Sklambda":
                        names = [item for item in row[2:] if isinstance(item, str)][0::2]
                        read[row[1]] = frozenset(names)
    return read


def test_handlers_write_the_metrics_the_template_reads(
    s3_bucket: str,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the functions as the template configures them: namespace Sklambda, the stack name as service
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Sklambda")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "sklambda")
    boto3.client("s3").upload_file(str(PENGUINS_CSV), s3_bucket, "data/penguins.csv")
    environment = {
        "MODEL_STORE_URI": f"s3://{s3_bucket}/models",
        "MODEL_NAME": "penguins",
        "DATA_URI": f"s3://{s3_bucket}/data/",
    }
    retrain = fresh_handler("functions.retrain.app", **environment)
    monkeypatch.setattr(retrain, "CODE_VERSION", None)  # unknown code: the second run trains (not "nothing new")
    capsys.readouterr()
    # When retrain runs twice (a first version, then a challenger) and predict answers a request
    for _ in range(2):
        retrain.lambda_handler(load_event("retrain-schedule"), lambda_context)
    predict = fresh_handler("functions.predict.app", **environment)
    # A cold start, as in Lambda (Powertools counts one per process; earlier tests may have taken it)
    monkeypatch.setattr(cold_start, "is_cold_start", True)
    predict.lambda_handler(load_event("predict"), lambda_context)
    emitted = emf_metrics(capsys.readouterr().out)

    # Then the metrics the dashboard and alarms need were written, in namespace Sklambda, with service=sklambda
    expected = {
        "RetrainPromoted",
        "RetrainSeconds",
        "ChampionScore",
        "ChallengerScore",
        "ModelLoaded",
        "ModelVersion",
        "Latency",
        "RowsPredicted",
        "ColdStart",
    }
    assert expected <= set(emitted), expected - set(emitted)
    assert any(name.startswith("Predicted_") for name in emitted)
    for name, (namespace, _, blob) in emitted.items():
        assert (namespace, blob["service"]) == ("Sklambda", "sklambda"), name
    # And each one the template reads, it reads with the dimensions written (else CloudWatch shows nothing)
    read = template_metrics(transformed_template())
    assert expected <= set(read)
    for name, dimensions in read.items():
        if name in emitted:
            assert emitted[name][1] == dimensions, (name, emitted[name][1], dimensions)


def test_every_metric_the_template_reads_is_a_named_constant() -> None:
    # Given the names the handlers write through (sklambda.metric_names) and the template's alarms and dashboard
    read = template_metrics(transformed_template())
    # Then every metric the template reads in our namespace is one of them (a renamed constant, or a typo in the
    # template, fails here rather than leaving an alarm that never fires)
    assert set(read) <= metric_names.FIXED, set(read) - metric_names.FIXED
    # And the families are spelled as the template's error and outcome widgets expect
    assert metric_names.error_kind("ContractViolation") == "ErrorContractViolation"
    assert metric_names.retrain_outcome("promoted") == "RetrainPromoted"
    assert metric_names.predicted_class("Adélie penguin") == "Predicted_Ad_lie_penguin"
