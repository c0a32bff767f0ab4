"""The training configuration (training/config.toml by default): what is trained, validated on load."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sklambda.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).with_name("config.toml")

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "log_loss")
REGRESSION_METRICS = ("r2", "rmse", "mae")
MetricName = Literal["auto", "accuracy", "balanced_accuracy", "f1_macro", "log_loss", "r2", "rmse", "mae"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    target: str = Field(min_length=1)
    task: Literal["classification", "regression", "auto"] = "auto"


class FeaturesSection(_Strict):
    numeric: Literal["auto"] | list[str] = "auto"
    categorical: Literal["auto"] | list[str] = "auto"
    exclude: list[str] = Field(default_factory=list)
    max_categories: int = Field(default=50, ge=2)


class EstimatorSection(_Strict):
    classification: str = Field(default="sklearn.linear_model:LogisticRegression", pattern=r"^[\w.]+:[\w.]+$")
    regression: str = Field(default="sklearn.linear_model:Ridge", pattern=r"^[\w.]+:[\w.]+$")
    params: dict[Literal["classification", "regression"], dict[str, Any]] = Field(default_factory=dict)


class EvaluationSection(_Strict):
    metric: MetricName = "auto"
    test_size: float = Field(default=0.2, gt=0, lt=1)
    random_state: int = 42
    golden_rows: int = Field(default=20, ge=1, le=1000)


class TrainingConfig(_Strict):
    model: ModelSection
    features: FeaturesSection = FeaturesSection()
    estimator: EstimatorSection = EstimatorSection()
    evaluation: EvaluationSection = EvaluationSection()

    def with_overrides(
        self, *, name: str | None = None, target: str | None = None, task: str | None = None
    ) -> TrainingConfig:
        model = self.model.model_dump()
        model.update({key: value for key, value in {"name": name, "target": target, "task": task}.items() if value})
        try:
            return self.model_copy(update={"model": ModelSection.model_validate(model)})
        except ValidationError as error:
            raise ConfigError(_describe(error, "command line")) from None


def load_config(path: str | Path | None = None) -> TrainingConfig:
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"training configuration {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, str(path))) from None


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {message}")
    return f"invalid training configuration in {source}:\n" + "\n".join(lines)
