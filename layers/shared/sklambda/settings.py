"""Configuration from environment variables, read once and validated (template Globals/Parameters → env vars).

Logic never reads os.environ: handlers and the command line build a settings object here and pass values on.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal, Self, Union, get_args, get_origin

# msgspec rather than pydantic: pydantic's import alone was ~130 ms of the predict function's cold start; msgspec
# checks the same constraints in a few ms of import, and builds a class's converter when it first reads one.
import msgspec
from msgspec import Meta

from sklambda.errors import ConfigError
from sklambda.runtime_names import RuntimeName

# Every default is written here once; the command line and the training package read these names.
DEFAULT_LOCAL_STORE = "model-store"
DEFAULT_ALIAS = "champion"
DEFAULT_SERVING_RUNTIME: RuntimeName = "onnx"
# Longer than the retrain function's 900 s timeout: a lock outlives any run that still holds it.
DEFAULT_RETRAIN_LOCK_SECONDS = 960.0
# Rows one POST /predict may hold (fewer for a wide model: sklambda.api.row_limit); POST /feedback labels as many.
DEFAULT_MAX_ROWS = 5000
# The largest POST /predict body: API Gateway passes the body to Lambda inside a JSON event, where every quote and
# backslash is escaped (up to twice the bytes), and Lambda takes at most 6 MiB (6,291,456 bytes) per invocation:
# 3,000,000 bytes of body leave room for the doubling and for the headers.
MAX_BODY_BYTES_CEILING = 3_000_000


class _UnsetIfEmpty:
    """Marks a field whose variable set to "" means unset: the template and `make serve` pass "" to switch a
    feature off."""


_UNSET_IF_EMPTY = _UnsetIfEmpty()
_EmptyIsUnset = Annotated[str | None, _UNSET_IF_EMPTY]
_NonEmpty = Annotated[str, Meta(min_length=1)]

# The words pydantic (which read these settings before msgspec) took for a boolean, in any case: a deployed
# SAGEMAKER_SPOT=yes keeps working.
_BOOLEAN_WORDS = {
    **dict.fromkeys(("1", "true", "t", "yes", "y", "on"), True),
    **dict.fromkeys(("0", "false", "f", "no", "n", "off"), False),
}
# Where msgspec says a value is wrong: "Expected `int` >= 1 - at `$.max_rows`".
_AT_FIELD = re.compile(r"^(?P<problem>.*) - at `\$\.(?P<field>\w+)`$")


@dataclass(frozen=True)
class _Variable:
    """The environment variable behind one field, and how its text becomes the field's value."""

    field: str
    name: str
    required: bool
    unset_if_empty: bool
    kind: Literal["bool", "number", "text"]
    choices: tuple[object, ...]  # a Literal's values, for the error message

    @classmethod
    def of(cls, field: msgspec.structs.FieldInfo) -> _Variable:
        annotation, *extras = get_args(field.type) if get_origin(field.type) is Annotated else (field.type,)
        options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
        literals = tuple(value for option in options if get_origin(option) is Literal for value in get_args(option))
        kind: Literal["bool", "number", "text"] = (
            "bool" if bool in options else "number" if int in options or float in options else "text"
        )
        return cls(field.name, field.name.upper(), field.required, _UNSET_IF_EMPTY in extras, kind, literals)

    def value(self, text: str) -> object:
        """What msgspec converts: a boolean for the words above, a number's text without the spaces around it
        (pydantic read " 5 " as 5), any other text as it is."""
        if self.kind == "bool":
            return _BOOLEAN_WORDS.get(text.strip().lower(), text)
        return text.strip() if self.kind == "number" else text

    def problem(self, message: str, text: str) -> str:
        """msgspec's message about this field's value, for the person who sets the variable."""
        if self.choices:
            message = f"expected one of {', '.join(repr(choice) for choice in self.choices)}"
        elif self.kind == "bool":
            message = "expected true or false (or 1/0, yes/no, on/off)"
        message = message[:1].lower() + message[1:]
        return f"{self.name}: {message.removesuffix(', got `str`')}, got {text!r}"


