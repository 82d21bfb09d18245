"""The hybrid: log load = trend + seasonality + residual, each a component fitted on what the previous
left over. Forecasts are combined in log space and reported in MW as an additive split:

    trend_mw       = exp(trend)
    seasonality_mw = exp(trend + seasonality) - trend_mw
    residual_mw    = forecast_mw - exp(trend + seasonality)
    forecast_mw    = exp(trend + seasonality + residual) * the point move below
                   = trend_mw + seasonality_mw + residual_mw

Quantiles come from conformal calibration: quantiles of the validation errors in log space per lead hour
and local origin hour (the spread per origin hour, around a centre pooled over all of them): a lead hour's
errors are as wide as the time of day it falls on makes them, the afternoon's wider than the night's.
Errors come in spells (heat waves, holidays), so where the frame holds the days before an origin the
offsets are scaled by how large the last daily forecasts' errors were against the validation errors.

The point forecast is, by default (``point_forecast: mape``), not the median but the value with the least
expected absolute percentage error: for an error spread s in log space that is the median times
exp(-s²) (Gneiting 2011, "Making and evaluating point forecasts": under MAPE the optimal point is the
median of the density f(y)/y; for a log-normal, exp(mu - s²)). s comes per lead hour from the validation
errors' P10-P90 width, times the interval scale, so the point moves down where forecasts are uncertain
(the afternoon, a spell of large errors) and hardly at lead 1. The residual's MW share carries the move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stef_ray.config import ModelConfig
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import InsufficientHistoryError
from stef_ray.features import (
    CALENDAR_CHANNELS,
    DAYS_PER_YEAR,
    calendar_inputs,
    is_binary,
    season_weights,
    wall_clock_days,
    wall_clock_hours,
)
from stef_ray.models.crossfit import GAP, STOP, TRAIN, VALID, FoldPlan, plan_folds
from stef_ray.models.residual_boosted import HISTORY_HOURS, BoostedResidual
from stef_ray.models.residual_linear import HOURS_PER_DAY, LinearResidual, origin_hours
from stef_ray.models.residual_neural import EpochCallback, NeuralResidual, valid_origins
from stef_ray.models.seasonality import FourierSeasonality
from stef_ray.models.trend import LogLinearTrend
from stef_ray.quantiles import quantile_column

logger = logging.getLogger(__name__)

P10_P90_WIDTH_IN_SIGMAS = 2.5631  # a normal's P90 - P10, in standard deviations
MIN_FORWARD_DAYS = 7  # days of windows before a fold, at least, for its out-of-sample ridges
MIN_NEURAL_WINDOWS = 24 * 7  # hours of training origins before a validation block, at least, for a net to forecast it
MIN_CALIBRATION_WINDOWS = 24  # per origin hour's share of the validation windows, else the pooled values
SEGMENTS_PER_CALL = 64  # origins forecast together (a backtest's many origins: bounded memory)


@dataclass
class ComponentForecast:
    """Log-space components for a batch of origins; arrays of shape (origins, horizon)."""

    trend: np.ndarray
    seasonality: np.ndarray
    residual: np.ndarray
    interval_scale: np.ndarray | None = None  # (origins,) factor on the quantile offsets; None = 1
    origin_hour: np.ndarray | None = None  # (origins,) local hour 0-23: picks the per-hour calibration

    @property
    def final(self) -> np.ndarray:
        return self.trend + self.seasonality + self.residual


@dataclass
class ResidualWindows:
    """The residual models' training material: the scaled input array, the cross-fitted period (folds,
    roles, the linear layers' out-of-fold forecasts) and the served ridges' windows."""

    series: np.ndarray  # (hours, channels) float32
    plan: FoldPlan
    linear_origins: np.ndarray  # the served ridges' and trees' training origins
    linear_weight: np.ndarray | None = None  # per window of linear_origins; None: equal
    out_of_fold: np.ndarray | None = None  # (len(plan.origins), horizon) scaled; zeros without linear layers
    neural: np.ndarray | None = None  # (len(plan.origins), horizon): each validation block's walked-forward net
    neural_scored: np.ndarray | None = None  # (len(plan.origins),) which rows a walked-forward net forecast
    days: np.ndarray | None = None  # local day number of every row (the gate pairs by validation day)

    def rows(self, role: int) -> np.ndarray:
        return np.flatnonzero(self.plan.role == role)


class HybridModel:
    """Trend + Fourier seasonality + residual models (ridges, trees, a neural residual), fitted in that order
    on one hourly series."""

    def __init__(self, config: ModelConfig | None = None, exog: Sequence[str] = ()) -> None:
        self.config = config or ModelConfig()
        self.exog = list(exog)
        self.trend = LogLinearTrend(self.config.trend.enabled)
        self.seasonality = FourierSeasonality(self.config.seasonality)
        self.neural: NeuralResidual | None = None
        self.linear: LinearResidual | None = None
        self.boosted: BoostedResidual | None = None
        self.scaler: dict = {}
        self.quantile_offsets: dict[str, list[float]] = {}
        self.training: dict = {}

    # -------------------------------------------------------------- helpers
    @property
    def lookback(self) -> int:
        return self.config.residual.lookback_hours

    @property
    def horizon(self) -> int:
        return self.config.residual.horizon_hours

    @property
    def history_hours(self) -> int:
        """Hours before an origin a forecast reads: the lookback, and before it the smoothing's warm-up
        for the exogenous inputs (see ``FourierSeasonality.warmup_hours``). A frame holding them forecasts
        exactly as the whole history does."""
        return self.lookback + self.seasonality.warmup_hours

    def history_needed(self) -> str:
        """What ``history_hours`` holds, in words, for the one-line errors of the CLI and the HTTP app."""
        warmup = self.history_hours - self.lookback
        why = (f" ({self.lookback} of load, and {warmup} more of {', '.join(self.seasonality.smoothed_inputs)} "
               "for its smoothing)" if warmup else "")
        return f"the last {self.history_hours} hours before the origin{why}"

    def _exog_frame(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        return frame[self.exog] if self.exog else None

    def base_components(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Log trend and log seasonality for every row of ``frame`` (needs only time and exog)."""
        return self.trend.predict(frame.index), self.seasonality.predict(frame.index, self._exog_frame(frame))

    def _fit_scaler(self, residual_log: np.ndarray, frame: pd.DataFrame, season_log: np.ndarray) -> None:
        exog = frame[self.exog].to_numpy(dtype=float) if self.exog else np.empty((len(frame), 0))
        self.scaler = {
            "residual_mean": float(np.nanmean(residual_log)),
            "residual_std": float(np.nanstd(residual_log)) or 1.0,
            "exog_mean": np.nanmean(exog, axis=0).tolist() if exog.size else [],
            "exog_std": [float(s) or 1.0 for s in np.nanstd(exog, axis=0)] if exog.size else [],
            "season_mean": float(np.nanmean(season_log)),
            "season_std": float(np.nanstd(season_log)) or 1.0,
        }

    def residual_series(self, frame: pd.DataFrame, residual_log: np.ndarray, season_log: np.ndarray) -> np.ndarray:
        """The residual models' input array: scaled residual, scaled seasonal level, scaled exog, calendar."""
        s = self.scaler
        columns = [
            (residual_log - s["residual_mean"]) / s["residual_std"],
            (season_log - s["season_mean"]) / s["season_std"],
        ]
        for i, name in enumerate(self.exog):
            if name in self.seasonality.dropped_exog:
                # An input the seasonality's cross-validation found to carry nothing about load would only
                # give the ridges and trees chance patterns to fit; a zero channel keeps the array's shape.
                columns.append(np.zeros(len(frame)))
                continue
            columns.append((frame[name].to_numpy(dtype=float) - s["exog_mean"][i]) / s["exog_std"][i])
        return np.column_stack([*columns, calendar_inputs(frame.index)]).astype(np.float32)

    @property
    def channel_names(self) -> list[str]:
        return ["residual", "seasonal_level", *self.exog, *CALENDAR_CHANNELS]

    # -------------------------------------------------------------- fitting
    def fit_base(self, data: HourlyData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fit trend and seasonality; return (trend_log, season_log, residual_log) on the training rows."""
        frame = data.frame
        min_hours = self.lookback + self.horizon + 24 * (self.config.residual.validation_days + 7)
        observed = int(np.isfinite(frame[LOAD].to_numpy()).sum())
        if observed < min_hours:
            raise InsufficientHistoryError(
                f"only {observed} hours of load to train on; at least {min_hours} are needed "
                f"({min_hours // 24} days: lookback, horizon, validation and a week of training windows)"
            )
        load = frame[LOAD].to_numpy(dtype=float)
        self.trend.fit(frame.index, load)
        trend_log = self.trend.predict(frame.index)
        detrended = np.log(load) - trend_log
        season_log = self.seasonality.fit_predict(frame.index, detrended, self._exog_frame(frame))
        residual_log = detrended - season_log
        self.training = {
            "start": frame.index[0].isoformat(),
            "end": frame.index[-1].isoformat(),
            "hours": len(frame),
            "observed_hours": observed,
            "timezone": str(frame.index.tz),
            "trend_r2": self.trend.r2,
            "fourier_orders": list(self.seasonality.orders),
            "seasonality_ridge_alpha": self.seasonality.alpha,
            "exog_left_out": list(self.seasonality.dropped_exog),
        }
        return trend_log, season_log, residual_log

    def residual_windows(self, data: HourlyData, season_log: np.ndarray, residual_log: np.ndarray) -> ResidualWindows:
        """Scale the residual series, plan the folds and validation blocks over the last ``train_days`` and
        set up (unfitted) the ridges and trees."""
        frame = data.frame
        self._fit_scaler(residual_log, frame, season_log)
        series = self.residual_series(frame, residual_log, season_log)
        valid = np.isfinite(series).all(axis=1)
        c = self.config.residual
        origins = valid_origins(valid, c.lookback_hours, c.horizon_hours)
        end = len(frame) - c.horizon_hours + 1
        plan = plan_folds(origins, end, c.train_days, c.validation_blocks, c.validation_days, c.stop_days,
                          c.lookback_hours, c.horizon_hours)
        if c.window_stride_hours > 1:
            thin = (plan.role == TRAIN) & ((plan.origins - plan.origins[0]) % c.window_stride_hours != 0)
            plan.role[thin] = GAP
        train, val = plan.of(TRAIN), plan.of(VALID)
        if len(val) < 24 or (c.enabled and len(train) < 24):
            raise InsufficientHistoryError(
                f"{len(train)} training and {len(val)} validation windows without gaps; at least 24 of each "
                "are needed: give more history or fewer/shorter gaps"
            )
        linear_origins = origins if not c.linear_train_days else origins[origins >= end - 24 * c.linear_train_days]
        windows = ResidualWindows(series, plan, linear_origins, days=wall_clock_days(frame.index))
        self.training["validation"] = {
            "blocks": [[frame.index[a].isoformat(), frame.index[min(b, len(frame)) - 1].isoformat()]
                       for a, b in plan.block_bounds],
            "windows": len(val),
        }
        if c.linear:
            self.linear = self._new_linear()
        if c.linear and c.boosted_weight > 0:  # the trees partner the ridges: without them, none
            weather = [name for name in self.exog if not is_binary(frame[name].to_numpy(dtype=float))]
            # Weather the seasonality's cross-validation left out is a zero channel: nothing to respond to.
            kept = [name for name in weather if name not in self.seasonality.dropped_exog]
            if c.lookback_hours < HISTORY_HOURS:
                self.training["boosted"] = f"off: lookback_hours {c.lookback_hours} < {HISTORY_HOURS}, the trees' history"
            elif not weather:
                # What the trees add is a non-linear response to weather; on load and calendar alone they
                # only add noise to the ridges (PJM 2016: 3.199 % against 3.174 % for the ridges alone).
                self.training["boosted"] = "off: no non-binary exogenous input (weather) for the trees to respond to"
            elif not kept:
                self.training["boosted"] = ("off: the seasonality's cross-validation left out every weather input, "
                                            "so the trees would have only load and calendar (which added noise)")
            else:
                self.boosted = self._new_boosted()
        if self.linear is not None:
            windows.linear_weight = self._season_weight(frame.index, linear_origins, linear_origins, frame.index[-1])
        return windows

    def _new_linear(self) -> LinearResidual:
        c = self.config.residual
        return LinearResidual(c.lookback_hours, c.horizon_hours, c.linear_alpha, c.linear_robust_iterations,
                              c.linear_hour_width if c.linear_hour_width >= 0 else None, self._hour_channels)

    def _new_boosted(self) -> BoostedResidual:
        c = self.config.residual
        return BoostedResidual(c.horizon_hours, self.channel_names,
                               (self.scaler["residual_std"], self.scaler["season_std"]),
                               c.boosted_iterations, max_rows=c.boosted_max_rows, seed=c.seed)

    def cross_fit(self, windows: ResidualWindows, index: pd.DatetimeIndex) -> None:
        """The linear layers' out-of-sample forecasts (``windows.out_of_fold``), walking forward: each fold is
        forecast by ridges and trees fitted on the windows before it only (its lookback and horizon apart),
        weighted toward its season, on the same span of days as the served ones: the errors they make are the
        errors the served ridges make on the weeks after they are fitted. With the neural residual off only
        the validation blocks need them, so the ridges of a block see everything before the block. A fold with
        fewer than ``MIN_FORWARD_DAYS`` days of windows before it has no such forecast and is left out; where
        that leaves no validation block for a neural residual (a short history), the net is not trained and
        the blocks are forecast as without it."""
        plan, c = windows.plan, self.config.residual
        windows.out_of_fold = np.zeros((len(plan.origins), self.horizon), dtype=np.float32)
        if self.linear is None:
            return
        usable = self._forward_fits(windows, index, whole_fold=c.enabled)
        if c.enabled and not (usable & (plan.role == VALID)).any():
            self.training["neural"] = {
                "architecture": c.architecture, "ensemble": c.ensemble, "kept": False, "days": 0, "gain": 0.0,
                "gain_se": float("inf"), "mae_without": float("nan"), "mae_with": float("nan"), "epochs_run": 0,
                "why": f"too short a history: no fold has {MIN_FORWARD_DAYS} days of windows before it"}
            usable = self._forward_fits(windows, index, whole_fold=False)
        plan.role[~usable] = GAP
        skipped = plan.folds - len(np.unique(plan.fold[usable]))
        if skipped:
            self.training["validation"]["folds_without_history"] = skipped
        if not (plan.role == VALID).any():
            raise InsufficientHistoryError(
                f"no validation block has {MIN_FORWARD_DAYS} days of history before it to fit the ridges on; "
                "give more history or lower residual.validation_days")

    def _forward_fits(self, windows: ResidualWindows, index: pd.DatetimeIndex, whole_fold: bool) -> np.ndarray:
        """Fit each fold's ridges (and trees) on the windows before it (``whole_fold``) or before its validation
        block, and forecast its windows; returns which windows of the plan got a forecast."""
        plan, c = windows.plan, self.config.residual
        usable = np.zeros(len(plan.origins), dtype=bool)
        for k in range(plan.folds):
            lo, _ = plan.held_out(k, whole_fold, c.lookback_hours, c.horizon_hours)
            fit_on = windows.linear_origins[windows.linear_origins < lo]
            if c.linear_train_days:
                fit_on = fit_on[fit_on >= lo - 24 * c.linear_train_days]
            if len(fit_on) < 24 * MIN_FORWARD_DAYS:
                continue
            rows = np.flatnonzero((plan.fold == k) if whole_fold else ((plan.fold == k) & (plan.role == VALID)))
            start, stop = plan.fold_bounds[k] if whole_fold else plan.block_bounds[k]
            reference = index[min((start + stop) // 2, len(index) - 1)]
            linear = self._new_linear()
            boosted = self._new_boosted() if self.boosted is not None else None
            weight = self._season_weight(index, fit_on, fit_on, reference, note=False)
            linear.fit(windows.series, fit_on, weight)
            if boosted is not None:
                boosted.fit(windows.series, fit_on, weight)
            windows.out_of_fold[rows] = self._blend(windows.series, plan.origins[rows], linear, boosted)
            usable[rows] = True
        return usable

    def _blend(self, series: np.ndarray, origins: np.ndarray, linear: LinearResidual | None,
               boosted: BoostedResidual | None) -> np.ndarray:
        """The ridges' residual forecast, scaled, with the trees' averaged in at ``boosted_weight`` (trees
        exist only next to ridges); zeros where there are neither."""
        if linear is None:
            return np.zeros((len(origins), self.horizon))
        ridges = linear.predict(series, origins)
        if boosted is None:
            return ridges
        share = self.config.residual.boosted_weight
        return (1 - share) * ridges + share * boosted.predict(series, origins)

    def _scaled_linear_part(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return self._blend(series, origins, self.linear, self.boosted)

    def _season_weight(self, index: pd.DatetimeIndex, fitted_on: np.ndarray, origins: np.ndarray,
                       reference: pd.Timestamp, note: bool = True) -> np.ndarray | None:
        """Weights of the linear residual's windows at ``origins`` by how near their day of the year lies to
        ``reference``'s (see ``linear_season_days``), or None (equal weights) when off or when ``fitted_on``
        spans too few years for each season to hold enough windows."""
        c = self.config.residual
        if not c.linear_season_days or not len(fitted_on):
            return None
        years = (index[fitted_on[-1]] - index[fitted_on[0]]) / pd.Timedelta(days=DAYS_PER_YEAR)
        if years < c.linear_season_min_years:
            if note:
                self.training["linear_season_weighting"] = (
                    f"off: {years:.1f} years of linear residual windows, fewer than linear_season_min_years "
                    f"({c.linear_season_min_years:g})")
            return None
        if note:
            self.training["linear_season_weighting"] = f"on: {years:.1f} years, ±{c.linear_season_days:g} days"
        return season_weights(index[origins], reference, c.linear_season_days, c.linear_season_floor)

    def fit(
        self,
        data: HourlyData,
        callbacks: Sequence[EpochCallback] = (),
        init_state: dict | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> HybridModel:
        """Fit all components in order. ``init_state`` warm-starts the neural residual (rolling refits);
        ``on_stage`` receives one human-readable line per stage (the CLI prints them)."""
        say = on_stage or logger.debug
        say("TRAINING TREND MODEL (log-linear regression)")
        _, season_log, residual_log = self.fit_base(data)
        say(f"✓ Trend model trained  R² (log load): {self.trend.r2:.4f}  "
            f"slope: {self.trend.slope_per_year * 100:+.2f} %/year")
        say("TRAINING FOURIER SEASONALITY MODEL" + (" (grid search)" if self.config.seasonality.grid_search else ""))
        for note in self.seasonality.notes:
            say(f"  note: {note}")
        kd, kw, ky = self.seasonality.orders
        say(f"✓ Fourier orders  Kd (daily): {kd}  Kw (weekly): {kw}  Ky (yearly): {ky}  "
            f"exogenous: {', '.join(self.exog) or 'none'}")
        windows = self.residual_windows(data, season_log, residual_log)
        plan, c = windows.plan, self.config.residual
        blocks = self.training["validation"]["blocks"]
        say(f"✓ Validation: {plan.folds} block(s) of up to {c.validation_days} days spread over the last "
            f"{c.train_days} days ({blocks[0][0][:10]} .. {blocks[-1][1][:10]}), {len(plan.of(VALID)):,} windows")
        if "linear_season_weighting" in self.training:
            say(f"  note: linear residual windows weighted by day of the year: {self.training['linear_season_weighting']}")
        if self.boosted is None and "boosted" in self.training:
            say(f"  note: gradient-boosted residual trees {self.training['boosted']} (residual.boosted_weight)")
        if self.linear is not None:
            say(f"OUT-OF-SAMPLE RIDGES{' AND TREES' if self.boosted is not None else ''}: each of the {plan.folds} "
                "fold(s) forecast by ridges fitted on the windows before it")
        self.cross_fit(windows, data.frame.index)
        if self.training["validation"].get("folds_without_history"):
            say(f"  note: {self.training['validation']['folds_without_history']} fold(s) had fewer than "
                f"{MIN_FORWARD_DAYS} days of history before them and are left out")
        if c.enabled and "why" not in self.training.get("neural", {}):
            self._fit_neural(windows, callbacks, init_state, say)
        elif c.enabled:
            say(f"  note: no neural residual: {self.training['neural']['why']}")
        self._fit_served_linear(windows)
        if self.linear is not None:
            say(f"✓ Ridges fitted on {len(windows.linear_origins):,} windows"
                + (f"; gradient-boosted trees beside them: {len(self.boosted.roots)} trees, depth ≤ "
                   f"{self.boosted.depth}, {c.boosted_weight:.0%} of the residual forecast" if self.boosted else ""))
        self.calibrate(windows)
        say(f"✓ Residual models in the forecast: {self.residual_summary()}")
        if "point_log_adjust" in self.training:
            below = -np.expm1(np.asarray(self.training["point_log_adjust"])) * 100
            say(f"  note: the forecast is the MAPE point, {below.min():.2f}-{below.max():.2f} % below the median "
                "across lead hours (point_forecast)")
        return self

    def _fit_neural(self, windows: ResidualWindows, callbacks, init_state, say: Callable[[str], None]) -> None:
        """Train the neural residual on the linear layers' out-of-sample errors walking forward: for each
        validation block, a net trained (and early-stopped) on the windows before it only, warm-started from
        the previous block's, forecasts the block. The blocks' paired comparison keeps or drops the net
        (``_gate``); the net of the last block is the one served."""
        plan, c = windows.plan, self.config.residual
        windows.neural = np.zeros((len(plan.origins), self.horizon), dtype=np.float32)
        windows.neural_scored = np.zeros(len(plan.origins), dtype=bool)
        neural, state, trained = None, init_state, 0
        say(f"TRAINING NEURAL RESIDUAL ({c.architecture.upper()}{f' x{c.ensemble}' if c.ensemble > 1 else ''}) "
            f"walking forward over {plan.folds} validation block(s): each block is forecast by a net trained on "
            "the windows before it (targets: the ridges' and trees' out-of-sample errors)")
        for k, (block_start, _block_stop) in enumerate(plan.block_bounds):
            block = np.flatnonzero((plan.fold == k) & (plan.role == VALID))
            before = plan.origins < block_start - c.horizon_hours + 1
            train = np.flatnonzero((plan.role == TRAIN) & before)
            stop = np.flatnonzero((plan.role == STOP) & before)
            if not len(block) or len(train) * c.window_stride_hours < MIN_NEURAL_WINDOWS:
                continue
            candidate = NeuralResidual(c, windows.series.shape[1], self._hour_channels)
            candidate.fit(windows.series, plan.origins[train], plan.origins[stop], windows.out_of_fold[train],
                          windows.out_of_fold[stop], callbacks, state)
            state = candidate.state_dict()
            windows.neural[block] = candidate.predict(windows.series, plan.origins[block])
            windows.neural_scored[block] = True
            trained += candidate.epochs_run
            neural = candidate
            say(f"  block {k + 1}/{plan.folds} (from {self.training['validation']['blocks'][k][0][:10]}): "
                f"{len(train):,} training windows, {candidate.epochs_run} epochs, early-stopping loss "
                f"{candidate.best_val_loss:.4f}")
        if neural is None:
            self.training["neural"] = {"architecture": c.architecture, "ensemble": c.ensemble, "kept": False,
                                       "days": 0, "gain": 0.0, "gain_se": float("inf"), "mae_without": float("nan"),
                                       "mae_with": float("nan"), "epochs_run": 0,
                                       "why": "less than a week of training windows before every block"}
            say(f"  note: no neural residual: {self.training['neural']['why']}")
            return
        self.neural = neural
        gate = self._gate(windows)
        self.training["neural"] = {
            "architecture": c.architecture, "ensemble": c.ensemble, "parameters": neural.parameter_count,
            "epochs_run": trained, "stopped_early": neural.stopped_early, "stop_loss": neural.best_val_loss,
            "blocks": len({int(f) for f in plan.fold[windows.neural_scored]}), **gate,
        }
        verdict = "kept" if gate["kept"] else "dropped (adds zero)"
        say(f"  gate: {verdict}: on {gate['days']} validation days the net moves the mean |log error| "
            f"{gate['mae_without']:.5f} -> {gate['mae_with']:.5f}, a paired gain of {gate['gain']:+.5f} ± "
            f"{gate['gain_se']:.5f} (kept where gain > {c.gate_z:g} x its standard error: residual.gate_z)")

    def _gate(self, windows: ResidualWindows) -> dict:
        """The neural residual's keep-or-drop evidence: per validation day (the local date of the origins) that
        a walked-forward net forecast, mean |log error| of the linear layers' out-of-sample forecast with and
        without the net, paired."""
        rows = np.flatnonzero((windows.plan.role == VALID) & windows.neural_scored)
        origins = windows.plan.origins[rows]
        without = self._unscale(windows.out_of_fold[rows].astype(np.float64))
        with_net = self._unscale(windows.out_of_fold[rows].astype(np.float64) + windows.neural[rows])
        actual = self._actual(windows.series, origins)
        days = windows.days[origins]
        daily = pd.DataFrame({"day": days, "without": np.abs(actual - without).mean(axis=1),
                              "with": np.abs(actual - with_net).mean(axis=1)}).groupby("day").mean()
        gain = daily["without"] - daily["with"]
        se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("inf")
        kept = bool(gain.mean() > 0 and gain.mean() > self.config.residual.gate_z * se)
        return {"kept": kept, "days": len(gain), "gain": float(gain.mean()), "gain_se": se,
                "mae_without": float(daily["without"].mean()), "mae_with": float(daily["with"].mean())}

    def _fit_served_linear(self, windows: ResidualWindows) -> None:
        """The ridges and trees that forecast: fitted on every window of their span, weighted toward the end."""
        if self.linear is not None:
            self.linear.fit(windows.series, windows.linear_origins, windows.linear_weight)
        if self.boosted is not None:
            self.boosted.fit(windows.series, windows.linear_origins, windows.linear_weight)

    def _unscale(self, scaled: np.ndarray) -> np.ndarray:
        return scaled * self.scaler["residual_std"] + self.scaler["residual_mean"]

    def _actual(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return self._unscale(series[origins[:, None] + np.arange(self.horizon), 0].astype(np.float64))

    @property
    def neural_kept(self) -> bool:
        """Whether the neural residual adds to the forecast (bundles before format 7 record `lstm_kept`)."""
        if self.neural is None:
            return False
        neural = self.training.get("neural")
        return bool(neural["kept"]) if isinstance(neural, dict) else bool(self.training.get("lstm_kept", True))

    def residual_summary(self) -> str:
        """Which residual models are in the forecast, and why the others are not: one line."""
        parts = []
        if self.linear is not None:
            parts.append("per-hour ridges")
        if self.boosted is not None:
            parts.append(f"gradient-boosted trees ({self.config.residual.boosted_weight:.0%})")
        if self.neural is not None and self.neural_kept:
            parts.append(f"neural residual ({self.neural.label})")
        out = " + ".join(parts) or "none (trend and seasonality only)"
        neural = self.training.get("neural")
        if self.neural is not None and not self.neural_kept and isinstance(neural, dict):
            out += (f"; neural residual ({self.neural.label}) dropped by the validation blocks "
                    f"(gain {neural['gain']:+.5f} ± {neural['gain_se']:.5f})")
        elif not self.config.residual.enabled:
            out += "; neural residual off (residual.enabled: false)"
        elif self.neural is None and isinstance(neural, dict) and neural.get("why"):
            out += f"; no neural residual: {neural['why']}"
        return out

    def calibrate(self, windows: ResidualWindows) -> None:
        """Conformal quantile offsets per lead hour from the validation blocks' log errors: the out-of-fold
        errors of the linear layers, plus the neural residual where it is kept (the model that is served)."""
        rows = windows.rows(VALID)
        origins = windows.plan.origins[rows]
        series = windows.series
        scaled = windows.out_of_fold[rows].astype(np.float64)
        if self.neural is not None and self.neural_kept:
            scaled = scaled + windows.neural[rows]  # each block's walked-forward net
        predicted = self._unscale(scaled) if (self.linear is not None or self.neural is not None) else scaled
        errors = self._actual(series, origins) - predicted
        hours = origin_hours(series, origins, self._hour_channels)
        # Kept for inspection (benchmarks/neural_residual.py --dump-calibration); not part of the bundle.
        self.calibration_errors = {"errors": errors, "origin_hour": hours, "block": windows.plan.fold[rows],
                                   "origins": origins}
        # The spread per origin hour, the centre pooled: a 00:00 origin's lead 15 (the afternoon) errs more
        # widely than a 12:00 origin's (the night), but a fifth of the windows is too few to move the
        # median by: shifting it by the validation weeks' median error already costs accuracy pooled
        # (PJM 2016: 3.181 against 3.174 %), and per hour it moves with that month's weather even more.
        centre = np.median(errors, axis=0)
        self.quantile_offsets = {
            f"{q:g}": (self._by_origin_hour(
                errors, hours, lambda e, q=q: np.quantile(e, q, axis=0) - np.median(e, axis=0)) + centre).tolist()
            for q in self.config.quantiles
        }
        self.training["val_mape_log_approx"] = float(np.mean(np.abs(errors)) * 100)
        self.training.pop("point_log_adjust", None)
        if self.config.point_forecast == "mape":
            # -s² per lead hour, s the log errors' spread read from their P10-P90 width as a normal's
            # (robust to the spells of large errors); see the module docstring. Pooled over origin hours,
            # like the centre: per hour, PJM 2016 scored 3.156 against 3.150 % (vic-elec's development
            # period 2.255 against 2.257 %).
            low, high = np.quantile(errors, [0.1, 0.9], axis=0)
            self.training["point_log_adjust"] = (-(((high - low) / P10_P90_WIDTH_IN_SIGMAS) ** 2)).tolist()
        self.training["val_mean_abs_log_error"] = float(np.mean(np.abs(errors)))

    @property
    def _hour_channels(self) -> tuple[int, int]:
        return self.channel_names.index("hour_sin"), self.channel_names.index("hour_cos")

    def _by_origin_hour(
        self, errors: np.ndarray, hours: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """``statistic`` of the validation errors (windows, horizon) -> (horizon,), per local origin hour on
        the windows whose origin lies within ``calibration_hour_width`` hours of it (circularly): (24,
        horizon). Pooled over all windows, (horizon,), when the width is -1, and for an hour whose share
        holds fewer than ``MIN_CALIBRATION_WINDOWS`` windows (gaps in the validation weeks)."""
        pooled = statistic(errors)
        width = self.config.calibration_hour_width
        if width < 0:
            return pooled
        distance = np.abs(hours[None, :] - np.arange(HOURS_PER_DAY)[:, None])
        near = np.minimum(distance, HOURS_PER_DAY - distance) <= width
        return np.stack([statistic(errors[rows]) if rows.sum() >= MIN_CALIBRATION_WINDOWS else pooled
                         for rows in near])

    # ----------------------------------------------------------- predicting
    def _predict_residual_log(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        scaled = self._scaled_linear_part(series, origins)
        # A dropped neural residual adds exactly nothing, so it is not run (about 1 ms of a served request).
        if self.neural is not None and self.neural_kept:
            scaled = scaled + self.neural.predict(series, origins)
        if self.linear is None and self.neural is None:  # (trees come only with the ridges)
            return scaled
        return self._unscale(scaled)

    def predict_components(self, frame: pd.DataFrame, positions: np.ndarray) -> ComponentForecast:
        """Forecast from several origins of one frame at once.

        ``frame`` is hourly with ``load`` and the exog columns on every row; ``positions`` are row numbers
        of the origins. Each origin is forecast from its own rows, as a request would carry them: the
        ``history_hours`` and ``interval_history_hours`` before it (fewer where the frame starts later) and
        the ``horizon`` rows from it, with the load unknown from the origin on. So a backtest on the whole
        history and a forecast from a request-sized frame give the same numbers, and no forecast reads an
        exogenous value beyond its horizon (a bridge day's next day, say).
        """
        positions = np.asarray(positions, dtype=int)
        if len(positions) and (positions.min() < self.lookback or positions.max() + self.horizon > len(frame)):
            raise InsufficientHistoryError(
                f"each forecast needs {self.lookback} hours before its origin and {self.horizon} rows after"
            )
        parts = [self._predict_segments(frame, positions[i : i + SEGMENTS_PER_CALL])
                 for i in range(0, len(positions), SEGMENTS_PER_CALL)]
        if len(parts) == 1:
            return parts[0]
        scales = [p.interval_scale for p in parts]
        return ComponentForecast(*(np.concatenate([getattr(p, k) for p in parts])
                                   for k in ("trend", "seasonality", "residual")),
                                 None if scales[0] is None else np.concatenate(scales),
                                 np.concatenate([p.origin_hour for p in parts]))

    def _predict_segments(self, frame: pd.DataFrame, positions: np.ndarray) -> ComponentForecast:
        before = self.history_hours + self.interval_history_hours
        rows = positions[:, None] + np.arange(-before, self.horizon)[None, :]
        outside = rows < 0
        source = frame.iloc[np.clip(rows, 0, None).ravel()]
        values = source[[LOAD, *self.exog]].to_numpy(dtype=float).reshape(*rows.shape, -1)
        values[outside] = np.nan  # hours before the frame starts: unknown
        values[:, before:, 0] = np.nan  # the load from the origin on: unknown to the forecast
        # The instants, each segment's running hourly from its origin (rows before the frame's start too).
        origin_ns = frame.index[positions].asi8
        instants = origin_ns[:, None] + np.arange(-before, self.horizon)[None, :] * 3_600_000_000_000
        inside = ~outside.ravel()
        if not np.array_equal(source.index.asi8[inside], instants.ravel()[inside]):
            raise ValueError("the frame must be hourly with every hour once (HourlyData's frames are)")
        index = pd.DatetimeIndex(instants.ravel().view("datetime64[ns]"), name=frame.index.name)
        if frame.index.tz is not None:
            index = index.tz_localize("UTC").tz_convert(frame.index.tz)
        segments = pd.DataFrame(values.reshape(-1, values.shape[2]), index=index, columns=[LOAD, *self.exog])
        return self.predict_segments(segments, before + self.horizon)

    def predict_segments(self, frame: pd.DataFrame, rows_per_segment: int) -> ComponentForecast:
        """Forecast from frames of ``rows_per_segment`` rows laid end to end in ``frame``, each ending in the
        ``horizon`` rows of its forecast (load NaN there), each computed on its own rows only (a batch of
        forecast requests). The Serve app computes the same pieces in separate deployments."""
        count = len(frame) // rows_per_segment
        positions = np.arange(count) * rows_per_segment + rows_per_segment - self.horizon
        trend_log = self.trend.predict(frame.index)
        season_log = self.seasonality.predict(frame.index, self._exog_frame(frame), segment_rows=rows_per_segment)
        ahead = positions[:, None] + np.arange(self.horizon)
        hours = (wall_clock_hours(frame.index)[positions] % HOURS_PER_DAY).astype(int)
        if self.neural is None and self.linear is None:
            return ComponentForecast(trend_log[ahead], season_log[ahead], np.zeros(ahead.shape), origin_hour=hours)
        residual, scale = self.residual_components(frame, trend_log, season_log, positions)
        return ComponentForecast(trend_log[ahead], season_log[ahead], residual, scale, hours)

    def residual_components(
        self, frame: pd.DataFrame, trend_log: np.ndarray, season_log: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The residual forecast (log, (origins, horizon)) and the interval scale per origin, given the
        frame's trend and seasonality (the Serve app computes those in other deployments)."""
        residual_log = np.log(frame[LOAD].to_numpy(dtype=float)) - trend_log - season_log
        series = self.residual_series(frame, residual_log, season_log)
        # Load at and after each origin is unknown to that forecast: the net never reads channel 0 there.
        series = np.nan_to_num(series, nan=0.0)
        past, usable = self._past_windows(residual_log, positions)
        # One prediction call for the forecasts and the past ones the interval scale reads: each call of the
        # residual trees costs its depth in numpy steps whatever the rows (two calls: +0.85 ms a request).
        origins = np.concatenate([positions, past[usable]])
        predicted = self._predict_residual_log(series, origins)
        forecast, earlier = predicted[: len(positions)], predicted[len(positions) :]
        return forecast, self._interval_scale(residual_log, positions, past, usable, earlier)

    @property
    def interval_history_hours(self) -> int:
        """Hours before ``lookback`` that the adaptive interval scale reads (the caller may pass fewer)."""
        return 24 * (self.config.interval_adapt_days + -(-self.horizon // 24) - 1)

    def _past_windows(self, residual_log: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The origins 1..``interval_adapt_days`` days before each position whose forecasts ended before it,
        (positions, days), and which of them have the history and targets to be scored, same shape."""
        days = self.config.interval_adapt_days if self.training.get("val_mean_abs_log_error") else 0
        first = -(-self.horizon // 24)  # whole days back so a past forecast ends before the origin
        past = positions[:, None] - 24 * np.arange(first, first + days)[None, :]
        bad = np.concatenate([[0], np.cumsum(~np.isfinite(residual_log))])
        usable = past >= self.lookback
        start, stop = np.clip(past - self.lookback, 0, None), np.clip(past + self.horizon, 0, len(residual_log))
        usable &= (bad[stop] - bad[start]) == 0
        return past, usable

    def _interval_scale(
        self, residual_log: np.ndarray, positions: np.ndarray, past: np.ndarray, usable: np.ndarray,
        predicted: np.ndarray,
    ) -> np.ndarray:
        """Per origin: mean |log error| of the forecasts made 1..N days earlier (``predicted``, for
        ``past[usable]``; their targets all lie before the origin) over the validation mean, clipped; 1
        where no such forecast can be made."""
        scale = np.ones(len(positions))
        if not usable.any():
            return scale
        flat = past[usable]
        errors = np.abs(residual_log[flat[:, None] + np.arange(self.horizon)] - predicted)
        per_window = np.full(past.shape, np.nan)
        per_window[usable] = errors.mean(axis=1)
        seen = usable.any(axis=1)
        low, high = self.config.interval_scale_range
        scale[seen] = np.clip(np.nanmean(per_window[seen], axis=1) / self.training["val_mean_abs_log_error"], low, high)
        return scale

    def to_megawatts(self, components: ComponentForecast, point_move: bool = True) -> dict[str, np.ndarray]:
        """The MW split (see module docstring) and the quantiles; arrays of shape (origins, horizon).
        ``point_move=False`` leaves the forecast at the median (a degraded answer without the residual:
        the validation spread that sets the move is the whole model's)."""
        trend = np.exp(components.trend)
        base = np.exp(components.trend + components.seasonality)
        final = np.exp(components.final)
        out = {"forecast": final, "trend": trend, "seasonality": base - trend, "residual": final - base}
        scale = np.ones(len(final)) if components.interval_scale is None else components.interval_scale
        for key, offsets in self.quantile_offsets.items():
            per_origin = _per_origin(offsets, components.origin_hour)
            out[quantile_column(float(key))] = np.exp(components.final + scale[:, None] * per_origin)
        adjust = self.training.get("point_log_adjust")  # None: bundles from before, or point_forecast: median
        if adjust is not None and point_move:
            out["forecast"] = final * np.exp(scale[:, None] ** 2 * _per_origin(adjust, components.origin_hour))
            out["residual"] = out["forecast"] - base
        return out


def _per_origin(values: Sequence, origin_hour: np.ndarray | None) -> np.ndarray:
    """Calibration values for each origin, (origins or 1, horizon): one row for all origins (bundles before
    format 5, ``calibration_hour_width: -1``) or the row of each origin's local hour."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        return array[None, :]
    if origin_hour is None:
        raise ValueError("the calibration is per origin hour: give the components' origin_hour")
    return array[np.asarray(origin_hour, dtype=int)]
