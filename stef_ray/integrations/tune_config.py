"""What ``stef-ray tune`` reads from YAML: the data and base model (as ``stef-ray train``), the search space
over the whole hybrid, the rolling-origin objective, the ASHA scheduler, per-trial resources and the MLflow
registry settings.

Search dimensions are keyed by their path in the model config (``seasonality.daily_order``,
``residual.linear_alpha``, ``residual.architecture`` with ``none`` for no neural residual) and typed
(``{type: loguniform, low: 1e-4, high: 1e-2}``, ``{type: choice, values: [..]}``); every value a dimension can
produce is checked against :class:`stef_ray.config.ModelConfig`'s own limits on load, so a bad key or range
fails before Ray starts, with the key named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, ValidationError, model_validator

from stef_ray.config import DataConfig, ModelConfig, StrictModel


class LogUniform(StrictModel):
    """A float drawn log-uniformly from [low, high]."""

    type: Literal["loguniform"] = Field(description="log-uniform float")
    low: float = Field(gt=0, description="smallest value (> 0)")
    high: float = Field(gt=0, description="largest value")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self

    def candidates(self) -> list[Any]:
        return [self.low, self.high]


class Uniform(StrictModel):
    """A float drawn uniformly from [low, high]."""

    type: Literal["uniform"] = Field(description="uniform float")
    low: float = Field(description="smallest value")
    high: float = Field(description="largest value")

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self

    def candidates(self) -> list[Any]:
        return [self.low, self.high]


class RandInt(StrictModel):
    """An integer drawn uniformly from low..high, both included."""

    type: Literal["randint"] = Field(description="uniform integer, both ends included")
    low: int = Field(description="smallest value")
    high: int = Field(description="largest value (included)")

    @model_validator(mode="after")
    def _ordered(self) -> RandInt:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def candidates(self) -> list[Any]:
        return [self.low, self.high]


class Choice(StrictModel):
    """One of a list of values, each equally likely."""

    type: Literal["choice"] = Field(description="one of the listed values")
    values: list[int | float | str] = Field(min_length=1, description="the values to choose from")

    def candidates(self) -> list[Any]:
        return list(self.values)


Dimension = Annotated[LogUniform | Uniform | RandInt | Choice, Field(discriminator="type")]

NO_NEURAL = "none"  # `residual.architecture: none` in a search space: the trial has no neural residual


def apply_sampled(base: ModelConfig, sampled: dict[str, Any]) -> ModelConfig:
    """``base`` with a trial's values set at their dotted paths (``residual.architecture: none`` turns the
    neural residual off); validated as a whole, so a value outside a field's limits is refused."""
    raw = base.model_dump(mode="json")
    for path, value in sampled.items():
        section, _, key = path.partition(".")
        if not key or section not in raw or not isinstance(raw[section], dict):
            raise ValueError(f"{path}: not a key of the model config (write it as section.key, e.g. "
                             "seasonality.daily_order)")
        if path == "residual.architecture":
            # Sampling an architecture is sampling whether there is a net at all: "none" turns it off, any
            # other turns it on, whatever the base config says.
            raw["residual"]["enabled"] = value != NO_NEURAL
            if value == NO_NEURAL:
                continue
        raw[section][key] = value
    return ModelConfig.model_validate(raw)


class SearchSpace(RootModel[dict[str, Dimension]]):
    """Model-config keys to search (``seasonality.daily_order``, ``residual.hidden_size``, ...); a key left out
    keeps the base ``model`` section's value in every trial."""

    @model_validator(mode="after")
    def _values_fit_model_config(self) -> SearchSpace:
        # Every end or choice is tried on the model config, so a trial never fails on a sampled value.
        for path, dimension in self.root.items():
            for value in dimension.candidates():
                try:
                    apply_sampled(ModelConfig(), {path: value})
                except ValidationError as err:
                    first = err.errors()[0]
                    where = ".".join(str(part) for part in first["loc"])
                    reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                    raise ValueError(f"{path}: value {value!r} is not allowed ({where}: {reason})") from None
                except ValueError as err:
                    raise ValueError(str(err)) from None
        return self

    def dimensions(self) -> dict[str, Dimension]:
        return dict(self.root)