# Every settings class repeats both options: kw_only covers a class's own fields only (keyword arguments, and a
# required field may follow fields with defaults), and mypy wants frozen on each class that inherits it.
class _FromEnv(msgspec.Struct, frozen=True, kw_only=True):
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from the variables named after their fields (upper case); any other variable is ignored."""
        environ = os.environ if environ is None else environ
        variables = _variables(cls)
        values = {
            variable.field: variable.value(environ[variable.name])
            for variable in variables
            if variable.name in environ and not (variable.unset_if_empty and environ[variable.name] == "")
        }
        missing = [variable.name for variable in variables if variable.required and variable.field not in values]
        if missing:
            raise ConfigError(f"invalid configuration: {'; '.join(f'{name}: required, not set' for name in missing)}")
        try:
            return msgspec.convert(values, type=cls, strict=False)
        except msgspec.ValidationError as error:
            raise ConfigError(f"invalid configuration: {_described(error, variables, environ)}") from None


# Each settings class's variables, worked out when the process first reads that class.
_VARIABLES: dict[type[_FromEnv], tuple[_Variable, ...]] = {}


def _variables(settings_type: type[_FromEnv]) -> tuple[_Variable, ...]:
    if settings_type not in _VARIABLES:
        _VARIABLES[settings_type] = tuple(_Variable.of(field) for field in msgspec.structs.fields(settings_type))
    return _VARIABLES[settings_type]


def _described(error: msgspec.ValidationError, variables: tuple[_Variable, ...], environ: Mapping[str, str]) -> str:
    where = _AT_FIELD.match(str(error))
    variable = {variable.field: variable for variable in variables}.get(where["field"]) if where else None
    return variable.problem(where["problem"], environ[variable.name]) if where and variable else str(error)


class StoreSettings(_FromEnv, frozen=True, kw_only=True):
    # A local folder (the default on a laptop) or s3://bucket/prefix.
    model_store_uri: _NonEmpty = DEFAULT_LOCAL_STORE
    # Which model to serve or retrain; optional on a laptop when the store holds a single model.
    model_name: _NonEmpty | None = None
    model_alias: _NonEmpty = DEFAULT_ALIAS
    # AWS KMS asymmetric key (id, ARN or alias) that signs every manifest this process publishes and verifies a
    # version's manifest before a pickled artifact of it loads (sklambda.signing). Unset or empty: no signatures.
    manifest_signing_key: _EmptyIsUnset = None
    # With a key: "required" refuses unsigned versions; "optional" verifies signed ones and accepts unsigned ones
    # (a store whose older versions predate signing).
    manifest_signatures: Literal["required", "optional"] = "required"


class ServingSettings(StoreSettings, frozen=True, kw_only=True):
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME
    # How often a warm container re-reads the alias (a conditional GET that costs one round trip).
    alias_refresh_seconds: Annotated[float, Meta(ge=0)] = 30.0
    # Unset or empty: the contract decides (stored with the version at training; strict by default). true/false
    # overrides it for this deployment.
    allow_unknown_fields: Annotated[bool | None, _UNSET_IF_EMPTY] = None
    # What one POST /predict may hold: bytes of body (see MAX_BODY_BYTES_CEILING), JSON nesting (no valid
    # request is deeper than 4), rows. A wide model gets fewer rows than max_rows: as many as always fit in the
    # body (sklambda.api.row_limit), which GET /openapi.json publishes.
    max_body_bytes: Annotated[int, Meta(ge=1024, le=MAX_BODY_BYTES_CEILING)] = MAX_BODY_BYTES_CEILING
    max_json_depth: Annotated[int, Meta(ge=4, le=512)] = 10
    max_rows: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_ROWS
    # What GET /model and GET /openapi.json tell callers: "full" (metrics, libraries, code version, the training
    # ranges of the numbers), or "contract" (what a caller needs to send valid rows, and no more). The template
    # sets "full" only when the prediction routes require an API key.
    model_details: Literal["full", "contract"] = "full"


class GuardSettings(StoreSettings, frozen=True, kw_only=True):
    # A promotion younger than this when a serving alarm fires is rolled back automatically.
    promotion_watch_seconds: Annotated[float, Meta(gt=0)] = 3600.0
    # SNS topic told of every rollback the guard makes (the template's alarm topic); unset or empty: none.
    alarm_topic_arn: _EmptyIsUnset = None


class RolloutCheckSettings(StoreSettings, frozen=True, kw_only=True):
    # The new version of the predict function a rollout is about to send traffic to (its ARN with the version:
    # the template passes PredictFunction.Version), called directly by the pre-traffic check.
    predict_version: _NonEmpty


class RetrainSettings(StoreSettings, frozen=True, kw_only=True):
    # Where the retrain function reads its training data: s3://bucket/prefix/ (all CSV/Parquet under it),
    # one object, or a local path.
    data_uri: _NonEmpty
    # The training configuration file; the one shipped with the training package when unset.
    training_config: _EmptyIsUnset = None
    # The deployed predict function, asked to load and self-test a candidate before it is promoted. When
    # unset (laptop, tests), the serving runtime below runs the self-test in this process.
    predict_function_name: _EmptyIsUnset = None
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME
    # SNS topic that hears every run's outcome (promoted / rejected / failed); unset: no notification.
    retrain_topic_arn: _EmptyIsUnset = None
    # How long a run's lock lasts if the run dies without handing it back (longer than the function timeout).
    retrain_lock_seconds: Annotated[float, Meta(gt=0)] = DEFAULT_RETRAIN_LOCK_SECONDS


class AdminSettings(StoreSettings, frozen=True, kw_only=True):
    # The deployed predict function, asked to load and self-test a version before an alias may point at it.
    # When unset (laptop, local API), the serving runtime below runs the self-test in this process.
    predict_function_name: _EmptyIsUnset = None
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME


class RetentionSettings(StoreSettings, frozen=True, kw_only=True):
    """Defaults of the retention policy (`python -m training prune`) of a store; its options override them."""

    retention_keep_last: Annotated[int, Meta(ge=1)] = 10
    retention_keep_days: Annotated[float, Meta(ge=0)] = 30.0


# One settings class per base: msgspec's classes have slots, which two bases with fields cannot share.
class CliSettings(RetentionSettings, frozen=True, kw_only=True):
    """The command line's environment (`python -m training`), read once per command: the defaults of its options."""

    # Training data (--data) and the training configuration (--config).
    data_uri: _EmptyIsUnset = None
    training_config: _EmptyIsUnset = None
    # The runtime, or the deployed predict function, that self-tests a version before an alias may point at it.
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME
    predict_function_name: _EmptyIsUnset = None
    log_level: str = "INFO"


