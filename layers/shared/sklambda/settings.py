"""Configuration from environment variables, read once and validated (template Globals/Parameters → env vars).

Logic never reads os.environ: handlers and the command line build a settings object here and pass values on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from sklambda.errors import ConfigError
from sklambda.runtimes import RuntimeName

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

# An empty variable means unset: the template and `make serve` pass "" to switch a feature off.
_EmptyIsUnset = Annotated[str | None, BeforeValidator(lambda value: value or None)]


class _FromEnv(BaseModel):
    # Each settings class builds its validator when a process first reads it: a function reads one or two of
    # them, and building every one at import was a measurable share of the predict function's cold start.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        values = {name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']).upper()}: {item['msg']}" for item in error.errors()
            )
            raise ConfigError(f"invalid configuration: {problems}") from None


class StoreSettings(_FromEnv):
    # A local folder (the default on a laptop) or s3://bucket/prefix.
    model_store_uri: str = Field(default=DEFAULT_LOCAL_STORE, min_length=1)
    # Which model to serve or retrain; optional on a laptop when the store holds a single model.
    model_name: str | None = Field(default=None, min_length=1)
    model_alias: str = Field(default=DEFAULT_ALIAS, min_length=1)
    # AWS KMS asymmetric key (id, ARN or alias) that signs every manifest this process publishes and verifies a
    # version's manifest before a pickled artifact of it loads (sklambda.signing). Unset or empty: no signatures.
    manifest_signing_key: str | None = None
    # With a key: "required" refuses unsigned versions; "optional" verifies signed ones and accepts unsigned ones
    # (a store whose older versions predate signing).
    manifest_signatures: Literal["required", "optional"] = "required"

    @field_validator("manifest_signing_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        return value or None


class ServingSettings(StoreSettings):
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME
    # How often a warm container re-reads the alias (a conditional GET that costs one round trip).
    alias_refresh_seconds: float = Field(default=30.0, ge=0)
    # Unset: the contract decides (stored with the version at training; strict by default). true/false
    # overrides it for this deployment.
    allow_unknown_fields: bool | None = None
    # What one POST /predict may hold: bytes of body (see MAX_BODY_BYTES_CEILING), JSON nesting (no valid
    # request is deeper than 4), rows. A wide model gets fewer rows than max_rows: as many as always fit in the
    # body (sklambda.api.row_limit), which GET /openapi.json publishes.
    max_body_bytes: int = Field(default=MAX_BODY_BYTES_CEILING, ge=1024, le=MAX_BODY_BYTES_CEILING)
    max_json_depth: int = Field(default=10, ge=4, le=512)
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1)
    # What GET /model and GET /openapi.json tell callers: "full" (metrics, libraries, code version, the training
    # ranges of the numbers), or "contract" (what a caller needs to send valid rows, and no more). The template
    # sets "full" only when the prediction routes require an API key.
    model_details: Literal["full", "contract"] = "full"

    @field_validator("allow_unknown_fields", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None if isinstance(value, str) else value


class GuardSettings(StoreSettings):
    # A promotion younger than this when a serving alarm fires is rolled back automatically.
    promotion_watch_seconds: float = Field(default=3600.0, gt=0)
    # SNS topic told of every rollback the guard makes (the template's alarm topic); unset or empty: none.
    alarm_topic_arn: str | None = None

    @field_validator("alarm_topic_arn", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None


class RolloutCheckSettings(StoreSettings):
    # The new version of the predict function a rollout is about to send traffic to (its ARN with the version:
    # the template passes PredictFunction.Version), called directly by the pre-traffic check.
    predict_version: str = Field(min_length=1)


class RetrainSettings(StoreSettings):
    # Where the retrain function reads its training data: s3://bucket/prefix/ (all CSV/Parquet under it),
    # one object, or a local path.
    data_uri: str = Field(min_length=1)
    # The training configuration file; the one shipped with the training package when unset.
    training_config: str | None = None
    # The deployed predict function, asked to load and self-test a candidate before it is promoted. When
    # unset (laptop, tests), the serving runtime below runs the self-test in this process.
    predict_function_name: _EmptyIsUnset = None
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME
    # SNS topic that hears every run's outcome (promoted / rejected / failed); unset: no notification.
    retrain_topic_arn: str | None = None
    # How long a run's lock lasts if the run dies without handing it back (longer than the function timeout).
    retrain_lock_seconds: float = Field(default=DEFAULT_RETRAIN_LOCK_SECONDS, gt=0)

    @field_validator("training_config", "retrain_topic_arn", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None


class AdminSettings(StoreSettings):
    # The deployed predict function, asked to load and self-test a version before an alias may point at it.
    # When unset (laptop, local API), the serving runtime below runs the self-test in this process.
    predict_function_name: _EmptyIsUnset = None
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME


class RetentionSettings(_FromEnv):
    """Defaults of the retention policy (`python -m training prune`); its options override them."""

    retention_keep_last: int = Field(default=10, ge=1)
    retention_keep_days: float = Field(default=30.0, ge=0)


class CliSettings(RetentionSettings, StoreSettings):
    """The command line's environment (`python -m training`), read once per command: the defaults of its options."""

    # Training data (--data) and the training configuration (--config).
    data_uri: _EmptyIsUnset = None
    training_config: _EmptyIsUnset = None
    # The runtime, or the deployed predict function, that self-tests a version before an alias may point at it.
    serving_runtime: RuntimeName = DEFAULT_SERVING_RUNTIME
    predict_function_name: _EmptyIsUnset = None
    log_level: str = "INFO"


