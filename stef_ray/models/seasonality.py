"""Fourier seasonality (daily, weekly, yearly harmonics) plus linear exogenous effects, fitted by ridge
regression on the detrended log load, so seasonal swings scale with the level (multiplicative in MW).

The daily shape is not one shape: the daily harmonics are also taken times a flag per day of the week
(Saturday's late rise, Monday's start-up) and, on multi-year history, times the first yearly harmonics
(winter evenings against summer afternoons).

Exogenous columns enter as: binary flags (working day, holiday) on their own and times the daily
harmonics, so a holiday gets a holiday-shaped day; numeric ones (temperature) through a hinge basis at
training quantiles (heating and cooling bends), the same for their exponential smoothing (buildings lag
the weather), times the first daily harmonics (the afternoon reacts more to heat than the night), and
each hinge times the first daily harmonics (cooling acts in the afternoon, heating morning and evening).
A working weekday between two days off (a bridge day) counts as part of a day off in the binary columns.
A 24 Dec - 1 Jan flag carries the Christmas/New Year dip, which a holiday calendar marks only on the
days themselves.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd

from stef_ray.config import SeasonalityConfig
from stef_ray.features import (
    HOURS_PER_WEEK,
    HOURS_PER_YEAR,
    is_binary,
    wall_clock_hours,
)
from stef_ray.models import seasonal_cv
from stef_ray.models.seasonal_design import calendar_design, exog_design

logger = logging.getLogger(__name__)

NS_PER_HOUR = 3_600_000_000_000
SHORT_FRAME_ROWS = 4_096  # frames up to this long (forecast requests and batches of them) use the table
CALENDAR_MARGIN_HOURS = 14 * 24
CALENDAR_TABLE_HOURS = 3 * 8_766  # three years of floats: 210 kB
PROFILES = "weekday_profiles"  # the owner of the weekday profile columns, which the cross-validation may leave out


# The value that reproduces a state saved before each option existed.
FITTED_WITHOUT = {
    "holiday_season": False,
    "daily_yearly_interaction": 0,
    "weekday_profiles": 0,
    "exog_hinge_daily_interaction": 0,
    "bridge_day_share": 0.0,
    "cross_validate": False,
    "smoothing_window_hours": 0,
}


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
        self.feature_owners: list[str] = []  # per column: the exogenous input it comes from, PROFILES, or ""
        self.dropped_exog: list[str] = []  # non-binary exogenous inputs left out by ``cross_validate``
        self.alpha = self.config.ridge_alpha  # the penalty fitted with (chosen by ``cross_validate``)
        self.notes: list[str] = []
        self._calendar_table: tuple[float, np.ndarray] | None = None  # see _calendar_values
        self._profiles_on_trial = False  # see _fit
        self._weeks = 0.0

    @property
    def warmup_hours(self) -> int:
        """Hours of exogenous values a forecast needs before the first row it computes (the smoothing's
        window less one); 0 without smoothed inputs, or with the unbounded smoothing of older bundles."""
        return max(self.config.smoothing_window_hours - 1, 0) if self.smoothed_inputs else 0

    @property
    def smoothed_inputs(self) -> list[str]:
        """The exogenous inputs whose smoothed values the forecast uses."""
        return [spec["name"] for spec in self.exog_spec
                if not spec["binary"] and spec["spans"] and spec["name"] not in self.dropped_exog]

    # ----------------------------------------------------------------- design
    def design(self, index: pd.DatetimeIndex, exog: pd.DataFrame | None, segment_rows: int | None = None) -> np.ndarray:
        """The regression's columns for each row. ``segment_rows``: the rows are several frames of that
        length end to end (smoothed exogenous terms restart at each), e.g. a batch of forecast requests."""
        exog_block, exog_names, exog_owners = exog_design(self.config, self.orders, self.exog_spec, index, exog, segment_rows)
        before, after, before_names, after_names = calendar_design(self.config, self.orders, index)
        self.feature_names = before_names + exog_names + after_names
        before_owners = [PROFILES if name.startswith("weekday") else "" for name in before_names]
        self.feature_owners = before_owners + exog_owners + [""] * len(after_names)
        return np.hstack([*before, exog_block, *after])

    # ---------------------------------------------------------------- fitting
    def _weather_inputs(self) -> list[str]:
        """The non-binary exogenous inputs (weather), which ``cross_validate`` chooses among."""
        return [spec["name"] for spec in self.exog_spec if not spec["binary"]]

    def _penalty(self, rows: int, weather_alpha: float | None = None) -> np.ndarray:
        """Per column: ``ridge_alpha`` for the calendar and binary columns, ``weather_alpha`` (default the
        fitted ``self.alpha``) for the weather columns, scaled by the rows."""
        weather_alpha = self.alpha if weather_alpha is None else weather_alpha
        weather = np.isin(np.array(self.feature_owners, dtype=object), self._weather_inputs())
        alpha = np.where(weather, weather_alpha, self.config.ridge_alpha)
        # The tiny floor keeps a constant column (no holiday-season days in training) solvable at alpha 0.
        return alpha * rows * 1e-4 + 1e-9

    def _solve(self, design: np.ndarray, target: np.ndarray, used: np.ndarray | None = None) -> None:
        """Ridge fit; ``used`` (a mask over the columns) leaves the others out (coefficient 0)."""
        standardized = self._standardize(design)
        self._solve_gram(standardized.T @ standardized, standardized.T @ target, float(target.mean()), len(target), used)

    def _standardize(self, design: np.ndarray) -> np.ndarray:
        self.column_mean = design.mean(axis=0)
        scale = design.std(axis=0)
        self.column_scale = np.where(scale > 1e-12, scale, 1.0)
        return (design - self.column_mean) / self.column_scale

    def _solve_gram(self, gram: np.ndarray, cross: np.ndarray, target_mean: float, rows: int,
                    used: np.ndarray | None) -> None:
        """The ridge from the standardized columns' Gram matrix and their products with the target (the
        columns are centred, so the intercept is the target's mean)."""
        self._calendar_table = None  # it holds the old coefficients' numbers
        self.intercept = target_mean
        self.coef = np.zeros(len(cross))
        used = np.ones(len(cross), dtype=bool) if used is None else used
        if used.any():
            grid = np.ix_(used, used)
            self.coef[used] = np.linalg.solve(gram[grid] + np.diag(self._penalty(rows)[used]), cross[used])

    def _cross_validated_solve(self, design: np.ndarray, target: np.ndarray) -> None:
        """Fit with the weather columns' penalty and inputs chosen by a time-blocked cross-validation
        (``seasonal_cv``), reusing its Gram matrices for the final fit (the whole fit then costs about one
        pass over the data, as without)."""
        grams = seasonal_cv.fold_grams(self._standardize(design), target, self.config.cv_folds)
        candidates = self._weather_inputs() + ([PROFILES] if self._profiles_on_trial else [])
        self.alpha, dropped = seasonal_cv.choose_inputs(
            grams, self.feature_owners, candidates, sorted({*self.config.cv_alphas, self.config.ridge_alpha}),
            self._penalty)
        folds = self.config.cv_folds
        for name in dropped:
            if name != PROFILES:
                self.notes.append(f"exogenous input '{name}' left out (seasonality and residual models): its "
                                  f"columns did not lower the error of a {folds}-fold time-blocked cross-validation")
                logger.info(self.notes[-1])
        self.dropped_exog = sorted(set(dropped) - {PROFILES})
        if self._profiles_on_trial:
            verdict = "left out" if PROFILES in dropped else "kept"
            self.notes.append(f"weekday profiles {verdict} by {folds}-fold time-blocked cross-validation "
                              f"({self._weeks:.0f} weeks of history < min_weeks_for_profiles)")
            logger.info(self.notes[-1])
        if self._weather_inputs():
            self.notes.append(f"weather columns' ridge penalty {self.alpha:g}, chosen by {folds}-fold time-blocked "
                              "cross-validation (cross_validate)")
        used = ~np.isin(np.array(self.feature_owners, dtype=object), dropped)
        self._solve_gram(grams.gram[1:, 1:], grams.cross[1:], float(target.mean()), len(target), used)

    def _prepare_exog(self, index: pd.DatetimeIndex, exog: pd.DataFrame | None, observed: np.ndarray) -> None:
        self.exog_spec = []
        if exog is None or not self.config.use_exog:
            return
        for name in exog.columns:
            values = exog[name].to_numpy(dtype=float)[observed]
            if is_binary(values):
                weekday = index[observed].dayofweek < 5
                # A working-day column is mostly 1 on weekdays and marks a day off with 0; a holiday column
                # marks it with 1.
                off_value = 0.0 if np.nanmean(values[weekday]) > 0.5 else 1.0
                self.exog_spec.append({"name": name, "binary": True, "interaction": self.orders[0],
                                       "off_value": off_value})
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
        self._fit(index, detrended_log, exog)
        return self

    def _fit(self, index: pd.DatetimeIndex, detrended_log: np.ndarray, exog: pd.DataFrame | None) -> np.ndarray:
        """Fit; returns the design matrix it was fitted on."""
        years = (index[-1] - index[0]) / pd.Timedelta(hours=HOURS_PER_YEAR)
        yearly = self.config.yearly_order
        if years < self.config.min_years_for_yearly and yearly:
            self.notes.append(
                f"yearly terms dropped: {years:.1f} years of history < {self.config.min_years_for_yearly:g}"
            )
            logger.info(self.notes[-1])
            yearly = 0
        self.orders = (self.config.daily_order, self.config.weekly_order, yearly)
        self._weeks = weeks = (index[-1] - index[0]) / pd.Timedelta(hours=HOURS_PER_WEEK)
        shaped = {"weekday_profiles": 0, "exog_hinge_daily_interaction": 0}
        c = self.config
        self._profiles_on_trial = False
        if weeks < c.min_weeks_for_profiles and any(getattr(c, key) for key in shaped):
            # On a few weeks these many columns can over-fit. With the cross-validation the weekday profiles
            # stay on trial instead, kept only where they lower its error: on 7-11 weeks of England & Wales
            # demand (forecast::taylor) they were worth a fifth of the error, which a fixed cut-off threw away.
            self._profiles_on_trial = bool(
                c.cross_validate and c.weekday_profiles and len(index) >= c.cv_folds * HOURS_PER_WEEK)
            dropped = {"exog_hinge_daily_interaction": 0} if self._profiles_on_trial else shaped
            # Kept in the saved config, so a loaded model builds the same columns.
            self.config = c.model_copy(update=dropped)
            what = "temperature x daily shapes" if self._profiles_on_trial else "weekday profiles and temperature x daily shapes"
            self.notes.append(f"{what} dropped: {weeks:.0f} weeks of history < {c.min_weeks_for_profiles:g}")
            logger.info(self.notes[-1])
        observed = np.isfinite(detrended_log)
        self._prepare_exog(index, exog, observed)
        self.dropped_exog = []
        self.alpha = self.config.ridge_alpha  # until the cross-validation chooses one
        if self.config.grid_search:
            self.orders = self._grid_search(index, detrended_log, exog, allow_yearly=yearly > 0)
        design = self.design(index, exog)
        usable = observed & np.isfinite(design).all(axis=1)
        enough = usable.sum() >= self.config.cv_folds * HOURS_PER_WEEK  # a week per fold at least
        if self.config.cross_validate and (self._weather_inputs() or self._profiles_on_trial) and enough:
            self._cross_validated_solve(design[usable], detrended_log[usable])
        else:
            used = None
            if self._profiles_on_trial:  # without rows enough to try them (gaps): left out, as without the trial
                used = np.array(self.feature_owners) != PROFILES
                self.notes.append(f"weekday profiles left out: {usable.sum()} usable hours, too few to cross-validate")
                logger.info(self.notes[-1])
            self._solve(design[usable], detrended_log[usable], used)
        return design

    def fit_predict(
        self, index: pd.DatetimeIndex, detrended_log: np.ndarray, exog: pd.DataFrame | None = None
    ) -> np.ndarray:
        """``fit`` then ``predict`` on the same rows, building the design once (half a large fit's time)."""
        return self._apply(self._fit(index, detrended_log, exog))

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
        # = intercept + ((design - mean) / scale) @ coef, without two design-sized temporaries
        weights = self.coef / self.column_scale
        return design @ weights + (self.intercept - self.column_mean @ weights)

    def predict(
        self, index: pd.DatetimeIndex, exog: pd.DataFrame | None = None, segment_rows: int | None = None
    ) -> np.ndarray:
        """Seasonal log component per row; ``segment_rows`` as in ``design``.

        Short frames (forecast requests) take the calendar columns' part of the sum from a table by wall-clock
        hour (``_calendar_values``); the numbers equal the whole design's to rounding (~1e-15)."""
        if 0 < len(index) <= SHORT_FRAME_ROWS and len(self.coef):
            calendar = self._calendar_values(wall_clock_hours(index))
            if calendar is not None:
                exog_block, *_ = exog_design(self.config, self.orders, self.exog_spec, index, exog, segment_rows)
                weights = self.coef / self.column_scale
                n_after = 1 if self.config.holiday_season else 0
                n_before = len(weights) - exog_block.shape[1] - n_after
                constant = self.intercept - self.column_mean @ weights
                return calendar + exog_block @ weights[n_before:n_before + exog_block.shape[1]] + constant
        return self._apply(self.design(index, exog, segment_rows))

    def _calendar_values(self, wall: np.ndarray) -> np.ndarray | None:
        """The calendar columns' part of the prediction (seasonal harmonics, daily shapes, holiday season)
        for wall-clock hours ``wall``, from a table that covers the hours asked for so far plus two weeks
        either side, up to CALENDAR_TABLE_HOURS. None where the table cannot serve them (too wide a span;
        hours off the table's whole-hour grid, e.g. a half-hour time zone mixed with a whole-hour one).

        Why: these columns are half of a request's design, they depend on the hour alone, and forecast
        requests come back to the same hours (the origin moves an hour at a time; many clients ask for the
        same one). A table lookup costs microseconds; the design's calendar part, a millisecond.
        """
        table = self._calendar_table
        found = _look_up(table, wall)
        if found is not None:
            return found
        lo, hi = float(wall.min()) - CALENDAR_MARGIN_HOURS, float(wall.max()) + CALENDAR_MARGIN_HOURS
        if hi - lo + 1 > CALENDAR_TABLE_HOURS:
            return None
        if table is not None and (table[0] - lo) % 1 == 0:  # the same hour grid: keep what it covers, if it fits
            wider = min(lo, table[0]), max(hi, table[0] + len(table[1]) - 1)
            if wider[1] - wider[0] + 1 <= CALENDAR_TABLE_HOURS:
                lo, hi = wider
        hours = lo + np.arange(int(hi - lo) + 1, dtype=float)
        # A naive index whose wall clock is ``hours``: the calendar columns read nothing else.
        index = pd.DatetimeIndex(np.round(hours * NS_PER_HOUR).astype(np.int64).view("datetime64[ns]"))
        before, after, _, _ = calendar_design(self.config, self.orders, index)
        weights = self.coef / self.column_scale
        n_before = sum(block.shape[1] for block in before)
        values = np.hstack(before) @ weights[:n_before]
        if after:
            values = values + np.hstack(after) @ weights[len(weights) - sum(block.shape[1] for block in after):]
        values.flags.writeable = False
        self._calendar_table = (lo, values)  # one assignment: a concurrent reader sees the old table or the new
        return _look_up(self._calendar_table, wall)

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
            "alpha": self.alpha,
            "dropped_exog": self.dropped_exog,
        }

    @classmethod
    def from_state(cls, state: dict) -> FourierSeasonality:
        # Bundles written before an option existed were fitted without it: absent keys mean "off".
        model = cls(SeasonalityConfig.model_validate({**FITTED_WITHOUT, **state["config"]}))
        model.orders = tuple(int(o) for o in state["orders"])
        model.exog_spec = state["exog_spec"]
        model.column_mean = np.asarray(state["column_mean"], dtype=float)
        model.column_scale = np.asarray(state["column_scale"], dtype=float)
        model.coef = np.asarray(state["coef"], dtype=float)
        model.intercept = float(state["intercept"])
        model.feature_names = list(state["feature_names"])
        model.notes = list(state.get("notes", []))
        model.alpha = float(state.get("alpha", model.config.ridge_alpha))
        model.dropped_exog = list(state.get("dropped_exog", []))
        return model


def _look_up(table: tuple[float, np.ndarray] | None, wall: np.ndarray) -> np.ndarray | None:
    """``table``'s values at wall-clock hours ``wall``; None unless all of them are on it."""
    if table is None:
        return None
    start, values = table
    offsets = wall - start
    positions = offsets.astype(np.int64)
    if positions.min() < 0 or positions.max() >= len(values) or not np.array_equal(positions, offsets):
        return None
    return values[positions]
