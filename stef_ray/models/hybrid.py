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
from dataclasses import dataclass, field

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
    wall_clock_hours,
)
from stef_ray.models.residual_boosted import HISTORY_HOURS, BoostedResidual
from stef_ray.models.residual_linear import HOURS_PER_DAY, LinearResidual, origin_hours
from stef_ray.models.residual_lstm import EpochCallback, ResidualLSTM, valid_origins
from stef_ray.models.seasonality import FourierSeasonality
from stef_ray.models.trend import LogLinearTrend

logger = logging.getLogger(__name__)

P10_P90_WIDTH_IN_SIGMAS = 2.5631  # a normal's P90 - P10, in standard deviations
MIN_CALIBRATION_WINDOWS = 24  # per origin hour's share of the validation windows, else the pooled values


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
    """Everything the residual search needs, built once on the driver and shared with every trial."""

    series: np.ndarray  # (hours, channels) float32
    train_origins: np.ndarray
    val_origins: np.ndarray
    channel_names: list[str] = field(default_factory=list)
    baseline: np.ndarray | None = None  # (hours, horizon) ridge (+ trees) residual prediction per origin row
    linear_origins: np.ndarray | None = None  # the ridges' and trees' training origins (None: train_origins)
    linear_weight: np.ndarray | None = None  # per window of linear_origins, then of val_origins; None: equal


