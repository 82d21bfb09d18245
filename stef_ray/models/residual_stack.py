"""The residual stack: the component of the hybrid that forecasts what trend and seasonality leave. It holds
the input scaling, the per-hour ridges, the gradient-boosted trees beside them and a neural residual over
both, fits them in their order (ridges and trees cross-fitted walking forward, the net trained on their
out-of-sample errors and kept or dropped by a paired comparison on the validation days) and forecasts the
log residual from windows of its input array. ``HybridModel`` composes it with the trend and the
seasonality and calibrates the sum; the bundle writes its parts (``residual_scaler.json`` and one file pair
per model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from stef_ray.config import ResidualConfig
from stef_ray.exceptions import InsufficientHistoryError
from stef_ray.features import wall_clock_days
from stef_ray.models import linear_layers, neural_walk, residual_inputs
from stef_ray.models.crossfit import GAP, TRAIN, VALID, ResidualWindows, plan_folds
from stef_ray.models.linear_layers import MIN_FORWARD_DAYS
from stef_ray.models.residual_boosted import BoostedResidual, trees_off_reason
from stef_ray.models.residual_linear import LinearResidual
from stef_ray.models.residual_neural import EpochCallback, NeuralResidual, valid_origins
from stef_ray.models.training_record import TrainingRecord, ValidationRecord
from stef_ray.spec import ForecastSpec


class ResidualStack:
    """Ridges, trees and a neural residual on the scaled residual array: ``fit`` on a history's residual,
    ``predict`` the log residual of the ``horizon`` hours after each origin, state in ``scaler`` and the
    three models' parts (each None where it is not in the model)."""

    def __init__(self, config: ResidualConfig, spec: ForecastSpec, exog: Sequence[str] = ()) -> None:
        self.config = config
        self.spec = spec
        self.exog = list(exog)
        self.scaler: dict = {}
        self.linear: LinearResidual | None = None
        self.boosted: BoostedResidual | None = None
        self.neural: NeuralResidual | None = None
        self.neural_kept = False  # the gate's verdict: whether the net adds to the forecast

    @property
    def channel_names(self) -> list[str]:
        return residual_inputs.channel_names(self.exog)

    @property
    def hour_channels(self) -> tuple[int, int]:
        names = self.channel_names
        return names.index("hour_sin"), names.index("hour_cos")

    @property
    def empty(self) -> bool:
        """No residual model at all: the forecast is trend and seasonality (the residual is zero)."""
        return self.linear is None and self.neural is None  # (trees come only with the ridges)

    def series(self, frame: pd.DataFrame, residual_log: np.ndarray, season_log: np.ndarray,
               dropped_exog: Sequence[str]) -> np.ndarray:
        """The models' input array (``residual_inputs.residual_series``)."""
        return residual_inputs.residual_series(self.scaler, frame, residual_log, season_log, self.exog, dropped_exog)

    def unscale(self, scaled: np.ndarray) -> np.ndarray:
        return scaled * self.scaler["residual_std"] + self.scaler["residual_mean"]

    # -------------------------------------------------------------- fitting
    def fit(self, frame: pd.DataFrame, season_log: np.ndarray, residual_log: np.ndarray, dropped_exog: Sequence[str],
            training: TrainingRecord, callbacks: Sequence[EpochCallback] = (),
            say: Callable[[str], None] = lambda line: None) -> ResidualWindows:
        """Fit every residual model on the history ``frame`` (whose log residual and seasonality are given),
        recording what was done in ``training`` and narrating it to ``say``; returns the windows, whose
        validation blocks carry the out-of-sample forecasts the hybrid calibrates on (``validation_forecast``).
        The neural residual starts from scratch: warm-started from a previous refit's net, which had learnt
        from windows after the early validation blocks, it would be scored in sample there."""
        windows = self.plan(frame, season_log, residual_log, dropped_exog, training)
        plan, c = windows.plan, self.config
        blocks = training.validation.blocks
        say(f"✓ Validation: {plan.folds} block(s) of up to {c.validation_days} days spread over the last "
            f"{c.train_days} days ({blocks[0][0][:10]} .. {blocks[-1][1][:10]}), {len(plan.of(VALID)):,} windows")
        if training.linear_season_weighting:
            say(f"  note: linear residual windows weighted by day of the year: {training.linear_season_weighting}")
        if self.boosted is None and training.boosted:
            say(f"  note: gradient-boosted residual trees {training.boosted} (residual.boosted_weight)")
        if self.linear is not None:
            say(f"OUT-OF-SAMPLE RIDGES{' AND TREES' if self.boosted is not None else ''}: each of the {plan.folds} "
                "fold(s) forecast by ridges fitted on the windows before it")
        self.cross_fit(windows, frame.index, training)
        if training.validation.folds_without_history:
            say(f"  note: {training.validation.folds_without_history} fold(s) had fewer than "
                f"{MIN_FORWARD_DAYS} days of history before them and are left out")
        if c.enabled and (training.neural is None or training.neural.trained):
            names = [block[0][:10] for block in blocks]
            self.neural, training.neural = neural_walk.train_and_gate(
                windows, c, self.spec, self.hour_channels, callbacks, names, self.unscale, say)
            self.neural_kept = self.neural is not None and training.neural.kept
        elif c.enabled:
            say(f"  note: no neural residual: {training.neural.why}")
        self.fit_served(windows)
        if self.linear is not None:
            say(f"✓ Ridges fitted on {len(windows.linear_origins):,} windows"
                + (f"; gradient-boosted trees beside them: {len(self.boosted.roots)} trees, depth ≤ "
                   f"{self.boosted.depth}, {c.boosted_weight:.0%} of the residual forecast" if self.boosted else ""))
        return windows

    def plan(self, frame: pd.DataFrame, season_log: np.ndarray, residual_log: np.ndarray, dropped_exog: Sequence[str],
             training: TrainingRecord) -> ResidualWindows:
        """Scale the residual series, plan the folds and validation blocks over the last ``train_days`` and
        set up (unfitted) the ridges and trees."""
        self.linear = self.boosted = self.neural = None  # a refit starts afresh
        self.neural_kept = False
        self.scaler = residual_inputs.fit_scaler(residual_log, frame, season_log, self.exog)
        series = self.series(frame, residual_log, season_log, dropped_exog)
        valid = np.isfinite(series).all(axis=1)
        c, lookback, horizon = self.config, self.spec.lookback_hours, self.spec.horizon_hours
        origins = valid_origins(valid, lookback, horizon)
        end = len(frame) - horizon + 1
        plan = plan_folds(origins, end, c.train_days, c.validation_blocks, c.validation_days, c.stop_days,
                          lookback, horizon)
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
        training.validation = ValidationRecord(
            blocks=[[frame.index[a].isoformat(), frame.index[min(b, len(frame)) - 1].isoformat()]
                    for a, b in plan.block_bounds],
            windows=len(val))
        if c.linear:
            self.linear = self._new_linear()
        if c.linear and c.boosted_weight > 0:  # the trees partner the ridges: without them, none
            off = trees_off_reason(frame, self.exog, dropped_exog, lookback)
            if off:
                training.boosted = off
            else:
                self.boosted = self._new_boosted()
        if self.linear is not None:
            windows.linear_weight, note = linear_layers.season_weight(frame.index, linear_origins, linear_origins,
                                                                      frame.index[-1], c)
            if note:
                training.linear_season_weighting = note
        return windows

    def _new_linear(self) -> LinearResidual:
        return linear_layers.new_linear(self.config, self.spec, self.hour_channels)

    def _new_boosted(self) -> BoostedResidual:
        return linear_layers.new_boosted(self.config, self.spec, self.channel_names, self.scaler)

    def cross_fit(self, windows: ResidualWindows, index: pd.DatetimeIndex, training: TrainingRecord) -> None:
        """The linear layers' out-of-sample forecasts (``linear_layers.cross_fit``)."""
        def make() -> tuple[LinearResidual, BoostedResidual | None]:
            return self._new_linear(), (self._new_boosted() if self.boosted is not None else None)

        linear_layers.cross_fit(windows, index, self.config, self.spec, make if self.linear is not None else None,
                                training)

    def fit_served(self, windows: ResidualWindows) -> None:
        """The ridges and trees that forecast: fitted on every window of their span, weighted toward the end."""
        if self.linear is not None:
            self.linear.fit(windows.series, windows.linear_origins, windows.linear_weight)
        if self.boosted is not None:
            self.boosted.fit(windows.series, windows.linear_origins, windows.linear_weight)

    def validation_forecast(self, windows: ResidualWindows) -> tuple[np.ndarray, np.ndarray]:
        """The validation windows (rows of ``windows.plan``) and their out-of-sample log residual forecasts: the
        linear layers fitted on everything before each block, plus the block's walked-forward net where the net
        is kept (the model served)."""
        rows = windows.rows(VALID)
        scaled = windows.block_forecast[rows].astype(np.float64)
        if self.neural is not None and self.neural_kept:
            scaled = scaled + windows.neural[rows]
        return rows, (scaled if self.empty else self.unscale(scaled))

    # ----------------------------------------------------------- predicting
    def predict(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """The log residual of the ``horizon`` hours after each origin, (len(origins), horizon)."""
        scaled = linear_layers.blend(series, origins, self.linear, self.boosted, self.config, self.spec)
        # A dropped neural residual adds exactly nothing, so it is not run (about 1 ms of a served request).
        if self.neural is not None and self.neural_kept:
            scaled = scaled + self.neural.predict(series, origins)
        return scaled if self.empty else self.unscale(scaled)

    # ------------------------------------------------------------- the record
    def restore_verdict(self, training: TrainingRecord) -> None:
        """Set ``neural_kept`` from a bundle's record (bundles before format 7 record ``lstm_kept``; format 1
        recorded no verdict, and its LSTM always added)."""
        if self.neural is None:
            self.neural_kept = False
        elif training.neural is not None:
            self.neural_kept = training.neural.kept
        else:
            self.neural_kept = training.lstm_kept is not False

    def summary(self, training: TrainingRecord) -> str:
        """Which residual models are in the forecast, and why the others are not: one line."""
        parts = []
        if self.linear is not None:
            parts.append("per-hour ridges")
        if self.boosted is not None:
            parts.append(f"gradient-boosted trees ({self.config.boosted_weight:.0%})")
        if self.neural is not None and self.neural_kept:
            parts.append(f"neural residual ({self.neural.label})")
        out = " + ".join(parts) or "none (trend and seasonality only)"
        neural = training.neural
        if self.neural is not None and not self.neural_kept and neural is not None:
            out += (f"; neural residual ({self.neural.label}) dropped by the validation blocks "
                    f"(gain {neural.gain:+.5f} ± {neural.gain_se:.5f})")
        elif not self.config.enabled:
            out += "; neural residual off (residual.enabled: false)"
        elif self.neural is None and neural is not None and neural.why:
            out += f"; no neural residual: {neural.why}"
        return out
