"""The linear layers of the residual (per-hour ridges, with gradient-boosted trees beside them where there is
weather): how they are made, blended, weighted toward a season, and fitted walking forward for their
out-of-sample forecasts. Plain numpy; ``HybridModel`` holds the served ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from stef_ray.config import ResidualConfig
from stef_ray.exceptions import InsufficientHistoryError
from stef_ray.features import DAYS_PER_YEAR, season_weights
from stef_ray.models import neural_walk
from stef_ray.models.crossfit import GAP, VALID, ResidualWindows
from stef_ray.models.residual_boosted import BoostedResidual
from stef_ray.models.residual_linear import LinearResidual
from stef_ray.models.training_record import TrainingRecord
from stef_ray.spec import ForecastSpec

MIN_FORWARD_DAYS = 7  # days of windows before a fold, at least, for its out-of-sample ridges


def new_linear(c: ResidualConfig, spec: ForecastSpec, hour_channels: tuple[int, int]) -> LinearResidual:
    return LinearResidual(spec.lookback_hours, spec.horizon_hours, c.linear_alpha, c.linear_robust_iterations,
                          c.linear_hour_width if c.linear_hour_width >= 0 else None, hour_channels)


def new_boosted(c: ResidualConfig, spec: ForecastSpec, channel_names: list[str], scaler: dict) -> BoostedResidual:
    return BoostedResidual(spec.horizon_hours, channel_names, (scaler["residual_std"], scaler["season_std"]),
                           c.boosted_iterations, max_rows=c.boosted_max_rows, seed=c.seed)


def blend(series: np.ndarray, origins: np.ndarray, linear: LinearResidual | None, boosted: BoostedResidual | None,
          c: ResidualConfig, spec: ForecastSpec) -> np.ndarray:
    """The ridges' residual forecast, scaled, with the trees' averaged in at ``boosted_weight`` (trees exist
    only next to ridges); zeros where there are neither."""
    if linear is None:
        return np.zeros((len(origins), spec.horizon_hours))
    ridges = linear.predict(series, origins)
    if boosted is None:
        return ridges
    return (1 - c.boosted_weight) * ridges + c.boosted_weight * boosted.predict(series, origins)


def season_weight(index: pd.DatetimeIndex, fitted_on: np.ndarray, origins: np.ndarray, reference: pd.Timestamp,
                  c: ResidualConfig) -> tuple[np.ndarray | None, str | None]:
    """Weights of the windows at ``origins`` by how near their day of the year lies to ``reference``'s (see
    ``linear_season_days``), or None (equal weights) when off or when ``fitted_on`` spans too few years for
    each season to hold enough windows; and a line saying which, for the bundle (None when off)."""
    if not c.linear_season_days or not len(fitted_on):
        return None, None
    years = (index[fitted_on[-1]] - index[fitted_on[0]]) / pd.Timedelta(days=DAYS_PER_YEAR)
    if years < c.linear_season_min_years:
        return None, (f"off: {years:.1f} years of linear residual windows, fewer than linear_season_min_years "
                      f"({c.linear_season_min_years:g})")
    note = f"on: {years:.1f} years, ±{c.linear_season_days:g} days"
    return season_weights(index[origins], reference, c.linear_season_days, c.linear_season_floor), note


def forward_fits(windows: ResidualWindows, index: pd.DatetimeIndex, whole_fold: bool, c: ResidualConfig,
                 spec: ForecastSpec, make: Callable[[], tuple[LinearResidual, BoostedResidual | None]],
                 out: np.ndarray) -> np.ndarray:
    """Fit each fold's ridges (and trees, from ``make``) on the windows before it (``whole_fold``) or before its
    validation block, and forecast its windows (or its block's) into ``out``; returns which windows of the plan
    got a forecast (a fold with under ``MIN_FORWARD_DAYS`` days of windows before it gets none)."""
    plan = windows.plan
    usable = np.zeros(len(plan.origins), dtype=bool)
    for k in range(plan.folds):
        lo, _ = plan.held_out(k, whole_fold, spec.lookback_hours, spec.horizon_hours)
        fit_on = windows.linear_origins[windows.linear_origins < lo]
        if c.linear_train_days:
            fit_on = fit_on[fit_on >= lo - 24 * c.linear_train_days]
        rows = np.flatnonzero((plan.fold == k) if whole_fold else ((plan.fold == k) & (plan.role == VALID)))
        if len(fit_on) < 24 * MIN_FORWARD_DAYS or not len(rows):
            continue
        start, stop = plan.fold_bounds[k] if whole_fold else plan.block_bounds[k]
        reference = index[min((start + stop) // 2, len(index) - 1)]
        linear, boosted = make()
        weight, _ = season_weight(index, fit_on, fit_on, reference, c)
        linear.fit(windows.series, fit_on, weight)
        if boosted is not None:
            boosted.fit(windows.series, fit_on, weight)
        out[rows] = blend(windows.series, plan.origins[rows], linear, boosted, c, spec)
        usable[rows] = True
    return usable


def cross_fit(windows: ResidualWindows, index: pd.DatetimeIndex, c: ResidualConfig, spec: ForecastSpec,
              make: Callable[[], tuple[LinearResidual, BoostedResidual | None]] | None,
              training: TrainingRecord) -> None:
    """The linear layers' out-of-sample forecasts (``windows.out_of_fold``), walking forward: each fold is
    forecast by ridges and trees (from ``make``; None: no linear layers, zeros) fitted on the windows before
    it only (its lookback and horizon apart), weighted toward its season, on the same span of days as the
    served ones: the errors they make are the errors the served ridges make on the weeks after they are
    fitted. Each validation block is forecast by ridges fitted on everything before the block
    (``windows.block_forecast``): as fresh as the served ones, which are refitted at every refit. With the
    neural residual on, each whole fold is also forecast by ridges fitted before the fold
    (``windows.out_of_fold``): the errors the net learns from on its training and early-stopping windows,
    none of which the block's ridges saw. So the net is judged, and the intervals calibrated, on the ridges
    it is added to when forecasting, and a dropped net leaves the model exactly as without it. A fold (or
    block) with fewer than ``MIN_FORWARD_DAYS`` days of windows before it has no such forecast and is left
    out; where no fold has them (a short history), the net is not trained (``training.neural`` says why).
    Folds left out are counted in ``training.validation``."""
    plan = windows.plan
    windows.block_forecast = np.zeros((len(plan.origins), spec.horizon_hours), dtype=np.float32)
    windows.out_of_fold = windows.block_forecast
    if make is None:
        return
    valid = plan.role == VALID
    usable = forward_fits(windows, index, False, c, spec, make, windows.block_forecast)
    if c.enabled:
        windows.out_of_fold = np.zeros_like(windows.block_forecast)
        in_fold = forward_fits(windows, index, True, c, spec, make, windows.out_of_fold)
        if (in_fold & valid).any():
            # The net's training and stopping windows need the fold's forecasts; the blocks keep theirs.
            usable = np.where(valid, usable, in_fold)
        else:
            training.neural = neural_walk.not_trained(
                c, f"too short a history: no fold has {MIN_FORWARD_DAYS} days of windows before it")
            windows.out_of_fold = windows.block_forecast
    plan.role[~usable] = GAP
    skipped = plan.folds - len(np.unique(plan.fold[usable]))
    if skipped:
        training.validation.folds_without_history = skipped
    if not (plan.role == VALID).any():
        raise InsufficientHistoryError(
            f"no validation block has {MIN_FORWARD_DAYS} days of history before it to fit the ridges on; "
            "give more history or lower residual.validation_days")
