"""What ``stef-ray tune`` reads from YAML: the data and base model (as ``stef-ray train``), the search space
of the residual LSTM, the ASHA scheduler, per-trial resources and the MLflow registry settings.

Search dimensions are typed (``{type: loguniform, low: 1e-4, high: 1e-2}``, ``{type: choice, values: [..]}``)
and every value a dimension can produce is checked against :class:`stef_ray.config.ResidualConfig`'s own
limits on load, so a bad range fails before Ray starts, with the key named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from stef_ray.config import DataConfig, ModelConfig, ResidualConfig, StrictModel


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

# Not the loss: val_loss is measured in the training loss, so trials with different losses are not comparable.
TUNABLE = ("hidden_size", "num_layers", "dropout", "learning_rate", "batch_size", "weight_decay")


class SearchSpace(StrictModel):
    """LSTM hyperparameters to search; one left out keeps ``model.residual``'s value in every trial."""

    hidden_size: Dimension | None = Field(None, description="LSTM hidden units")
    num_layers: Dimension | None = Field(None, description="stacked LSTM layers")
    dropout: Dimension | None = Field(None, description="dropout in the head and between layers")
    learning_rate: Dimension | None = Field(None, description="AdamW learning rate")
    batch_size: Dimension | None = Field(None, description="windows per batch")
    weight_decay: Dimension | None = Field(None, description="AdamW weight decay")

    @model_validator(mode="after")
    def _values_fit_residual_config(self) -> SearchSpace:
        # Check every end/choice against ResidualConfig's limits, so a trial never fails on a sampled value.
        for name in TUNABLE:
            dimension = getattr(self, name)
            if dimension is None:
                continue
            for value in dimension.candidates():
                try:
                    ResidualConfig.model_validate({name: value})
                except ValueError as err:
                    reason = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)
                    raise ValueError(f"{name}: value {value!r} is not allowed ({reason})") from None
        return self

    def dimensions(self) -> dict[str, Dimension]:
        return {name: getattr(self, name) for name in TUNABLE if getattr(self, name) is not None}


class SearchConfig(StrictModel):
    num_samples: int = Field(4, ge=1, le=10_000, description="trials (random configurations) to run")
    metric: Literal["val_loss"] = Field("val_loss", description="what the scheduler and the pick minimise")
    seed: int = Field(0, description="seed of the random search, so a rerun samples the same configurations")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="trials running at once (default: as many as the resources allow)"
    )
    space: SearchSpace = Field(default_factory=SearchSpace, description="the hyperparameters searched")


class SchedulerConfig(StrictModel):
    type: Literal["asha", "fifo"] = Field("asha", description="asha: stop poor trials early; fifo: run all")
    max_epochs: int = Field(10, ge=1, le=1000, description="epochs a trial runs at most (ASHA's max_t)")
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before ASHA may stop it")
    reduction_factor: float = Field(3.0, gt=1, description="ASHA keeps the best 1/reduction_factor per rung")

    @model_validator(mode="after")
    def _grace_within_max(self) -> SchedulerConfig:
        if self.grace_period > self.max_epochs:
            raise ValueError(f"grace_period ({self.grace_period}) exceeds max_epochs ({self.max_epochs})")
        return self


class ResourcesConfig(StrictModel):
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs reserved by each trial (also its torch threads)")
    gpus_per_trial: float = Field(
        0.0, ge=0, description="GPU share per trial (0.25: four trials per GPU); 0 on a cluster without GPUs"
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
    model: ModelConfig = Field(default_factory=ModelConfig, description="base model; residual = fixed values")
    search: SearchConfig = Field(default_factory=SearchConfig, description="random search")
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
        if not self.model.residual.enabled:
            raise ValueError("model.residual.enabled is false: there is no LSTM to tune")
        return self
