"""What fitting a hybrid records (``HybridModel.training``), typed: the window it saw, the validation that
judged its residual models, the neural residual's keep-or-drop evidence, and the calibration state that
forecasting reads back (``point_log_adjust``, ``val_mean_abs_log_error``). It is the bundle manifest's
``training`` section.

Keys an older or newer writer added are kept (``extra="allow"``): formats 1 to 6 recorded the LSTM's
``epochs_run``, ``parameters`` and ``val_loss`` at the top level and ``lstm_kept`` from format 3 on.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class NeuralRecord(BaseModel):
    """The neural residual's trial: trained or not (``why``), and the paired gate that kept or dropped it."""

    model_config = ConfigDict(extra="allow")

    architecture: str | None = Field(None, description="lstm, mlp, ...")
    ensemble: int = Field(1, description="nets averaged")
    kept: bool = Field(False, description="whether it adds to the forecast")
    days: int = Field(0, description="validation days the gate compared on")
    gain: float = Field(0.0, description="paired gain in mean |log error| over the layers beneath it")
    gain_se: float = Field(math.inf, description="the gain's standard error over the days")
    mae_without: float = Field(math.nan, description="mean |log error| of the ridges and trees on those days")
    mae_with: float = Field(math.nan, description="the same with the net added")
    epochs_run: int = Field(0, description="epochs over all the walked-forward nets")
    why: str | None = Field(None, description="why no net was trained (too short a history)")
    parameters: int | None = None
    stopped_early: bool | None = None
    stop_loss: float | None = Field(None, description="the last net's best early-stopping loss")
    blocks: int | None = Field(None, description="validation blocks a net forecast")

    @property
    def trained(self) -> bool:
        return self.why is None


class ValidationRecord(BaseModel):
    """The validation blocks every residual model is judged on."""

    model_config = ConfigDict(extra="allow")

    blocks: list[list[str]] = Field(default_factory=list, description="[first, last] hour (ISO) of each block")
    windows: int = 0
    folds_without_history: int = Field(0, description="folds left out: too little history before them")


class TrainingRecord(BaseModel):
    """``HybridModel.training``, and the bundle manifest's ``training`` section."""

    model_config = ConfigDict(extra="allow")

    start: str | None = Field(None, description="first training hour (ISO)")
    end: str | None = Field(None, description="last training hour (ISO)")
    hours: int | None = Field(None, description="hours in the training window")
    observed_hours: int | None = Field(None, description="hours with load")
    timezone: str | None = Field(None, description="zone of the training index")
    trend_r2: float | None = Field(None, description="the trend's R² on log load")
    fourier_orders: list[int] | None = Field(None, description="daily, weekly and yearly orders")
    seasonality_ridge_alpha: float | None = None
    exog_left_out: list[str] = Field(default_factory=list, description="inputs the seasonality's cross-validation dropped")
    validation: ValidationRecord | None = None
    boosted: str | None = Field(None, description="why the gradient-boosted trees are off, when they are")
    linear_season_weighting: str | None = Field(None, description="whether the ridges' windows are weighted by season")
    neural: NeuralRecord | None = Field(None, description="the neural residual's record: kept or dropped, and why")
    lstm_kept: bool | None = Field(None, description="formats 3 to 6: whether the LSTM was kept")
    val_mape_log_approx: float | None = Field(None, description="mean absolute log error (%) on the validation blocks")
    val_mean_abs_log_error: float | None = Field(None, description="the same as a fraction: the intervals' scale")
    point_log_adjust: list[float] | None = Field(None, description="per lead hour: the MAPE point below the median (log)")

    def as_json(self) -> dict:
        """The manifest's section: only what was recorded (an unset key stays absent, as older formats wrote)."""
        return self.model_dump(exclude_none=True)
