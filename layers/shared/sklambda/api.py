"""The prediction API's request and reply shapes, independent of Lambda and Powertools.

Request: `{"instances": [{feature: value, ...}, ...]}`.
Reply: `{"model": {"name", "version"}, "predictions": [...]}` plus, for classifiers, `classes` and
per-row `probabilities` (in the order of `classes`).
"""

from __future__ import annotations

from typing import Any

import orjson

from sklambda.contract import Columns, ContractViolation, DataContract, Problem, columns_from_records
from sklambda.errors import RequestError
from sklambda.runtimes import Prediction
from sklambda.serving import LoadedModel, labels_to_json


def parse_json(body: str | bytes | None) -> Any:
    if body is None or body in ("", b""):
        raise RequestError(400, 'the request has no body; send JSON like {"instances": [{...}]}')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        # orjson's message names the position; NaN and Infinity are not JSON and fail here too.
        raise RequestError(400, f"the body is not valid JSON: {error}") from None


def parse_predict_request(body: str | bytes | None, contract: DataContract) -> Columns:
    document = parse_json(body)
    if not isinstance(document, dict) or "instances" not in document:
        raise RequestError(400, 'expected a JSON object with "instances": a list of {feature: value} objects')
    unknown = sorted(set(document) - {"instances"})
    if unknown:
        raise ContractViolation([Problem(field=key[:40], message="unknown top-level field") for key in unknown])
    return columns_from_records(document["instances"], contract)


def predict_reply(model: LoadedModel, prediction: Prediction) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "model": {"name": model.name, "version": model.version},
        "predictions": labels_to_json(prediction.labels),
    }
    if prediction.probabilities is not None:
        reply["classes"] = model.manifest.classes
        reply["probabilities"] = prediction.probabilities
    return reply


def error_reply(error: RequestError | ContractViolation) -> dict[str, Any]:
    body: dict[str, Any] = {"error": str(error)}
    if isinstance(error, ContractViolation):
        body["problems"] = [problem.model_dump(exclude_none=True) for problem in error.problems]
        body["problem_count"] = error.total
    return body
