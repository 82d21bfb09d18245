"""Fourier seasonality (daily, weekly, yearly harmonics) plus linear exogenous effects, fitted by ridge
regression on the detrended log load, so seasonal swings scale with the level (multiplicative in MW).

Exogenous columns enter as: binary flags (working day, holiday) on their own and times the daily
harmonics, so a holiday gets a holiday-shaped day; numeric ones (temperature) through a hinge basis at
training quantiles (heating and cooling bends), the same for their exponential smoothing (buildings lag
the weather), and times the first daily harmonics (the afternoon reacts more to heat than the night). A 24 Dec - 1 Jan flag carries the
Christmas/New Year dip, which a holiday calendar marks only on the days themselves.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd

from stef_ray.config import SeasonalityConfig
from stef_ray.features import (
    HOURS_PER_DAY,
    HOURS_PER_YEAR,
    exponential_smoothing,
    fourier_terms,
    hinge_basis,
    holiday_season_flag,
    is_binary,
    seasonal_terms,
    wall_clock_hours,
)

logger = logging.getLogger(__name__)


class FourierSeasonality:
    """``predict(index, exog)`` returns the seasonal log component for each hour of ``index``."""

    def __init__(self, config: SeasonalityConfig | None = None) -> None:
        self.config = config or SeasonalityConfig()
        self.orders = (self.config.daily_order, self.config.weekly_order, self.config.yearly_order)
        self.exog_spec: list[dict] = []  # per column: name, binary, knots
        self.column_mean = np.empty(0)
        self.column_scale = np.empty(0)
        self.coef = np.empty(0)
        self.intercept = 0.0
        self.feature_names: list[str] = []
        self.notes: list[str] = []

    # ----------------------------------------------------------------- design
    def _exog_block(
        self, index: pd.DatetimeIndex, exog: pd.DataFrame | None, segment_rows: int | None = None
    ) -> tuple[np.ndarray, list[str]]:
        if not self.exog_spec:
            return np.empty((len(index), 0)), []
        wall = wall_clock_hours(index)
        daily = fourier_terms(wall, HOURS_PER_DAY, max(self.orders[0], self.config.exog_daily_interaction, 1))
        blocks, names = [], []
        for spec in self.exog_spec:
            name = spec["name"]
            values = exog[name].to_numpy(dtype=float)
            if spec["binary"]:
                inter = _paired(daily, spec["interaction"])
                blocks += [values[:, None], values[:, None] * inter]
                names += [name] + [f"{name}_x_daily{i}" for i in range(inter.shape[1])]
            else:
                blocks.append(hinge_basis(values, spec["knots"]))
                names += [f"{name}_hinge{i}" for i in range(len(spec["knots"]) + 1)]
                for span in spec["spans"]:
                    smooth = exponential_smoothing(values, span, segment_rows)
                    blocks.append(hinge_basis(smooth, spec["knots"]))
                    names += [f"{name}_ewm{span}_hinge{i}" for i in range(len(spec["knots"]) + 1)]
                inter = _paired(daily, spec["interaction"])
                blocks.append(values[:, None] * inter)
                names += [f"{name}_x_daily{i}" for i in range(inter.shape[1])]
        return np.hstack(blocks), names

    def design(self, index: pd.DatetimeIndex, exog: pd.DataFrame | None, segment_rows: int | None = None) -> np.ndarray:
        """The regression's columns for each row. ``segment_rows``: the rows are several frames of that
        length end to end (smoothed exogenous terms restart at each), e.g. a batch of forecast requests."""
        seasonal, seasonal_names = seasonal_terms(index, *self.orders)
        exog_block, exog_names = self._exog_block(index, exog, segment_rows)
        blocks, self.feature_names = [seasonal, exog_block], seasonal_names + exog_names
        if self.config.holiday_season:
            blocks.append(holiday_season_flag(index)[:, None])
            self.feature_names.append("holiday_season")
        return np.hstack(blocks)

    # ---------------------------------------------------------------- fitting
    def _solve(self, design: np.ndarray, target: np.ndarray) -> None:
        self.column_mean = design.mean(axis=0)
        scale = design.std(axis=0)
        self.column_scale = np.where(scale > 1e-12, scale, 1.0)
        standardized = (design - self.column_mean) / self.column_scale
        self.intercept = float(target.mean())
        # The tiny floor keeps a constant column (no holiday-season days in training) solvable at alpha 0.
        penalty = self.config.ridge_alpha * len(target) * 1e-4 + 1e-9
        gram = standardized.T @ standardized + penalty * np.eye(design.shape[1])
        self.coef = np.linalg.solve(gram, standardized.T @ (target - self.intercept)) if design.shape[1] else np.empty(0)

    def _prepare_exog(self, exog: pd.DataFrame | None, observed: np.ndarray) -> None:
        self.exog_spec = []
        if exog is None or not self.config.use_exog:
            return
        for name in exog.columns:
            values = exog[name].to_numpy(dtype=float)[observed]
            if is_binary(values):
                self.exog_spec.append({"name": name, "binary": True, "interaction": self.orders[0]})
            else:
                quantiles = np.linspace(0, 1, self.config.temperature_knots + 2)[1:-1]
                knots = [float(k) for k in np.nanquantile(values, quantiles)] if len(quantiles) else []
                self.exog_spec.append({
                    "name": name, "binary": False, "knots": knots,
                    "spans": list(self.config.smoothing_hours), "interaction": self.config.exog_daily_interaction,
                })

    def fit(
        self, index: pd.DatetimeIndex, detrended_log: np.ndarray, exog: pd.DataFrame | None = None
    ) -> FourierSeasonality:
        years = (index[-1] - index[0]) / pd.Timedelta(hours=HOURS_PER_YEAR)
        yearly = self.config.yearly_order
        if years < self.config.min_years_for_yearly and yearly:
            self.notes.append(
                f"yearly terms dropped: {years:.1f} years of history < {self.config.min_years_for_yearly:g}"
            )
            logger.info(self.notes[-1])
            yearly = 0
        self.orders = (self.config.daily_order, self.config.weekly_order, yearly)
        observed = np.isfinite(detrended_log)
        self._prepare_exog(exog, observed)
        if self.config.grid_search:
            self.orders = self._grid_search(index, detrended_log, exog, allow_yearly=yearly > 0)
        design = self.design(index, exog)
        usable = observed & np.isfinite(design).all(axis=1)
        self._solve(design[usable], detrended_log[usable])
        return self

    def _grid_search(self, index, detrended_log, exog, allow_yearly: bool) -> tuple[int, int, int]:
        yearly_grid = self.config.yearly_grid if allow_yearly else [0]
        combos = list(itertools.product(self.config.daily_grid, self.config.weekly_grid, yearly_grid))
        split = int(len(index) * 0.8)
        best, best_mse = self.orders, np.inf
        for orders in combos:
            self.orders = orders
            design = self.design(index, exog)
            usable = np.isfinite(detrended_log) & np.isfinite(design).all(axis=1)
            train, valid = usable.copy(), usable.copy()
            train[split:], valid[:split] = False, False
            self._solve(design[train], detrended_log[train])
            mse = float(np.mean((self._apply(design[valid]) - detrended_log[valid]) ** 2))
            if mse < best_mse:
                best, best_mse = orders, mse
        logger.info("Fourier grid search over %d combinations: Kd=%d Kw=%d Ky=%d", len(combos), *best)
        return best

    def _apply(self, design: np.ndarray) -> np.ndarray:
        return self.intercept + ((design - self.column_mean) / self.column_scale) @ self.coef

    def predict(
        self, index: pd.DatetimeIndex, exog: pd.DataFrame | None = None, segment_rows: int | None = None
    ) -> np.ndarray:
        """Seasonal log component per row; ``segment_rows`` as in ``design``."""
        return self._apply(self.design(index, exog, segment_rows))

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict:
        return {
            "config": self.config.model_dump(),
            "orders": list(self.orders),
            "exog_spec": self.exog_spec,
            "column_mean": self.column_mean.tolist(),
            "column_scale": self.column_scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "feature_names": self.feature_names,
            "notes": self.notes,
        }

    @classmethod
    def from_state(cls, state: dict) -> FourierSeasonality:
        # Bundles written before the holiday-season flag existed were fitted without it.
        model = cls(SeasonalityConfig.model_validate({"holiday_season": False, **state["config"]}))
        model.orders = tuple(int(o) for o in state["orders"])
        model.exog_spec = state["exog_spec"]
        model.column_mean = np.asarray(state["column_mean"], dtype=float)
        model.column_scale = np.asarray(state["column_scale"], dtype=float)
        model.coef = np.asarray(state["coef"], dtype=float)
        model.intercept = float(state["intercept"])
        model.feature_names = list(state["feature_names"])
        model.notes = list(state.get("notes", []))
        return model


def _paired(daily: np.ndarray, order: int) -> np.ndarray:
    """The first ``order`` daily harmonics (sin and cos) out of a (n, 2K) Fourier block."""
    half = daily.shape[1] // 2
    order = min(order, half)
    return np.hstack([daily[:, :order], daily[:, half : half + order]])
