"""Settings from environment variables (sklambda.settings): read once through msgspec, refused with the variable's
name when wrong, and importable without pydantic (whose import alone was ~130 ms of the predict cold start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import get_args

import msgspec
import pytest

from sklambda import settings
from sklambda.errors import ConfigError
from sklambda.settings import (
    DEFAULT_ALIAS,
    DEFAULT_LOCAL_STORE,
    DEFAULT_MAX_ROWS,
    MAX_BODY_BYTES_CEILING,
    CaptureSettings,
    CliSettings,
    EngineSettings,
    GuardSettings,
    JobSettings,
    MonitorSettings,
    RetrainSettings,
    RolloutCheckSettings,
    ServingSettings,
    StoreSettings,
)
from tests.conftest import REPO

pytestmark = pytest.mark.unit

# Every settings class of the module, so that a new class or field is covered without editing this list.
SETTINGS_CLASSES = [
    value
    for name, value in vars(settings).items()
    if isinstance(value, type)
    and issubclass(value, msgspec.Struct)
    and name.endswith("Settings")
    and value.__module__ == settings.__name__
]


def required_values(settings_type: type[msgspec.Struct]) -> dict[str, str]:
    """A value for each variable the class cannot do without."""
    return {field.name.upper(): "x" for field in msgspec.structs.fields(settings_type) if field.required}


def empty_is_unset_fields() -> list[tuple[type[msgspec.Struct], str]]:
    return [
        (settings_type, field.name)
        for settings_type in SETTINGS_CLASSES
        for field in msgspec.structs.fields(settings_type)
        if settings._UNSET_IF_EMPTY in get_args(field.type)
    ]


def problem(settings_type: type[settings._FromEnv], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        settings_type.from_env(environ)
    return str(raised.value)


def test_unset_variables_take_the_defaults() -> None:
    # Given no variable at all
    # When the predict function's settings are read
    serving = ServingSettings.from_env({})
    # Then every field has the default the module writes once
    assert (serving.model_store_uri, serving.model_name, serving.model_alias) == (
        DEFAULT_LOCAL_STORE,
        None,
        DEFAULT_ALIAS,
    )
    assert (serving.manifest_signing_key, serving.manifest_signatures) == (None, "required")
    assert (serving.serving_runtime, serving.alias_refresh_seconds, serving.allow_unknown_fields) == (
        "onnx",
        30.0,
        None,
    )
    assert (serving.max_body_bytes, serving.max_json_depth, serving.max_rows) == (MAX_BODY_BYTES_CEILING, 10, 5000)
    assert serving.max_rows == DEFAULT_MAX_ROWS
    assert serving.model_details == "full"
    # And the classes with properties answer from their defaults: nothing hands runs over, capture is off
    assert EngineSettings.from_env({}).hands_over is False
    assert CaptureSettings.from_env({}).enabled is False


def test_text_becomes_numbers_and_booleans() -> None:
    # Given variables as the template sets them: always text
    environ = {
        "MAX_ROWS": "250",
        "ALIAS_REFRESH_SECONDS": "2.5",
        "MAX_JSON_DEPTH": " 12 ",  # spaces around a number were accepted before msgspec: still are
        "ALLOW_UNKNOWN_FIELDS": "true",
        "MODEL_DETAILS": "contract",
    }
    # When they are read
    serving = ServingSettings.from_env(environ)
    # Then each field holds its own type
    assert (serving.max_rows, serving.alias_refresh_seconds, serving.max_json_depth) == (250, 2.5, 12)
    assert type(serving.max_rows) is int
    assert type(serving.alias_refresh_seconds) is float
    assert serving.allow_unknown_fields is True
    assert serving.model_details == "contract"


def test_every_empty_is_unset_field_is_found() -> None:
    # Given the fields the module marks "empty means unset" (derived, so a new field is covered below)
    found = {(settings_type.__name__, field) for settings_type, field in empty_is_unset_fields()}
    # Then they include those the template switches off with "" (a marker dropped by mistake fails here)
    assert {
        ("StoreSettings", "manifest_signing_key"),
        ("ServingSettings", "allow_unknown_fields"),
        ("GuardSettings", "alarm_topic_arn"),
        ("RetrainSettings", "training_config"),
        ("RetrainSettings", "retrain_topic_arn"),
        ("RetrainSettings", "predict_function_name"),
        ("JobSettings", "training_config"),
        ("AdminSettings", "predict_function_name"),
        ("CliSettings", "data_uri"),
        ("EngineSettings", "retrain_state_machine_arn"),
        ("EngineSettings", "sagemaker_region"),
        ("CaptureSettings", "capture_stream_name"),
        ("CaptureSettings", "capture_local_folder"),
        ("FeedbackSettings", "capture_uri"),
        ("MonitorSettings", "labelled_data_uri"),
        ("MonitorSettings", "retrain_function_name"),
    } <= found


@pytest.mark.parametrize(
    ("settings_type", "field"), empty_is_unset_fields(), ids=lambda value: getattr(value, "__name__", value)
)
def test_an_empty_variable_means_unset(settings_type: type[settings._FromEnv], field: str) -> None:
    # Given the variable set to "" (how the template and `make serve` switch a feature off)
    environ = {**required_values(settings_type), field.upper(): ""}
    # When the settings are read
    read = settings_type.from_env(environ)
    # Then the field is unset, as if the variable were absent
    assert getattr(read, field) is None
    assert getattr(read, field) == getattr(settings_type.from_env(required_values(settings_type)), field)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(word, True) for word in ("1", "true", "True", "TRUE", "t", "yes", "Yes", "y", "on", "ON")]
    + [(word, False) for word in ("0", "false", "False", "f", "no", "NO", "n", "off", "Off")],
)
def test_the_boolean_words_pydantic_took_still_read(text: str, expected: bool) -> None:
    # Given a boolean variable written as any word pydantic accepted, in any case
    # When it is read, for a plain boolean and for an optional one
    # Then it is that boolean: no deployed configuration breaks
    assert EngineSettings.from_env({"SAGEMAKER_SPOT": text}).sagemaker_spot is expected
    assert ServingSettings.from_env({"ALLOW_UNKNOWN_FIELDS": text}).allow_unknown_fields is expected


@pytest.mark.parametrize("text", ["maybe", "2", "", "yes please"])
def test_other_words_are_not_booleans(text: str) -> None:
    # Given a boolean variable with a word that is none of those ("" is no boolean: SAGEMAKER_SPOT has no unset)
    # Then the refusal names the variable and what it takes
    assert problem(EngineSettings, {"SAGEMAKER_SPOT": text}) == (
        f"invalid configuration: SAGEMAKER_SPOT: expected true or false (or 1/0, yes/no, on/off), got {text!r}"
    )


@pytest.mark.parametrize(
    ("settings_type", "variable", "text", "expected"),
    [
        # Bounds
        (ServingSettings, "MAX_ROWS", "0", "expected `int` >= 1"),
        (ServingSettings, "MAX_BODY_BYTES", "3000001", "expected `int` <= 3000000"),
        (ServingSettings, "MAX_JSON_DEPTH", "3", "expected `int` >= 4"),
        (GuardSettings, "PROMOTION_WATCH_SECONDS", "0", "expected `float` > 0.0"),
        (CaptureSettings, "CAPTURE_SAMPLE_RATE", "1.5", "expected `float` <= 1.0"),
        (EngineSettings, "SAGEMAKER_MAX_RUNTIME_SECONDS", "59", "expected `int` >= 60"),
        # Not a number at all, or not a whole one
        (ServingSettings, "MAX_ROWS", "many", "expected `int`"),
        (ServingSettings, "MAX_ROWS", "2.5", "expected `int`"),
        # NaN and infinities where a bound applies
        (ServingSettings, "ALIAS_REFRESH_SECONDS", "nan", "expected `float` >= 0.0"),
        (GuardSettings, "PROMOTION_WATCH_SECONDS", "NaN", "expected `float` > 0.0"),
        (GuardSettings, "PROMOTION_WATCH_SECONDS", "-inf", "expected `float` > 0.0"),
        (CaptureSettings, "CAPTURE_SAMPLE_RATE", "inf", "expected `float` <= 1.0"),
        (CaptureSettings, "CAPTURE_SAMPLE_RATE", "nan", "expected `float` >= 0.0"),
        # A value the Literal does not list
        (ServingSettings, "MODEL_DETAILS", "everything", "expected one of 'full', 'contract'"),
        (ServingSettings, "SERVING_RUNTIME", "tensorflow", "expected one of 'onnx', 'sklearn'"),
        (EngineSettings, "RETRAIN_ENGINE", "Lambda", "expected one of 'lambda', 'sagemaker', 'auto'"),
        (StoreSettings, "MANIFEST_SIGNATURES", "", "expected one of 'required', 'optional'"),
        # A pattern
        (EngineSettings, "SAGEMAKER_JOB_PREFIX", "my_stack", "expected `str` matching regex '^[a-zA-Z0-9-]+$'"),
        (EngineSettings, "SAGEMAKER_INSTANCE_TYPE", "m5.large", "expected `str` matching regex"),
        # A length
        (EngineSettings, "SAGEMAKER_JOB_PREFIX", "a" * 35, "expected `str` of length <= 34"),
        (StoreSettings, "MODEL_NAME", "", "expected `str` of length >= 1"),
        (RetrainSettings, "DATA_URI", "", "expected `str` of length >= 1"),
    ],
)
def test_a_wrong_value_is_refused_by_its_variables_name(
    settings_type: type[settings._FromEnv], variable: str, text: str, expected: str
) -> None:
    # Given one wrong variable beside valid ones
    environ = {**required_values(settings_type), variable: text}
    # When the settings are read
    message = problem(settings_type, environ)
    # Then the message names the variable, what it takes and what it got
    assert message.startswith(f"invalid configuration: {variable}: {expected}")
    assert message.endswith(f", got {text!r}")


@pytest.mark.parametrize(
    "settings_type",
    [settings_type for settings_type in SETTINGS_CLASSES if required_values(settings_type)],
    ids=lambda settings_type: settings_type.__name__,
)
def test_every_missing_required_variable_is_named(settings_type: type[settings._FromEnv]) -> None:
    # Given none of the variables a class cannot do without
    # When the settings are read
    message = problem(settings_type, {})
    # Then every one of them is named, at once
    assert message == "invalid configuration: " + "; ".join(
        f"{name}: required, not set" for name in required_values(settings_type)
    )


def test_the_required_variables_are_those_the_functions_need() -> None:
    # Then the derived list above covers what the functions and the job cannot start without
    assert set(required_values(RolloutCheckSettings)) == {"PREDICT_VERSION"}
    assert set(required_values(RetrainSettings)) == {"DATA_URI"}
    assert set(required_values(MonitorSettings)) == {"CAPTURE_URI"}
    assert set(required_values(JobSettings)) == {"RUN_ID", "SM_CHANNEL_TRAIN", "SM_MODEL_DIR"}


def test_only_variables_named_after_fields_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the variables of a process: its settings' among many others, one in lower case
    environ = {"MODEL_NAME": "wine", "model_alias": "canary", "PATH": "/usr/bin", "MAX_ROWS": "not for the store"}
    # When the store's settings are read
    store = StoreSettings.from_env(environ)
    # Then only the upper-case names of its own fields count
    assert (store.model_name, store.model_alias) == ("wine", DEFAULT_ALIAS)
    # And without a mapping, the process's environment is read
    monkeypatch.setenv("MODEL_NAME", "penguins")
    assert StoreSettings.from_env().model_name == "penguins"


def test_settings_cannot_change_once_read() -> None:
    # Given settings read once
    serving = ServingSettings.from_env({"MAX_ROWS": "10"})
    # When code tries to change one
    # Then it cannot: a copy with the change is the only way
    with pytest.raises(AttributeError):
        serving.max_rows = 11  # type: ignore[misc]
    changed = msgspec.structs.replace(serving, max_rows=11)
    assert (serving.max_rows, changed.max_rows, type(changed)) == (10, 11, ServingSettings)


def test_subclasses_read_their_bases_variables() -> None:
    # Given the store's variables and those of the subclasses
    environ = {
        "MODEL_STORE_URI": "s3://bucket/models",
        "MODEL_ALIAS": "canary",
        "MANIFEST_SIGNING_KEY": "alias/sklambda",
        "RETENTION_KEEP_LAST": "3",
        "SERVING_RUNTIME": "sklearn",
    }
    # When a function's settings are read
    serving, cli = ServingSettings.from_env(environ), CliSettings.from_env(environ)
    # Then they hold the store's fields as well as their own
    assert isinstance(serving, StoreSettings)
    assert isinstance(cli, StoreSettings)
    for read in (serving, cli):
        assert (read.model_store_uri, read.model_alias, read.manifest_signing_key) == (
            "s3://bucket/models",
            "canary",
            "alias/sklambda",
        )
        assert read.serving_runtime == "sklearn"
    assert (cli.retention_keep_last, cli.retention_keep_days) == (3, 30.0)


def test_a_subclass_redefines_a_field_of_its_base() -> None:
    # Given a SageMaker job, whose DATA_URI is only recorded (may be empty), unlike the retrain function's
    job = {"RUN_ID": "r1", "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train", "SM_MODEL_DIR": "/opt/ml/model"}
    # When the job's settings are read with an empty DATA_URI and an empty TRAINING_CONFIG
    read = JobSettings.from_env({**job, "DATA_URI": "", "TRAINING_CONFIG": ""})
    # Then the job keeps the empty data URI, and the configuration it inherits stays "empty is unset"
    assert (read.data_uri, read.training_config) == ("", None)
    assert "DATA_URI" in problem(RetrainSettings, {"DATA_URI": ""})


def test_the_properties_answer_from_the_values() -> None:
    # Given the SageMaker engine fully configured, and a capture sink with a zero sample rate
    engine = {"RETRAIN_STATE_MACHINE_ARN": "arn:sm", "SAGEMAKER_ROLE_ARN": "arn:role", "SAGEMAKER_IMAGE_URI": "i:1"}
    # Then runs may leave the process only with all three, and capture is on only with a sink and a rate
    assert EngineSettings.from_env(engine).hands_over is True
    assert EngineSettings.from_env({**engine, "SAGEMAKER_IMAGE_URI": ""}).hands_over is False
    assert CaptureSettings.from_env({"CAPTURE_LOCAL_FOLDER": "captures"}).enabled is True
    assert CaptureSettings.from_env({"CAPTURE_LOCAL_FOLDER": "captures", "CAPTURE_SAMPLE_RATE": "0"}).enabled is False


def test_reading_settings_never_imports_pydantic() -> None:
    # Given a fresh interpreter, as a Lambda cold start
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "layers" / "shared"), str(REPO)]))
    probe = (
        "import json, sys, sklambda.settings as s; s.ServingSettings.from_env({}); print(json.dumps(list(sys.modules)))"
    )
    # When it imports the settings and reads some
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=environment, capture_output=True, text=True, check=True
    )
    modules = {name.split(".")[0] for name in json.loads(result.stdout)}
    # Then neither pydantic nor numpy (the runtimes' own import) came with them
    assert "msgspec" in modules
    assert modules & {"pydantic", "pydantic_core", "numpy"} == set()