class HybridModel:
    """Trend + Fourier seasonality + LSTM residual, fitted in that order on one hourly series."""

    def __init__(self, config: ModelConfig | None = None, exog: Sequence[str] = ()) -> None:
        self.config = config or ModelConfig()
        self.exog = list(exog)
        self.trend = LogLinearTrend(self.config.trend.enabled)
        self.seasonality = FourierSeasonality(self.config.seasonality)
        self.residual: ResidualLSTM | None = None
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
        """The LSTM's input array: scaled residual, scaled seasonal level, scaled exog, calendar."""
        s = self.scaler
        columns = [
            (residual_log - s["residual_mean"]) / s["residual_std"],
            (season_log - s["season_mean"]) / s["season_std"],
        ]
        for i, name in enumerate(self.exog):
            if name in self.seasonality.dropped_exog:
                # An input the seasonality's cross-validation found to carry nothing about load would only
                # give the ridges and trees chance patterns to fit; a zero channel keeps the LSTM's shape.
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
        """Scale the residual series and split its origins in time: validation = the last days."""
        frame = data.frame
        self._fit_scaler(residual_log, frame, season_log)
        series = self.residual_series(frame, residual_log, season_log)
        valid = np.isfinite(series).all(axis=1)
        c = self.config.residual
        origins = valid_origins(valid, c.lookback_hours, c.horizon_hours)
        split = len(frame) - c.validation_days * 24 - c.horizon_hours
        before = origins[origins + c.horizon_hours <= split]
        if c.window_stride_hours > 1 and len(before):
            before = before[(before - before[0]) % c.window_stride_hours == 0]

        def recent(days: int) -> np.ndarray:
            return before[before >= split - days * 24] if days else before

        train = recent(c.train_days)
        val = origins[origins >= split]
        if len(train) < 24 or len(val) < 24:
            raise InsufficientHistoryError(
                f"{len(train)} training and {len(val)} validation windows without gaps; at least 24 of each "
                "are needed: give more history or fewer/shorter gaps"
            )
        windows = ResidualWindows(series, train, val, self.channel_names)
        if c.linear:
            self.linear = LinearResidual(
                c.lookback_hours, c.horizon_hours, c.linear_alpha, c.linear_robust_iterations,
                c.linear_hour_width if c.linear_hour_width >= 0 else None, self._hour_channels,
            )
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
                self.boosted = BoostedResidual(
                    c.horizon_hours, self.channel_names, (self.scaler["residual_std"], self.scaler["season_std"]),
                    c.boosted_iterations, max_rows=c.boosted_max_rows, seed=c.seed)
        if self.linear is not None or self.boosted is not None:
            # Fitted on the training windows only for now, so the LSTM's early stopping and the conformal
            # calibration see honest out-of-sample errors on validation; `finalize` refits them on all.
            windows.linear_origins = recent(c.linear_train_days)
            # Weights for the linear windows, then the validation ones (`finalize` fits on both).
            windows.linear_weight = self._season_weight(
                frame.index, windows.linear_origins, np.concatenate([windows.linear_origins, val]))
            weight = None if windows.linear_weight is None else windows.linear_weight[: len(windows.linear_origins)]
            self._fit_ridges_and_trees(series, windows.linear_origins, weight)
            if c.enabled:  # what the LSTM learns on top of (the Tune trials too)
                windows.baseline = np.zeros((len(series), c.horizon_hours), dtype=np.float32)
                used = np.union1d(train, val)
                windows.baseline[used] = self._scaled_linear_part(series, used)
        return windows

    def _fit_ridges_and_trees(self, series: np.ndarray, origins: np.ndarray, weight: np.ndarray | None) -> None:
        if self.linear is not None:
            self.linear.fit(series, origins, weight)
        if self.boosted is not None:
            self.boosted.fit(series, origins, weight)

    def _scaled_linear_part(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """The ridges' residual forecast, scaled, with the trees' averaged in at ``boosted_weight`` (trees
        exist only next to ridges); zeros where there are neither."""
        if self.linear is None:
            return np.zeros((len(origins), self.horizon))
        ridges = self.linear.predict(series, origins)
        if self.boosted is None:
            return ridges
        share = self.config.residual.boosted_weight
        return (1 - share) * ridges + share * self.boosted.predict(series, origins)

    def _season_weight(self, index: pd.DatetimeIndex, fitted_on: np.ndarray, origins: np.ndarray) -> np.ndarray | None:
        """Weights of the linear residual's windows at ``origins`` by their day of the year (see
        ``linear_season_days``), or None (equal weights) when off or when ``fitted_on`` spans too few years
        for each season to hold enough windows."""
        c = self.config.residual
        if not c.linear_season_days or not len(fitted_on):
            return None
        years = (index[fitted_on[-1]] - index[fitted_on[0]]) / pd.Timedelta(days=DAYS_PER_YEAR)
        if years < c.linear_season_min_years:
            self.training["linear_season_weighting"] = (
                f"off: {years:.1f} years of linear residual windows, fewer than linear_season_min_years "
                f"({c.linear_season_min_years:g})")
            return None
        self.training["linear_season_weighting"] = f"on: {years:.1f} years, ±{c.linear_season_days:g} days"
        return season_weights(index[origins], index[-1], c.linear_season_days, c.linear_season_floor)

    def fit(
        self,
        data: HourlyData,
        callbacks: Sequence[EpochCallback] = (),
        init_state: dict | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> HybridModel:
        """Fit all three components in order. ``init_state`` warm-starts the LSTM (rolling refits);
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
        if "linear_season_weighting" in self.training:
            say(f"  note: linear residual windows weighted by day of the year: {self.training['linear_season_weighting']}")
        if self.boosted is not None:
            say(f"✓ Gradient-boosted residual trees: {len(self.boosted.roots)} trees, depth ≤ {self.boosted.depth}, "
                f"{self.config.residual.boosted_weight:.0%} of the residual forecast next to the ridges")
        elif "boosted" in self.training:
            say(f"  note: gradient-boosted residual trees {self.training['boosted']} (residual.boosted_weight)")
        if self.config.residual.enabled:
            residual = ResidualLSTM(self.config.residual, windows.series.shape[1])
            say(f"TRAINING LSTM RESIDUAL MODEL on {residual.device}  parameters: {residual.parameter_count:,}  "
                f"windows: {len(windows.train_origins):,} train / {len(windows.val_origins):,} validation")
            residual.fit(windows.series, windows.train_origins, windows.val_origins, callbacks, init_state,
                         baseline=windows.baseline)
            ended = "early stop" if residual.stopped_early else "max epochs"
            say(f"✓ LSTM trained: best val loss {residual.best_val_loss:.4f} after {residual.epochs_run} epochs ({ended})")
            if not residual.kept:
                say(f"  note: the LSTM did not lower the linear residual's validation loss by {self.config.residual.min_gain:.0%}, "
                    "so it adds zero (residual.min_gain)")
            self.attach_residual(residual, windows)
        else:
            self.finalize(windows)
        if "point_log_adjust" in self.training:
            below = -np.expm1(np.asarray(self.training["point_log_adjust"])) * 100
            say(f"  note: the forecast is the MAPE point, {below.min():.2f}-{below.max():.2f} % below the median "
                "across lead hours (point_forecast)")
        return self

    def attach_residual(self, residual: ResidualLSTM, windows: ResidualWindows) -> HybridModel:
        """Adopt an LSTM trained elsewhere (a Ray Tune trial) on ``windows``, then calibrate."""
        self.residual = residual
        self.config = self.config.model_copy(update={"residual": residual.config})
        self.training |= {
            "val_loss": residual.best_val_loss,
            "epochs_run": residual.epochs_run,
            "stopped_early": residual.stopped_early,
            "lstm_kept": residual.kept,
            "parameters": residual.parameter_count,
        }
        self.finalize(windows)
        return self

    def finalize(self, windows: ResidualWindows) -> None:
        """Calibrate the quantiles on validation, then refit the linear residual model on training and
        validation windows: the most recent weeks matter most and a ridge needs no early stopping.

        Not where an LSTM is kept: it learnt the errors of the ridge fitted without the validation weeks,
        and a refitted ridge errs differently, so the correction it adds no longer matches. (Measured with
        the former 2 % gate, which kept the LSTM in 2 of 14 PJM 2016 refits: 3.188 % with the refit, 3.186 %
        without; vic-elec 2.690 / 2.693 %. Kept for consistency rather than for a measured gain.)"""
        self.calibrate(windows)
        if self.residual is not None and self.residual.kept:
            self.training["linear_refit_on_validation"] = False
            return
        if self.linear is not None or self.boosted is not None:
            self.training["linear_refit_on_validation"] = True
            fitted_on = windows.train_origins if windows.linear_origins is None else windows.linear_origins
            self._fit_ridges_and_trees(
                windows.series, np.concatenate([fitted_on, windows.val_origins]), windows.linear_weight)

    def calibrate(self, windows: ResidualWindows) -> None:
        """Conformal quantile offsets per lead hour from the validation windows' log errors."""
        origins = windows.val_origins
        series = windows.series
        ahead = origins[:, None] + np.arange(self.horizon)
        actual = series[ahead, 0] * self.scaler["residual_std"] + self.scaler["residual_mean"]
        predicted = self._predict_residual_log(series, origins)
        errors = actual - predicted
        hours = origin_hours(series, origins, self._hour_channels)
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
        # A dropped LSTM is a fresh net whose last layers are zero: it adds exactly nothing, so it is not
        # run (about 1 ms of a served request). Bundles from before the gate record no `lstm_kept`.
        if self.residual is not None and self.training.get("lstm_kept", True):
            scaled += self.residual.predict(series, origins)
        if self.linear is None and self.residual is None:  # (trees come only with the ridges)
            return scaled
        return scaled * self.scaler["residual_std"] + self.scaler["residual_mean"]

    def predict_components(self, frame: pd.DataFrame, positions: np.ndarray) -> ComponentForecast:
        """Forecast from several origins of one frame at once.

        ``frame`` is hourly with ``load`` (NaN where unknown, at least from each origin on) and the exog
        columns on every row; ``positions`` are row numbers of the origins. Only rows before an origin
        contribute their load to its forecast; trend and seasonality need time and exog alone.
        """
        positions = np.asarray(positions, dtype=int)
        if len(positions) and (positions.min() < self.lookback or positions.max() + self.horizon > len(frame)):
            raise InsufficientHistoryError(
                f"each forecast needs {self.lookback} hours before its origin and {self.horizon} rows after"
            )
        trend_log, season_log = self.base_components(frame)
        ahead = positions[:, None] + np.arange(self.horizon)
        hours = (wall_clock_hours(frame.index)[positions] % HOURS_PER_DAY).astype(int)
        if self.residual is None and self.linear is None:
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


def quantile_column(q: float) -> str:
    """0.1 -> 'p10', 0.5 -> 'p50', 0.975 -> 'p97.5'."""
    return f"p{q * 100:g}"
