"""The store's signed S3 GET (sklambda.aws.signed_get) with Lambda's credentials from the environment: signed
exactly as botocore signs with its own credentials object, session token included."""

from __future__ import annotations

import datetime
from typing import Any

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sklambda import aws

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 12, 3, 12, 0, 0)


def test_environment_credentials_sign_as_botocore_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Lambda's environment (keys and a session token) and a fixed clock
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    sent: list[Any] = []

    def answer(request: Any, deadline: float) -> aws.HttpReply:
        sent.append(request)
        return aws.HttpReply(200, {}, b"bytes")

    monkeypatch.setattr(aws, "transport", answer)
    # When the store reads an object conditionally
    reply = aws.signed_get("models-bucket", "models/penguins/aliases/champion.json", {"If-None-Match": '"abc"'})
    # Then the request carries the session token and the very signature botocore makes with its own credentials
    assert reply.body == b"bytes"
    (request,) = sent
    expected = AWSRequest(method="GET", url=request.url, headers={"If-None-Match": '"abc"'})
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret", "session-token"), "s3", "eu-west-1").add_auth(expected)
    assert request.headers["X-Amz-Security-Token"] == "session-token"
    assert request.headers["Authorization"] == expected.headers["Authorization"]
    assert "Credential=AKIDEXAMPLE/20261203/eu-west-1/s3/aws4_request" in request.headers["Authorization"]


def test_without_a_session_token_no_token_header_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given long-lived keys only (CI, a laptop's environment)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    sent: list[Any] = []

    def answer(request: Any, deadline: float) -> aws.HttpReply:
        sent.append(request)
        return aws.HttpReply(404, {}, b"")

    monkeypatch.setattr(aws, "transport", answer)
    # When the store reads an object
    aws.signed_get("models-bucket", "models/key")
    # Then the request is signed, without a token header
    assert "Credential=AKIDEXAMPLE/" in sent[0].headers["Authorization"]
    assert "X-Amz-Security-Token" not in sent[0].headers
