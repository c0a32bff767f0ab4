"""The training configuration (training/config.toml by default): what is trained, validated on load."""

from __future__ import annotations

import difflib
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from sklambda.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).with_name("config.toml")

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "log_loss", "roc_auc", "average_precision")
REGRESSION_METRICS = ("r2", "rmse", "mae", "mape")
MetricName = Literal[
    "auto",
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "log_loss",
    "roc_auc",
    "average_precision",
    "r2",
    "rmse",
    "mae",
    "mape",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _module_callable(value: str) -> str:
    module, _, name = value.partition(":")
    if not (module and name and all(part.isidentifier() for part in [*module.split("."), *name.split(".")])):
        raise ValueError(f"{value!r} is not 'module:function' (e.g. 'sklearn.ensemble:RandomForestClassifier')")
    return value


# "module:function": a callable the training imports by name (an estimator class or a function returning one).
CallableSpec = Annotated[str, AfterValidator(_module_callable)]


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
    classification: CallableSpec = "sklearn.linear_model:LogisticRegression"
    regression: CallableSpec = "sklearn.linear_model:Ridge"
    params: dict[Literal["classification", "regression"], dict[str, Any]] = Field(default_factory=dict)


class PipelineSection(_Strict):
    """A whole pipeline of your own, instead of [estimator]: `factory` returns an unfitted scikit-learn estimator
    or Pipeline that does its own preprocessing (the standard preprocessing is NOT put in front). It gets the
    feature columns as the data contract encodes them: numbers as float (NaN when missing), categories as text
    ("__missing__" when missing). Classes it uses that scikit-learn does not have must live in a package under
    layers/shared/ (docs/training.md: "Bring your own pipeline")."""

    factory: CallableSpec
    # Keyword arguments for the factory. It also gets `numeric`, `categorical` (the feature column lists),
    # `task` and `random_state` when its signature takes them and params do not set them.
    params: dict[str, Any] = Field(default_factory=dict)


class OnnxSection(_Strict):
    """ONNX conversion of custom steps: modules that register a skl2onnx converter for them when imported. A
    pipeline that still does not convert is stored with the scikit-learn runtime only (ServingRuntime=sklearn)."""

    converters: list[Annotated[str, Field(pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")]] = Field(
        default_factory=list
    )


class EvaluationSection(_Strict):
    metric: MetricName = "auto"
    test_size: float = Field(default=0.2, gt=0, lt=1)
    random_state: int = 42
    golden_rows: int = Field(default=20, ge=1, le=1000)
    # Permutation importance of each input column on the held-out rows (stored for `python -m training report`):
    # how often each column is shuffled (0: not computed), on at most this many rows (a fixed-seed sample).
    importance_repeats: int = Field(default=5, ge=0, le=50)
    importance_rows: int = Field(default=1000, ge=10)


class DataSection(_Strict):
    """Checks on the training data before anything is trained (the retrain run fails with a report)."""

    min_rows: int = Field(default=50, ge=10)
    # Drift against the champion's data contract, per column: the share of rows with a category the champion
    # never saw, and the share of numbers outside the champion's training range.
    max_unseen_category_share: float = Field(default=0.05, ge=0, le=1)
    max_out_of_range_share: float = Field(default=0.1, ge=0, le=1)
    # The champion scored on ALL the new rows may fall at most this far (in the metric's units, in its bad
    # direction) below the score recorded when it was trained; further means the labels changed meaning or
    # are garbage (e.g. scrambled). None switches the check off.
    max_champion_metric_drop: float | None = Field(default=0.2, ge=0)


Label = str | int | float | bool


class GateCase(_Strict):
    """A must-hold case: a known input and the output it must get (a label, a set, a probability or a range)."""

    name: str = Field(min_length=1)
    # The model this case is about; default: [model].name of the file it is written in.
    model: str | None = None
    instance: dict[str, Any]
    expect: Label | None = None
    expect_in: list[Label] | None = None
    # With `expect`: the probability of that class must be at least this.
    min_probability: float | None = Field(default=None, gt=0, le=1)
    # Regression: the prediction must lie in [low, high].
    expect_between: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _has_an_expectation(self) -> Self:
        if self.expect is None and self.expect_in is None and self.expect_between is None:
            raise ValueError(f"case {self.name!r}: give expect, expect_in or expect_between")
        if self.min_probability is not None and self.expect is None:
            raise ValueError(f"case {self.name!r}: min_probability needs expect (the class it is about)")
        if self.expect_between is not None and self.expect_between[0] > self.expect_between[1]:
            raise ValueError(f"case {self.name!r}: expect_between must be [low, high]")
        return self


class GateSection(_Strict):
    """When a challenger may replace the champion. The metric rule follows MLflow's MetricThreshold: the
    challenger must score at least champion + min_absolute_change (direction per metric), improve on it by at
    least min_relative_change (a fraction of the champion's score), and reach `threshold` if set. With no
    change set, at least as good as the champion is enough."""

    min_absolute_change: float | None = Field(default=None, ge=0)
    min_relative_change: float | None = Field(default=None, ge=0)
    threshold: float | None = None
    # Default: the metric's own direction (accuracy up, log_loss / rmse down).
    greater_is_better: bool | None = None
    # Regression outputs must stay within the training targets' range widened by this share of its span.
    regression_range_margin: float = Field(default=0.5, ge=0)
    cases: list[GateCase] = Field(default_factory=list)


class BudgetSection(_Strict):
    """How long and how much memory a run needs, by rows x columns of the table, measured with
    benchmarks/retrain_scaling.py for the sample pipeline; re-measure for a heavier estimator. A run that
    would not fit in the time or memory it has is refused before training starts."""

    base_seconds: float = Field(default=1.0, ge=0)
    seconds_per_million_cells: float = Field(default=2.0, ge=0)
    base_mb: float = Field(default=250.0, ge=0)
    mb_per_million_cells: float = Field(default=60.0, ge=0)
    # Estimates are multiplied by this before they are compared with what is left.
    safety_factor: float = Field(default=1.5, ge=1)
    # Seconds kept back for writing the run record and the notification at the end.
    reserve_seconds: float = Field(default=5.0, ge=0)


class TrainingConfig(_Strict):
    model: ModelSection
    features: FeaturesSection = FeaturesSection()
    estimator: EstimatorSection = EstimatorSection()
    pipeline: PipelineSection | None = None
    onnx: OnnxSection = OnnxSection()
    evaluation: EvaluationSection = EvaluationSection()
    data: DataSection = DataSection()
    gate: GateSection = GateSection()
    budget: BudgetSection = BudgetSection()

    @model_validator(mode="after")
    def _one_way_to_build_the_model(self) -> Self:
        if self.pipeline is not None and "estimator" in self.model_fields_set:
            raise ValueError(
                "give [estimator] (your estimator after the standard preprocessing) or [pipeline] (your whole "
                "pipeline, its own preprocessing), not both"
            )
        return self

    @model_validator(mode="after")
    def _cases_name_their_model(self) -> Self:
        # A case written without `model` is about the model this file trains (not one renamed on the command line).
        cases = [case if case.model else case.model_copy(update={"model": self.model.name}) for case in self.gate.cases]
        object.__setattr__(self, "gate", self.gate.model_copy(update={"cases": cases}))
        return self

    def cases_for(self, name: str) -> list[GateCase]:
        return [case for case in self.gate.cases if case.model == name]

    def with_overrides(
        self, *, name: str | None = None, target: str | None = None, task: str | None = None
    ) -> TrainingConfig:
        model = self.model.model_dump()
        model.update({key: value for key, value in {"name": name, "target": target, "task": task}.items() if value})
        try:
            return self.model_copy(update={"model": ModelSection.model_validate(model)})
        except ValidationError as error:
            raise ConfigError(_describe(error, "command line")) from None


def resolve_config_path(path: str | Path | None) -> Path:
    """The file to read: the default, the path as given, or a relative path that does not exist from here read
    from where the training package lies, so that TRAINING_CONFIG=training/examples/forest_ratios.toml names the
    same file in a checkout and in the retrain function (where training/ is /opt/python/training)."""
    if path is None:
        return DEFAULT_CONFIG
    given = Path(path)
    beside_package = DEFAULT_CONFIG.parent.parent / given
    if not given.is_absolute() and not given.exists() and beside_package.exists():
        return beside_package
    return given


def load_config(path: str | Path | None = None) -> TrainingConfig:
    path = resolve_config_path(path)
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
    """One line per problem, named by its place in the file: unknown keys with the keys that section takes (and
    the closest one), wrong values with what was given."""
    lines = []
    for item in error.errors():
        location = item["loc"]
        where = ".".join(str(part) for part in location)
        if item["type"] == "extra_forbidden":
            message = _unknown_key(location)
        elif item["type"] == "missing":
            message = "required, but missing"
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            given = item.get("input")
            if not isinstance(given, dict | list) and item["type"] != "value_error":
                message += f" (got {given!r})"
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return f"invalid training configuration in {source}:\n" + "\n".join(lines)


def _unknown_key(location: tuple[int | str, ...]) -> str:
    section = _section_model(location[:-1])
    if section is None:
        return "unknown key"
    known = list(section.model_fields)
    close = difflib.get_close_matches(str(location[-1]), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    place = (
        f"[{'.'.join(str(part) for part in location[:-1] if isinstance(part, str))}]" if location[:-1] else "the file"
    )
    return f"unknown key{hint}; {place} takes: {', '.join(known)}"


def _section_model(path: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The configuration model at `path` (("gate", "cases", 0) -> GateCase), or None if there is none there."""
    model: type[BaseModel] = TrainingConfig
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
