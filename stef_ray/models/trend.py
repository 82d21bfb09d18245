"""Log-linear trend: log(load) = intercept + slope * years, least squares on the observed hours."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stef_ray.features import HOURS_PER_YEAR, absolute_hours


class LogLinearTrend:
    """``predict`` returns the log trend; ``r2`` is the fit's R² on log load."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.intercept = 0.0
        self.slope_per_year = 0.0
        self.reference_hours = 0.0
        self.r2 = float("nan")

    def _years(self, index: pd.DatetimeIndex) -> np.ndarray:
        return (absolute_hours(index) - self.reference_hours) / HOURS_PER_YEAR

    def fit(self, index: pd.DatetimeIndex, load_mw: np.ndarray, exog: pd.DataFrame | None = None) -> LogLinearTrend:
        """Fit on the load in MW (its log is taken here); ``exog`` is not used: the trend is the level's drift
        over the years, which the weather does not move (``exog`` is there for the ``CalendarComponent`` contract)."""
        observed = np.isfinite(load_mw)
        log_load = np.log(load_mw[observed])
        self.reference_hours = float(absolute_hours(index[:1])[0])
        years = self._years(index)[observed]
        if self.enabled and np.ptp(years) > 0:
            design = np.column_stack([np.ones_like(years), years])
            (self.intercept, self.slope_per_year), *_ = np.linalg.lstsq(design, log_load, rcond=None)
        else:
            self.intercept, self.slope_per_year = float(log_load.mean()), 0.0
        fitted = self.intercept + self.slope_per_year * years
        total = np.sum((log_load - log_load.mean()) ** 2)
        self.r2 = float(1 - np.sum((log_load - fitted) ** 2) / total) if total > 0 else 0.0
        self.intercept, self.slope_per_year = float(self.intercept), float(self.slope_per_year)
        return self

    def predict(self, index: pd.DatetimeIndex, exog: pd.DataFrame | None = None) -> np.ndarray:
        """The log trend at each hour of ``index`` (``exog`` unused, as in ``fit``)."""
        return self.intercept + self.slope_per_year * self._years(index)

    def to_state(self) -> dict:
        return {
            "enabled": self.enabled,
            "intercept": self.intercept,
            "slope_per_year": self.slope_per_year,
            "reference_hours": self.reference_hours,
            "r2": self.r2,
        }

    @classmethod
    def from_state(cls, state: dict) -> LogLinearTrend:
        trend = cls(enabled=state["enabled"])
        trend.intercept = float(state["intercept"])
        trend.slope_per_year = float(state["slope_per_year"])
        trend.reference_hours = float(state["reference_hours"])
        trend.r2 = float(state["r2"])
        return trend
