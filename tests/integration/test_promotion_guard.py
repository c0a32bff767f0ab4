"""A promotion followed by a (simulated) alarm rolls the alias back: the guard function in-process, S3, EventBridge,
SQS and SNS under moto, driven by events/alarm-state-change.json through the template's own rule pattern; predict
then serves the previous version again, the alias history records why, and the alarm topic hears of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest

from sklambda.guard import parse_time
from sklambda.store import ModelStore
from tests.conftest import PENGUINS_CSV, LambdaContext, load_event
from tests.template.conftest import guard_event_pattern, transformed_template
from tests.unit.test_store import make_manifest

pytestmark = pytest.mark.integration

# moto's account and region; events/alarm-state-change.json names this account's sklambda-Predict5xx alarm.
ACCOUNT, REGION, STACK = "123456789012", "us-east-1", "sklambda"


def queue(name: str) -> tuple[str, str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def drain(url: str) -> list[dict[str, Any]]:
    messages = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    return [json.loads(message["Body"]) for message in messages.get("Messages", [])]


def send_to_event_bus(event: dict[str, Any]) -> None:
    """What CloudWatch does on an alarm state change: put the event on the default bus."""
    entry = {
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(event["detail"]),
        "Resources": event["resources"],
    }
    assert boto3.client("events", region_name=REGION).put_events(Entries=[entry])["FailedEntryCount"] == 0


def test_alarm_after_promotion_rolls_back_and_predict_serves_the_previous_version(
    s3_bucket: str,
    fresh_handler: Callable[..., ModuleType],
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given v1 then v2 trained and promoted by the retrain function, and v2 being served
    boto3.client("s3").upload_file(str(PENGUINS_CSV), s3_bucket, "data/penguins.csv")
    # And the template's guard rule on the event bus, delivering to a queue (moto runs no Lambda code: the test
    # hands what the rule delivers to the guard handler), and the alarm topic with a queue subscribed to it
    rule_target_url, rule_target_arn = queue("guard-rule-target")
    events = boto3.client("events", region_name=REGION)
    pattern = guard_event_pattern(transformed_template(), stack=STACK, account=ACCOUNT, region=REGION)
    events.put_rule(Name="guard", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="guard", Targets=[{"Id": "guard", "Arn": rule_target_arn}])
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="alarms")["TopicArn"]
    topic_queue_url, topic_queue_arn = queue("alarm-topic-subscriber")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=topic_queue_arn, Attributes={"RawMessageDelivery": "true"})
    environment = {
        "MODEL_STORE_URI": f"s3://{s3_bucket}/models",
        "MODEL_NAME": "penguins",
        "DATA_URI": f"s3://{s3_bucket}/data/",
        "ALIAS_REFRESH_SECONDS": "0",
        "PROMOTION_WATCH_SECONDS": "900",
        "ALARM_TOPIC_ARN": topic,
    }
    retrain = fresh_handler("functions.retrain.app", **environment)
    monkeypatch.setattr(retrain, "CODE_VERSION", None)  # unknown code: the second run trains (not "nothing new")
    predict = fresh_handler("functions.predict.app", **environment)
    guard = fresh_handler("functions.guard.app", **environment)
    for _ in range(2):
        retrain.lambda_handler(load_event("retrain-schedule"), lambda_context)
    assert json.loads(predict.lambda_handler(load_event("predict"), lambda_context)["body"])["model"]["version"] == 2

    # When the 5xx alarm goes to ALARM two minutes after the promotion, next to changes the guard must not hear:
    # the same alarm going back to OK, and an alarm of another stack
    store = ModelStore.from_uri(f"s3://{s3_bucket}/models")
    state = store.alias("penguins", "champion")
    assert state is not None
    fired = parse_time(state.record.history[-1].at) + timedelta(minutes=2)
    alarm = load_event("alarm-state-change")
    alarm["detail"]["state"]["timestamp"] = fired.isoformat()
    back_to_ok = json.loads(json.dumps(alarm))
    back_to_ok["detail"]["state"]["value"] = "OK"
    other_stack = json.loads(json.dumps(alarm))
    other_stack["resources"] = [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:other-Predict5xx"]
    for event in (back_to_ok, other_stack, alarm):
        send_to_event_bus(event)
    delivered = drain(rule_target_url)

    # Then the rule delivers exactly the serving alarm going to ALARM
    assert [(event["resources"], event["detail"]["state"]["value"]) for event in delivered] == [
        (alarm["resources"], "ALARM")
    ]
    # And the guard, given what the rule delivered, rolls the alias back to v1 and records why
    result = guard.lambda_handler(delivered[0], lambda_context)
    assert (result["rolled_back"], result["from_version"], result["to_version"]) == (True, 2, 1)
    state = store.alias("penguins", "champion")
    assert state is not None
    assert state.record.version == 1
    move = state.record.history[-1]
    assert (move.kind, move.by) == ("rollback", "promotion guard (alarm sklambda-Predict5xx)")
    assert move.reason == "alarm sklambda-Predict5xx fired 120 s after v2 was promoted (watch 900 s)"
    # And predict answers with v1 again
    assert json.loads(predict.lambda_handler(load_event("predict"), lambda_context)["body"])["model"]["version"] == 1
    # And the alarm topic heard of the rollback, next to the alarm
    (announcement,) = drain(topic_queue_url)
    assert announcement == {
        "model": "penguins",
        "alias": "champion",
        "from_version": 2,
        "to_version": 1,
        "alarm": "sklambda-Predict5xx",
        "reason": move.reason,
    }


def test_a_lost_announcement_does_not_undo_the_rollback(
    s3_bucket: str, fresh_handler: Callable[..., ModuleType], lambda_context: LambdaContext
) -> None:
    # Given v2 promoted over v1 a minute before the alarm, and an alarm topic that does not exist (SNS refuses)
    store = ModelStore.from_uri(f"s3://{s3_bucket}/models")
    for _ in range(2):
        store.publish(make_manifest("penguins"), {"model.bin": b"m"})
    store.promote("penguins", 1, by="tester", reason="first")
    store.promote("penguins", 2, by="tester", reason="better")
    guard = fresh_handler(
        "functions.guard.app",
        MODEL_STORE_URI=f"s3://{s3_bucket}/models",
        MODEL_NAME="penguins",
        ALARM_TOPIC_ARN=f"arn:aws:sns:{REGION}:{ACCOUNT}:no-such-topic",
    )
    state = store.alias("penguins", "champion")
    assert state is not None
    alarm = load_event("alarm-state-change")
    alarm["detail"]["state"]["timestamp"] = (parse_time(state.record.history[-1].at) + timedelta(minutes=1)).isoformat()
    # When the guard handles the alarm
    result = guard.lambda_handler(alarm, lambda_context)
    # Then the rollback stands (the alias history has it), and the invocation does not fail for the lost message
    assert (result["rolled_back"], result["to_version"]) == (True, 1)
    state = store.alias("penguins", "champion")
    assert state is not None
    assert (state.record.version, state.record.history[-1].kind) == (1, "rollback")


def test_an_alarm_returning_to_ok_is_ignored(
    s3_bucket: str, fresh_handler: Callable[..., ModuleType], lambda_context: LambdaContext
) -> None:
    guard = fresh_handler("functions.guard.app", MODEL_STORE_URI=f"s3://{s3_bucket}/models", MODEL_NAME="penguins")
    event = load_event("alarm-state-change")
    event["detail"]["state"]["value"] = "OK"
    assert guard.lambda_handler(event, lambda_context) == {
        "rolled_back": False,
        "reason": "ignored: not an alarm going to ALARM (OK)",
    }