class SearchConfig(StrictModel):
    num_samples: int = Field(4, ge=1, le=10_000, description="trials (hybrid configurations) to run")
    algorithm: Literal["random", "optuna", "hyperopt"] = Field(
        "random", description="how configurations are drawn: random, or model-based from the trials so far "
        "(optuna: TPE, needs `pip install optuna`; hyperopt: TPE, needs `pip install hyperopt`)"
    )
    seed: int = Field(0, description="seed of the search, so a rerun samples the same configurations")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="trials running at once (default: as many as the resources allow)"
    )
    space: SearchSpace = Field(default_factory=lambda: SearchSpace({}), description="the model-config keys searched")


class ObjectiveConfig(StrictModel):
    """A trial's score: the full hybrid's day-ahead MAPE over rolling-origin windows before the holdout, each
    window a refit on the data before it and a forecast from every 00:00 for ``window_days`` (the backtest's
    own metric, so a trial's rank is what users get)."""

    windows: int = Field(4, ge=1, le=52, description="rolling-origin windows (also ASHA's resource: a trial is "
                         "compared with the others after each window)")
    window_days: int = Field(7, ge=1, le=91, description="daily 00:00 forecasts in each window")
    span_days: int = Field(364, ge=7, description="the windows are spread evenly over this many days before the "
                           "holdout (seasons differ); the first windows a trial evaluates are the most recent "
                           "and then the farthest apart, so ASHA's early rungs already see several seasons")


class SchedulerConfig(StrictModel):
    type: Literal["asha", "fifo"] = Field("asha", description="asha: stop poor trials early; fifo: run all")
    grace_period: int = Field(1, ge=1, description="windows every trial evaluates before ASHA may stop it")
    reduction_factor: float = Field(3.0, gt=1, description="ASHA keeps the best 1/reduction_factor per rung")


class ResourcesConfig(StrictModel):
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs reserved by each trial (also its torch and BLAS threads)")
    gpus_per_trial: float = Field(
        0.0, ge=0, description="GPU share per trial (0.25: four trials per GPU), for the neural residual; 0 on "
        "a cluster without GPUs"
    )


class MlflowConfig(StrictModel):
    enabled: bool = Field(True, description="log the search to MLflow and register the best model")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; $MLFLOW_TRACKING_URI wins; default sqlite:///<cwd>/mlflow.db "
        "with artifacts in <cwd>/mlartifacts",
    )
    experiment: str = Field("power-demand-hybrid-weekly", description="MLflow experiment name")
    registered_model: str = Field("power-demand-hybrid", description="name in the MLflow model registry")
    holdout_days: int = Field(28, ge=1, le=366, description="last days of data kept out of training and scored")
    champion_margin: float = Field(
        0.0, ge=0, description="MAPE points by which a new version may be worse and still take 'champion'"
    )
    top_trials_plotted: int = Field(5, ge=1, le=50, description="trials drawn in the learning-curve PNG")


class TuneConfig(StrictModel):
    """A ``tune_configs/*.yaml`` file."""

    data: DataConfig = Field(default_factory=DataConfig, description="input data, as for `stef-ray train`")
    model: ModelConfig = Field(default_factory=ModelConfig, description="base model: every trial starts from it")
    search: SearchConfig = Field(default_factory=SearchConfig, description="the search over the model config")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="how a trial is scored")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="trial scheduler")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="per-trial resources")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="tracking and registry")
    storage_path: str = Field("ray_results", description="where Ray Tune keeps trial results and checkpoints "
                              "(relative to the working directory; a shared path or URI on a multi-node cluster)")
    max_failures: int = Field(2, ge=-1, description="retries of a crashed trial (-1: without limit)")
    bundle_out: str = Field("models/tuned", description="where the best model's bundle folder is written")

    @model_validator(mode="after")
    def _exog_not_target(self) -> TuneConfig:
        if self.data.target_col in self.data.exog:
            raise ValueError(f"data.exog lists the target column '{self.data.target_col}'")
        if self.scheduler.grace_period > self.objective.windows:
            raise ValueError(f"scheduler.grace_period ({self.scheduler.grace_period}) exceeds objective.windows "
                             f"({self.objective.windows})")
        return self