class EngineSettings(_FromEnv):
    """Where the retrain function carries a run out (template Parameters RetrainEngine and SageMaker*): here, or
    handed to a SageMaker Training job that a Step Functions state machine starts and waits on. Unset variables
    (a laptop, the tests) leave every run in the process: `auto` with no state machine means `lambda`."""

    retrain_engine: Literal["lambda", "sagemaker", "auto"] = "auto"
    retrain_state_machine_arn: _EmptyIsUnset = None
    # The prefix of every training job's name (the stack's name): the state machine's role may only touch these.
    sagemaker_job_prefix: str = Field(default="sklambda", min_length=1, max_length=34, pattern=r"^[a-zA-Z0-9-]+$")
    sagemaker_role_arn: _EmptyIsUnset = None
    sagemaker_image_uri: _EmptyIsUnset = None
    sagemaker_instance_type: str = Field(default="ml.m5.4xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    sagemaker_volume_gb: int = Field(default=50, ge=1, le=16384)
    sagemaker_max_runtime_seconds: int = Field(default=14400, ge=60, le=28 * 86400)
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


class JobSettings(RetrainSettings):
    """A SageMaker Training job carrying out a run (training/sagemaker_job.py): what SageMaker sets (SM_*), what
    the job request's Environment adds (the run, the store, the topic, the stack's metric dimension)."""

    run_id: str = Field(min_length=1)
    # Where SageMaker (File mode) copied the training channel, and where it collects the job's output.
    sm_channel_train: str = Field(min_length=1)
    sm_model_dir: str = Field(min_length=1)
    # The job's StoppingCondition: the run's time budget (Limits.seconds_left counts down from the job's start).
    sagemaker_max_runtime_seconds: int = Field(default=14400, ge=60)
    # The stack's name: the `service` dimension of the run metrics the job puts (as the functions' EMF do).
    powertools_service_name: str = "sklambda"
    powertools_metrics_namespace: str = "Sklambda"
    # The data's own URI (the S3 prefix the channel was copied from), recorded in the run record for lineage.
    data_uri: str = Field(default="", min_length=0)


class CaptureSettings(_FromEnv):
    """Capture of served requests by the predict function (sklambda/capture.py); off unless a sink is set."""

    # The Kinesis Data Firehose delivery stream that writes captures to S3 (the template's CaptureStream).
    capture_stream_name: _EmptyIsUnset = None
    # Or a local folder (laptop, demo): records are appended there in the same partition layout.
    capture_local_folder: _EmptyIsUnset = None
    # Share of requests captured (whole requests: all their rows or none).
    capture_sample_rate: float = Field(default=1.0, ge=0, le=1)
    # A captured record waits in memory at most this long before the next captured request sends the batch.
    capture_max_age_seconds: float = Field(default=60.0, ge=0)

    @property
    def enabled(self) -> bool:
        return bool(self.capture_stream_name or self.capture_local_folder) and self.capture_sample_rate > 0


class FeedbackSettings(StoreSettings):
    # Where captures and feedback live: s3://bucket/capture-prefix or a local folder; unset: capture is off.
    capture_uri: _EmptyIsUnset = None
    # Labels one POST /feedback may carry, and the row index bound (predict's MAX_ROWS).
    max_feedback_labels: int = Field(default=DEFAULT_MAX_ROWS, ge=1)
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES_CEILING, ge=1024, le=MAX_BODY_BYTES_CEILING)


class MonitorSettings(StoreSettings):
    capture_uri: str = Field(min_length=1)
    # Where labelled captures are written as training data (a folder/prefix the retrain function reads).
    labelled_data_uri: _EmptyIsUnset = None
    # Days of captures (today included) one monitor run looks at, and how far back labels are joined.
    monitor_window_days: int = Field(default=1, ge=1, le=31)
    feedback_lookback_days: int = Field(default=7, ge=0, le=90)
    psi_threshold: float = Field(default=0.2, gt=0)
    # The live metric alarm: worse than held-out by more than this share of the held-out value.
    live_metric_max_drop: float = Field(default=0.1, gt=0)
    min_labels: int = Field(default=30, ge=1)
    # The retrain function to start (asynchronously) when the monitor finds drift or a quality drop; unset: none.
    retrain_function_name: _EmptyIsUnset = None
