"""The hybrid: log load = trend + seasonality + residual, each a component fitted on what the previous
left over. Forecasts are combined in log space and reported in MW as an additive split of the forecast
into trend, seasonality and residual; the quantiles and the point forecast (the value with the least
expected absolute percentage error) come from the validation blocks' out-of-sample errors
(``stef_ray.models.calibration`` says how).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from stef_ray.config import ModelConfig
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import InsufficientHistoryError
from stef_ray.features import (
    wall_clock_days,
    wall_clock_hours,
)
from stef_ray.models import calibration, linear_layers, neural_walk, residual_inputs
from stef_ray.models.component_forecast import ComponentForecast
from stef_ray.models.crossfit import GAP, TRAIN, VALID, ResidualWindows, plan_folds
from stef_ray.models.linear_layers import MIN_FORWARD_DAYS
from stef_ray.models.residual_boosted import BoostedResidual, trees_off_reason
from stef_ray.models.residual_linear import HOURS_PER_DAY, LinearResidual, origin_hours
from stef_ray.models.residual_neural import EpochCallback, NeuralResidual, valid_origins
from stef_ray.models.seasonality import FourierSeasonality
from stef_ray.models.segments import request_rows
from stef_ray.models.training_record import TrainingRecord, ValidationRecord
from stef_ray.models.trend import LogLinearTrend

logger = logging.getLogger(__name__)

SEGMENTS_PER_CALL = 64  # origins forecast together (a backtest's many origins: bounded memory)


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
        self.training = TrainingRecord()

    # -------------------------------------------------------------- helpers
    @property
    def lookback(self) -> int:
        return self.config.forecast.lookback_hours

    @property
    def horizon(self) -> int:
        return self.config.forecast.horizon_hours

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

    def residual_series(self, frame: pd.DataFrame, residual_log: np.ndarray, season_log: np.ndarray) -> np.ndarray:
        """The residual models' input array (``residual_inputs.residual_series``)."""
        return residual_inputs.residual_series(self.scaler, frame, residual_log, season_log, self.exog,
                                               self.seasonality.dropped_exog)

    @property
    def channel_names(self) -> list[str]:
        return residual_inputs.channel_names(self.exog)

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
        self.training = TrainingRecord(
            start=frame.index[0].isoformat(), end=frame.index[-1].isoformat(), hours=len(frame),
            observed_hours=observed, timezone=str(frame.index.tz), trend_r2=self.trend.r2,
            fourier_orders=list(self.seasonality.orders), seasonality_ridge_alpha=self.seasonality.alpha,
            exog_left_out=list(self.seasonality.dropped_exog))
        return trend_log, season_log, residual_log

    def residual_windows(self, data: HourlyData, season_log: np.ndarray, residual_log: np.ndarray) -> ResidualWindows:
        """Scale the residual series, plan the folds and validation blocks over the last ``train_days`` and
        set up (unfitted) the ridges and trees."""
        frame = data.frame
        self.scaler = residual_inputs.fit_scaler(residual_log, frame, season_log, self.exog)
        series = self.residual_series(frame, residual_log, season_log)
        valid = np.isfinite(series).all(axis=1)
        c = self.config.residual
        origins = valid_origins(valid, self.lookback, self.horizon)
        end = len(frame) - self.horizon + 1
        plan = plan_folds(origins, end, c.train_days, c.validation_blocks, c.validation_days, c.stop_days,
                          self.lookback, self.horizon)
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
        self.training.validation = ValidationRecord(
            blocks=[[frame.index[a].isoformat(), frame.index[min(b, len(frame)) - 1].isoformat()]
                    for a, b in plan.block_bounds],
            windows=len(val))
        if c.linear:
            self.linear = self._new_linear()
        if c.linear and c.boosted_weight > 0:  # the trees partner the ridges: without them, none
            off = trees_off_reason(frame, self.exog, self.seasonality.dropped_exog, self.lookback)
            if off:
                self.training.boosted = off
            else:
                self.boosted = self._new_boosted()
        if self.linear is not None:
            windows.linear_weight, note = linear_layers.season_weight(frame.index, linear_origins, linear_origins,
                                                                      frame.index[-1], c)
            if note:
                self.training.linear_season_weighting = note
        return windows

    def _new_linear(self) -> LinearResidual:
        return linear_layers.new_linear(self.config.residual, self.config.forecast, self._hour_channels)

    def _new_boosted(self) -> BoostedResidual:
        return linear_layers.new_boosted(self.config.residual, self.config.forecast, self.channel_names, self.scaler)

    def cross_fit(self, windows: ResidualWindows, index: pd.DatetimeIndex) -> None:
        """The linear layers' out-of-sample forecasts (``linear_layers.cross_fit``)."""
        def make() -> tuple[LinearResidual, BoostedResidual | None]:
            return self._new_linear(), (self._new_boosted() if self.boosted is not None else None)

        linear_layers.cross_fit(windows, index, self.config.residual, self.config.forecast,
                                make if self.linear is not None else None, self.training)

    def _scaled_linear_part(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return linear_layers.blend(series, origins, self.linear, self.boosted, self.config.residual, self.config.forecast)

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
        blocks = self.training.validation.blocks
        say(f"✓ Validation: {plan.folds} block(s) of up to {c.validation_days} days spread over the last "
            f"{c.train_days} days ({blocks[0][0][:10]} .. {blocks[-1][1][:10]}), {len(plan.of(VALID)):,} windows")
        if self.training.linear_season_weighting:
            say(f"  note: linear residual windows weighted by day of the year: {self.training.linear_season_weighting}")
        if self.boosted is None and self.training.boosted:
            say(f"  note: gradient-boosted residual trees {self.training.boosted} (residual.boosted_weight)")
        if self.linear is not None:
            say(f"OUT-OF-SAMPLE RIDGES{' AND TREES' if self.boosted is not None else ''}: each of the {plan.folds} "
                "fold(s) forecast by ridges fitted on the windows before it")
        self.cross_fit(windows, data.frame.index)
        if self.training.validation.folds_without_history:
            say(f"  note: {self.training.validation.folds_without_history} fold(s) had fewer than "
                f"{MIN_FORWARD_DAYS} days of history before them and are left out")
        if c.enabled and (self.training.neural is None or self.training.neural.trained):
            self._fit_neural(windows, callbacks, init_state, say)
        elif c.enabled:
            say(f"  note: no neural residual: {self.training.neural.why}")
        self._fit_served_linear(windows)
        if self.linear is not None:
            say(f"✓ Ridges fitted on {len(windows.linear_origins):,} windows"
                + (f"; gradient-boosted trees beside them: {len(self.boosted.roots)} trees, depth ≤ "
                   f"{self.boosted.depth}, {c.boosted_weight:.0%} of the residual forecast" if self.boosted else ""))
        self.calibrate(windows)
        say(f"✓ Residual models in the forecast: {self.residual_summary()}")
        if self.training.point_log_adjust is not None:
            below = -np.expm1(np.asarray(self.training.point_log_adjust)) * 100
            say(f"  note: the forecast is the MAPE point, {below.min():.2f}-{below.max():.2f} % below the median "
                "across lead hours (point_forecast)")
        return self

    def _fit_neural(self, windows: ResidualWindows, callbacks, init_state, say: Callable[[str], None]) -> None:
        """Train the neural residual walking forward over the validation blocks and gate it on them
        (``stef_ray.models.neural_walk``)."""
        names = [block[0][:10] for block in self.training.validation.blocks]
        self.neural, self.training.neural = neural_walk.train_and_gate(
            windows, self.config.residual, self.config.forecast, self._hour_channels, callbacks, init_state, names,
            self._unscale, say)

    def _fit_served_linear(self, windows: ResidualWindows) -> None:
        """The ridges and trees that forecast: fitted on every window of their span, weighted toward the end."""
        if self.linear is not None:
            self.linear.fit(windows.series, windows.linear_origins, windows.linear_weight)
        if self.boosted is not None:
            self.boosted.fit(windows.series, windows.linear_origins, windows.linear_weight)

    def _unscale(self, scaled: np.ndarray) -> np.ndarray:
        return scaled * self.scaler["residual_std"] + self.scaler["residual_mean"]

    @property
    def neural_kept(self) -> bool:
        """Whether the neural residual adds to the forecast (bundles before format 7 record `lstm_kept`)."""
        if self.neural is None:
            return False
        if self.training.neural is not None:
            return self.training.neural.kept
        return self.training.lstm_kept is not False  # format 1 recorded no verdict: its LSTM always added

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
        neural = self.training.neural
        if self.neural is not None and not self.neural_kept and neural is not None:
            out += (f"; neural residual ({self.neural.label}) dropped by the validation blocks "
                    f"(gain {neural.gain:+.5f} ± {neural.gain_se:.5f})")
        elif not self.config.residual.enabled:
            out += "; neural residual off (residual.enabled: false)"
        elif self.neural is None and neural is not None and neural.why:
            out += f"; no neural residual: {neural.why}"
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
        errors = self._unscale(windows.targets(origins, self.horizon)) - predicted
        hours = origin_hours(series, origins, self._hour_channels)
        # Kept for inspection (benchmarks/neural_residual.py --dump-calibration); not part of the bundle.
        self.calibration_errors = {"errors": errors, "origin_hour": hours, "block": windows.plan.fold[rows],
                                   "origins": origins}
        self.quantile_offsets = calibration.quantile_offsets(errors, hours, self.config.forecast.quantiles,
                                                             self.config.calibration_hour_width)
        self.training.val_mape_log_approx = float(np.mean(np.abs(errors)) * 100)
        self.training.point_log_adjust = (calibration.mape_point_adjust(errors)
                                          if self.config.point_forecast == "mape" else None)
        self.training.val_mean_abs_log_error = float(np.mean(np.abs(errors)))

    @property
    def _hour_channels(self) -> tuple[int, int]:
        return self.channel_names.index("hour_sin"), self.channel_names.index("hour_cos")

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
        return ComponentForecast.concatenate([self._predict_segments(frame, positions[i : i + SEGMENTS_PER_CALL])
                                              for i in range(0, len(positions), SEGMENTS_PER_CALL)])

    def _predict_segments(self, frame: pd.DataFrame, positions: np.ndarray) -> ComponentForecast:
        before = self.history_hours + self.interval_history_hours
        segments = request_rows(frame, positions, before, self.horizon, [LOAD, *self.exog])
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
        return calibration.interval_history_hours(self.config.interval_adapt_days, self.horizon)

    def _past_windows(self, residual_log: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        days = self.config.interval_adapt_days if self.training.val_mean_abs_log_error else 0
        return calibration.past_windows(residual_log, positions, self.lookback, self.horizon, days)

    def _interval_scale(self, residual_log: np.ndarray, positions: np.ndarray, past: np.ndarray,
                        usable: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return calibration.interval_scale(residual_log, len(positions), past, usable, predicted,
                                          1.0 if self.training.val_mean_abs_log_error is None
                                          else self.training.val_mean_abs_log_error,
                                          self.config.interval_scale_range)

    def to_megawatts(self, components: ComponentForecast, point_move: bool = True) -> dict[str, np.ndarray]:
        """The MW split and the quantiles, arrays of shape (origins, horizon) (``calibration.to_megawatts``)."""
        return calibration.to_megawatts(components, self.quantile_offsets, self.training.point_log_adjust,
                                        point_move)