class EngineSettings(_FromEnv, frozen=True, kw_only=True):
    """Where the retrain function carries a run out (template Parameters RetrainEngine and SageMaker*): here, or
    handed to a SageMaker Training job that a Step Functions state machine starts and waits on. Unset variables
    (a laptop, the tests) leave every run in the process: `auto` with no state machine means `lambda`."""

    retrain_engine: Literal["lambda", "sagemaker", "auto"] = "auto"
    retrain_state_machine_arn: _EmptyIsUnset = None
    # The prefix of every training job's name (the stack's name): the state machine's role may only touch these.
    sagemaker_job_prefix: Annotated[str, Meta(min_length=1, max_length=34, pattern=r"^[a-zA-Z0-9-]+$")] = "sklambda"
    sagemaker_role_arn: _EmptyIsUnset = None
    sagemaker_image_uri: _EmptyIsUnset = None
    sagemaker_instance_type: Annotated[str, Meta(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")] = "ml.m5.4xlarge"
    sagemaker_volume_gb: Annotated[int, Meta(ge=1, le=16384)] = 50
    sagemaker_max_runtime_seconds: Annotated[int, Meta(ge=60, le=28 * 86400)] = 14400
    sagemaker_spot: bool = False
    # The training jobs' files (source tarball, SageMaker's output) go under <MODEL_STORE_URI>/<model>/jobs/.
    sagemaker_region: _EmptyIsUnset = None
    # Handed to the job, which puts its run metrics as the functions' EMF does (namespace, service dimension).
    powertools_service_name: str = "sklambda"
    powertools_metrics_namespace: str = "Sklambda"

    @property
    def hands_over(self) -> bool:
        """Whether runs may leave this process at all (the state machine and what a job needs are configured)."""
        return bool(self.retrain_state_machine_arn and self.sagemaker_role_arn and self.sagemaker_image_uri)


class JobSettings(RetrainSettings, frozen=True, kw_only=True):
    """A SageMaker Training job carrying out a run (training/sagemaker_job.py): what SageMaker sets (SM_*), what
    the job request's Environment adds (the run, the store, the topic, the stack's metric dimension)."""

    run_id: _NonEmpty
    # Where SageMaker (File mode) copied the training channel, and where it collects the job's output.
    sm_channel_train: _NonEmpty
    sm_model_dir: _NonEmpty
    # The job's StoppingCondition: the run's time budget (Limits.seconds_left counts down from the job's start).
    sagemaker_max_runtime_seconds: Annotated[int, Meta(ge=60)] = 14400
    # The stack's name: the `service` dimension of the run metrics the job puts (as the functions' EMF do).
    powertools_service_name: str = "sklambda"
    powertools_metrics_namespace: str = "Sklambda"
    # The data's own URI (the S3 prefix the channel was copied from), recorded in the run record for lineage.
    data_uri: str = ""


class CaptureSettings(_FromEnv, frozen=True, kw_only=True):
    """Capture of served requests by the predict function (sklambda/capture.py); off unless a sink is set."""

    # The Kinesis Data Firehose delivery stream that writes captures to S3 (the template's CaptureStream).
    capture_stream_name: _EmptyIsUnset = None
    # Or a local folder (laptop, demo): records are appended there in the same partition layout.
    capture_local_folder: _EmptyIsUnset = None
    # Share of requests captured (whole requests: all their rows or none).
    capture_sample_rate: Annotated[float, Meta(ge=0, le=1)] = 1.0
    # A captured record waits in memory at most this long before the next captured request sends the batch.
    capture_max_age_seconds: Annotated[float, Meta(ge=0)] = 60.0

    @property
    def enabled(self) -> bool:
        return bool(self.capture_stream_name or self.capture_local_folder) and self.capture_sample_rate > 0


class FeedbackSettings(StoreSettings, frozen=True, kw_only=True):
    # Where captures and feedback live: s3://bucket/capture-prefix or a local folder; unset: capture is off.
    capture_uri: _EmptyIsUnset = None
    # Labels one POST /feedback may carry, and the row index bound (predict's MAX_ROWS).
    max_feedback_labels: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_ROWS
    max_rows: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_ROWS
    max_body_bytes: Annotated[int, Meta(ge=1024, le=MAX_BODY_BYTES_CEILING)] = MAX_BODY_BYTES_CEILING


class MonitorSettings(StoreSettings, frozen=True, kw_only=True):
    capture_uri: _NonEmpty
    # Where labelled captures are written as training data (a folder/prefix the retrain function reads).
    labelled_data_uri: _EmptyIsUnset = None
    # Days of captures (today included) one monitor run looks at, and how far back labels are joined.
    monitor_window_days: Annotated[int, Meta(ge=1, le=31)] = 1
    feedback_lookback_days: Annotated[int, Meta(ge=0, le=90)] = 7
    psi_threshold: Annotated[float, Meta(gt=0)] = 0.2
    # The live metric alarm: worse than held-out by more than this share of the held-out value.
    live_metric_max_drop: Annotated[float, Meta(gt=0)] = 0.1
    min_labels: Annotated[int, Meta(ge=1)] = 30
    # The retrain function to start (asynchronously) when the monitor finds drift or a quality drop; unset: none.
    retrain_function_name: _EmptyIsUnset = None
