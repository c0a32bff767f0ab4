"""GET /openapi.json agrees with what the API does: requests the schema accepts pass validation, requests it
rejects are refused, and real replies match the reply schemas (JSON Schema 2020-12, as OpenAPI 3.1 uses)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import LambdaContext, load_event

pytestmark = pytest.mark.unit


@pytest.fixture
def app(fresh_handler: Callable[..., ModuleType], local_store_copy: Path) -> ModuleType:
    return fresh_handler("functions.predict.app", MODEL_STORE_URI=str(local_store_copy), MODEL_NAME="penguins")


EVENTS = {"/predict": "predict", "/health": "health", "/model": "model", "/openapi.json": "openapi"}


def call(app: ModuleType, path: str, body: Any = None) -> tuple[int, Any]:
    event = load_event(EVENTS[path])
    if body is not None:
        event["body"] = json.dumps(body)
    response = app.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def schema_of(spec: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one of the spec's schemas, its #/components/... references resolved in the spec."""
    resource: Resource[Any] = DRAFT202012.create_resource(spec)
    registry: Registry[Any] = Registry().with_resource("urn:spec", resource)
    return Draft202012Validator({"$ref": f"urn:spec#/components/schemas/{name}"}, registry=registry)


ROW = {
    "island": "Biscoe",
    "bill_length_mm": 48.6,
    "bill_depth_mm": 16.0,
    "flipper_length_mm": 230,
    "body_mass_g": 5800,
    "sex": None,
    "year": 2009,
}
COLUMNS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year", "island", "sex"]
VALID = [
    {"instances": [ROW]},
    {"dataframe_records": [ROW, ROW], "params": {"probabilities": False}},
    {"dataframe_split": {"columns": COLUMNS, "data": [[ROW[name] for name in COLUMNS]], "index": [0]}},
    {"instances": [ROW | {"year": 1e18, "body_mass_g": -1e18}]},
]
INVALID = [
    {"instances": [ROW], "dataframe_records": [ROW]},
    {"instances": []},
    {"instances": [ROW | {"island": "Atlantis"}]},
    {"instances": [ROW | {"year": "2009"}]},
    {"instances": [ROW | {"year": True}]},
    {"instances": [ROW | {"year": None}]},
    {"instances": [ROW | {"year": 1.1e18}]},
    {"instances": [ROW | {"colour": "red"}]},
    {"instances": [{key: value for key, value in ROW.items() if key != "sex"}]},
    {"instances": [ROW], "params": {"top_k": 1}},
    {"instances": [ROW], "params": None},
    {"dataframe_split": {"columns": COLUMNS, "data": [[ROW[name] for name in COLUMNS]], "rows": 1}},
    {"rows": [ROW]},
    [ROW],
]


def test_requests_the_schema_accepts_are_answered_and_those_it_rejects_are_refused(app: ModuleType) -> None:
    # Given the spec the function serves for the sample model
    status, spec = call(app, "/openapi.json")
    assert status == 200
    request_schema = schema_of(spec, "PredictRequest")
    reply_schema = schema_of(spec, "PredictReply")
    # When requests the schema accepts are sent
    for document in VALID:
        assert request_schema.is_valid(document), document
        status, reply = call(app, "/predict", document)
        # Then each is answered, with a reply its schema describes
        assert status == 200, (document, reply)
        reply_schema.validate(reply)
    # And when requests the schema rejects are sent, each is refused with a documented 4xx whose body fits
    documented = spec["paths"]["/predict"]["post"]["responses"]
    for document in INVALID:
        assert not request_schema.is_valid(document), document
        status, reply = call(app, "/predict", document)
        assert status in (400, 413, 422), (document, reply)
        schema = documented[str(status)]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        schema_of(spec, schema).validate(reply)


def test_health_and_model_replies_match_their_schemas(app: ModuleType) -> None:
    _, spec = call(app, "/openapi.json")
    schema_of(spec, "Health").validate(call(app, "/health")[1])
    schema_of(spec, "ModelDescription").validate(call(app, "/model")[1])


def test_the_spec_is_an_openapi_31_document(app: ModuleType) -> None:
    # Given the served spec
    _, spec = call(app, "/openapi.json")
    # Then every schema in it is valid JSON Schema 2020-12, and every route of the template is described
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert spec["openapi"] == "3.1.0"
    assert set(spec["paths"]) == {"/predict", "/health", "/model", "/openapi.json"}
