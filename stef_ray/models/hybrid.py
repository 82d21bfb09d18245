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
from stef_ray.features import wall_clock_hours
from stef_ray.models import calibration
from stef_ray.models.component_forecast import ComponentForecast
from stef_ray.models.crossfit import ResidualWindows
from stef_ray.models.residual_linear import HOURS_PER_DAY, origin_hours
from stef_ray.models.residual_neural import EpochCallback
from stef_ray.models.residual_stack import ResidualStack
from stef_ray.models.seasonality import FourierSeasonality
from stef_ray.models.segments import request_rows
from stef_ray.models.training_record import TrainingRecord
from stef_ray.models.trend import LogLinearTrend

logger = logging.getLogger(__name__)

SEGMENTS_PER_CALL = 64  # origins forecast together (a backtest's many origins: bounded memory)


class HybridModel:
    """Trend + Fourier seasonality + the residual stack (ridges, trees, a neural residual), fitted in that
    order on one hourly series, and the quantiles calibrated on the stack's out-of-sample errors."""

    def __init__(self, config: ModelConfig | None = None, exog: Sequence[str] = ()) -> None:
        self.config = config or ModelConfig()
        self.exog = list(exog)
        self.trend = LogLinearTrend(self.config.trend.enabled)
        self.seasonality = FourierSeasonality(self.config.seasonality)
        self.residual = ResidualStack(self.config.residual, self.config.forecast, self.exog)
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
        """The residual stack's input array for ``frame`` (``ResidualStack.series``)."""
        return self.residual.series(frame, residual_log, season_log, self.seasonality.dropped_exog)

    def residual_summary(self) -> str:
        """Which residual models are in the forecast, and why the others are not: one line."""
        return self.residual.summary(self.training)

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

    def fit(
        self,
        data: HourlyData,
        callbacks: Sequence[EpochCallback] = (),
        on_stage: Callable[[str], None] | None = None,
    ) -> HybridModel:
        """Fit all components in order. ``on_stage`` receives one human-readable line per stage (the CLI prints them)."""
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
        windows = self.residual.fit(data.frame, season_log, residual_log, self.seasonality.dropped_exog,
                                    self.training, callbacks, say)
        self.calibrate(windows)
        say(f"✓ Residual models in the forecast: {self.residual_summary()}")
        if self.training.point_log_adjust is not None:
            below = -np.expm1(np.asarray(self.training.point_log_adjust)) * 100
            say(f"  note: the forecast is the MAPE point, {below.min():.2f}-{below.max():.2f} % below the median "
                "across lead hours (point_forecast)")
        return self

    def calibrate(self, windows: ResidualWindows) -> None:
        """Conformal quantile offsets per lead hour from the validation blocks' log errors: the errors of the
        residual stack's out-of-sample forecasts there (``ResidualStack.validation_forecast``: the model that
        is served)."""
        rows, predicted = self.residual.validation_forecast(windows)
        origins = windows.plan.origins[rows]
        errors = self.residual.unscale(windows.targets(origins, self.horizon)) - predicted
        hours = origin_hours(windows.series, origins, self.residual.hour_channels)
        # Kept for inspection (benchmarks/neural_residual.py --dump-calibration); not part of the bundle.
        self.calibration_errors = {"errors": errors, "origin_hour": hours, "block": windows.plan.fold[rows],
                                   "origins": origins}
        self.quantile_offsets = calibration.quantile_offsets(errors, hours, self.config.forecast.quantiles,
                                                             self.config.calibration_hour_width)
        self.training.val_mape_log_approx = float(np.mean(np.abs(errors)) * 100)
        self.training.point_log_adjust = (calibration.mape_point_adjust(errors)
                                          if self.config.point_forecast == "mape" else None)
        self.training.val_mean_abs_log_error = float(np.mean(np.abs(errors)))

    # ----------------------------------------------------------- predicting
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
        if self.residual.empty:
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
        predicted = self.residual.predict(series, origins)
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
