"""The shape of a forecast, in one place: how many hours of load a forecast reads before its origin, how
many it forecasts, which quantile levels it issues and at which local hours it is issued. Every layer reads
it from here (``ModelConfig.forecast``): the residual models' windows, the calibration, the backtest's
origins, the HTTP schema, the stored points and the plots. As OpenSTEF's ``ForecasterConfig(quantiles,
horizons)`` and neuralforecast's ``h``/``input_size``, it is the first thing a model is given."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ForecastSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    lookback_hours: int = Field(168, ge=24, le=24 * 28, description="hours of load before the origin that the "
                                "residual models read (the history window)")
    horizon_hours: int = Field(24, ge=1, le=48, description="hours forecast from each origin")
    quantiles: list[float] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9],
        description="quantile levels issued with each forecast, from conformal calibration on validation errors, "
        "per lead hour (and origin hour: `calibration_hour_width`); the widest central pair is the band that "
        "coverage is reported for",
    )
    issue_hours: list[int] = Field(
        default_factory=lambda: [0], description="local hours of the day at which the forecast is issued: the "
        "backtest's origins (each day at each of them) and the day-ahead view of the dashboards. Requests to "
        "the HTTP app may use any origin")

    @field_validator("quantiles")
    @classmethod
    def _quantiles_in_range(cls, values: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in values):
            raise ValueError("every quantile must lie strictly between 0 and 1")
        return sorted(values)

    @field_validator("issue_hours")
    @classmethod
    def _hours_of_a_day(cls, values: list[int]) -> list[int]:
        if not values or any(not 0 <= h <= 23 for h in values) or len(set(values)) != len(values):
            raise ValueError("give one or more distinct local hours from 0 to 23")
        return sorted(values)
