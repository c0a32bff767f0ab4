"""The pre-traffic check of a predict function rollout: before CodeDeploy sends any traffic to a new version of
the predict function, that version must answer like the one it replaces.

The new version is called the way API Gateway calls it: GET /health must name the champion (so the new code and
its layers import, read the store and load + self-test the model), then POST /predict with the champion's golden
rows (held-out rows stored in its manifest) must answer 200, name that version and give the trained pipeline's
own predictions. With no champion yet (a stack deployed before any training), /health answering is enough.
A failed check makes CodeDeploy stop the rollout before a single client request reaches the new version; the
canary's alarms catch what only real traffic shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sklambda.errors import SklambdaError
from sklambda.serving import REGRESSION_ATOL, REGRESSION_RTOL
from sklambda.store import ModelStore

Invoke = Callable[[dict[str, Any]], dict[str, Any]]

# Rows sent to POST /predict: enough to cover the golden sample's classes, few enough to stay a smoke test.
MAX_ROWS = 50


@dataclass(frozen=True)
class RolloutVerdict:
    passed: bool
    reason: str
    # What was checked, in order, for the log and the hook's result.
    checks: list[str] = field(default_factory=list)


def api_event(method: str, path: str, body: dict[str, Any] | None, request_id: str) -> dict[str, Any]:
    """An API Gateway (REST, proxy integration) event as the predict function receives it."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "User-Agent": "sklambda-pretraffic-check"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"requestId": request_id, "resourcePath": path, "httpMethod": method, "stage": "live"},
        "body": None if body is None else orjson.dumps(body).decode(),
        "isBase64Encoded": False,
    }


def check_new_version(invoke: Invoke, store: ModelStore, name: str, alias: str, request_id: str) -> RolloutVerdict:
    """Call the new version through `invoke` (a Lambda invocation of that version) and judge its answers."""
    checks: list[str] = []
    try:
        champion = store.alias(name, alias)
        health = _reply(invoke(api_event("GET", "/health", None, f"{request_id}-health")), "GET /health")
    except (SklambdaError, ValueError) as error:
        return RolloutVerdict(False, str(error), checks)
    served = health.get("model") or {}
    if champion is None or champion.record.version is None:
        checks.append(f"GET /health answered ({health.get('status')}); {name} has no {alias!r} version yet")
        return RolloutVerdict(True, "no model to serve yet: the new version answers /health", checks)
    version = champion.record.version
    if served.get("version") != version:
        problem = health.get("problem") or "no problem reported"
        return RolloutVerdict(
            False, f"GET /health: the new version does not serve {name} v{version} ({problem})", checks
        )
    checks.append(f"GET /health: serves {name} v{version} ({served.get('runtime')})")
    try:
        golden = store.manifest(name, version).golden
        rows = golden.instances[:MAX_ROWS]
        event = api_event("POST", "/predict", {"instances": rows}, f"{request_id}-predict")
        reply = _reply(invoke(event), "POST /predict")
    except (SklambdaError, ValueError) as error:
        return RolloutVerdict(False, str(error), checks)
    answered = (reply.get("model") or {}).get("version")
    if answered != version:
        return RolloutVerdict(False, f"POST /predict was answered by v{answered}, not v{version}", checks)
    mismatch = _first_mismatch(reply.get("predictions"), golden.predictions[: len(rows)])
    if mismatch is not None:
        return RolloutVerdict(False, f"POST /predict with v{version}'s golden rows: {mismatch}", checks)
    checks.append(f"POST /predict: {len(rows)} golden rows give the trained pipeline's predictions")
    return RolloutVerdict(True, f"the new version serves {name} v{version} as trained", checks)


def _reply(result: dict[str, Any], call: str) -> dict[str, Any]:
    """The JSON body of a 200 proxy reply; ValueError naming the call otherwise."""
    status = result.get("statusCode")
    body = result.get("body") or ""
    if status != 200:
        raise ValueError(f"{call} answered {status}: {str(body)[:300]}")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"{call} answered a body that is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{call} answered {type(parsed).__name__}, expected an object")
    return parsed


def _first_mismatch(predictions: Any, expected: list[Any]) -> str | None:
    if not isinstance(predictions, list) or len(predictions) != len(expected):
        return f"expected {len(expected)} predictions, got {str(predictions)[:200]}"
    for row, (got, want) in enumerate(zip(predictions, expected, strict=True)):
        if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
            if math.isclose(got, want, rel_tol=REGRESSION_RTOL, abs_tol=REGRESSION_ATOL):
                continue
        elif got == want:
            continue
        return f"row {row}: predicted {got!r}, trained pipeline {want!r}"
    return None
