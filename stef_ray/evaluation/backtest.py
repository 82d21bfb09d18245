"""Rolling-origin evaluation: one forecast per day at 00:00 local, refitting every N days on the data
before the origin only. Kept apart from the models on purpose (a model knows nothing of backtests)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stef_ray.config import ModelConfig
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.evaluation.baselines import seasonal_naive
from stef_ray.evaluation.metrics import coverage, pinball_loss, point_metrics
from stef_ray.exceptions import ConfigError, DataError, InsufficientHistoryError
from stef_ray.models.hybrid import HybridModel
from stef_ray.quantiles import band, coverage_column, level_of, quantile_columns

logger = logging.getLogger(__name__)

BUILTIN_MODELS = ("hybrid", "trend_fourier", "seasonal_naive_week", "seasonal_naive_day")
PEER_NAMES = ("ridge_residual", "lightgbm", "mstl")  # stef_ray.evaluation.peers, imported only when asked for


def parse_models(text: str) -> list[str]:
    """``--models``' comma-separated names, checked before any work starts: an unknown name or a peer whose
    package is missing is a one-line error, not a failure of every series (or refit) later."""
    from importlib.util import find_spec

    models = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not models:
        raise ConfigError("--models names no model; give e.g. hybrid,seasonal_naive_week")
    for name in models:
        if name not in BUILTIN_MODELS and name not in PEER_NAMES:
            raise ConfigError(f"--models: unknown model '{name}'; choose from {', '.join(BUILTIN_MODELS + PEER_NAMES)}")
    needs = {"lightgbm": "lightgbm", "mstl": "statsforecast"}
    for name in models:
        if name in needs and find_spec(needs[name]) is None:
            raise ConfigError(f"--models: the {name} peer needs the 'peers' extra: pip install 'stef-ray[peers]'")
    return models


@dataclass
class BacktestResult:
    """``forecasts``: long table (model, origin, timestamp, lead_hour, actual, forecast[, p10, p50, p90: the
    model's quantile levels]); ``overall`` one row per model (with ``coverage_p10_p90``, named after the band
    the levels give, and ``pinball`` for a model with quantiles); ``by_horizon`` one row per model and lead
    hour; ``refits`` one row per hybrid refit: the data it was fitted on, its validation score and which
    residual models went into its forecasts (the neural residual's gate, where it was trained)."""

    forecasts: pd.DataFrame
    overall: pd.DataFrame
    by_horizon: pd.DataFrame
    fit_seconds: float
    skipped_origins: list[pd.Timestamp]
    refits: pd.DataFrame = field(default_factory=pd.DataFrame)


def origins_for(data: HourlyData, start: pd.Timestamp, days: int, issue_hours: Sequence[int] = (0,)
                ) -> list[pd.Timestamp]:
    """The origins of ``days`` days from ``start`` (a date in the data's zone): each day at each local issue
    hour (``ForecastSpec.issue_hours``), in time order. An hour the clocks skip moves forward; one they repeat
    is its first occurrence."""
    tz = data.frame.index.tz
    first = start.tz_localize(tz) if start.tzinfo is None else start.tz_convert(tz)
    first = first.normalize()
    origins = []
    for d in range(days):
        midnight = first + pd.DateOffset(days=d)
        for hour in issue_hours:
            if hour == 0:
                origins.append(midnight)
            else:  # the wall-clock hour, across a clock change
                wall = midnight.tz_localize(None) + pd.Timedelta(hours=hour)
                origins.append(wall.tz_localize(tz, ambiguous=True, nonexistent="shift_forward"))
    return origins


def run_backtest(
    data: HourlyData,
    config: ModelConfig,
    start: pd.Timestamp,
    days: int,
    refit_every: int = 7,
    models: Sequence[str] = BUILTIN_MODELS,
    progress: Callable[[str], None] | None = None,
    peers: dict | None = None,
) -> BacktestResult:
    """Backtest ``models`` from ``start`` for ``days`` days of origins (each day at each of the spec's issue
    hours; 00:00 by default).

    Args:
        refit_every: days between refits; 0 fits once on the data before ``start``.
        peers: extra models, name -> callable(train: HourlyData, frame, positions, horizon) -> MW array.

    No leakage: the model used at an origin was fitted on rows before the first origin of its refit
    block, and each forecast reads load only before its own origin (exogenous values are known ahead).
    """
    import time

    unknown = [name for name in models if name not in BUILTIN_MODELS and name not in (peers or {})]
    if unknown:
        raise DataError(f"unknown backtest model '{unknown[0]}'; choose from {', '.join(BUILTIN_MODELS)}, "
                        f"{', '.join(PEER_NAMES)}")
    frame = data.frame
    horizon = config.forecast.horizon_hours
    origins = origins_for(data, start, days, config.forecast.issue_hours)
    index = frame.index
    if origins[0] <= index[0] or origins[-1] + pd.Timedelta(hours=horizon) > index[-1] + pd.Timedelta(hours=1):
        raise DataError(
            f"backtest window {origins[0]:%Y-%m-%d} + {days} days does not fit in the data "
            f"({index[0]:%Y-%m-%d} to {index[-1]:%Y-%m-%d}); choose --start/--days inside it"
        )
    positions = np.array([index.get_indexer([o])[0] for o in origins])
    if (positions < 0).any():
        missing = origins[int(np.flatnonzero(positions < 0)[0])]
        raise DataError(f"origin {missing} is not on the hourly grid of the data")
    load = frame[LOAD].to_numpy(dtype=float)
    ahead = positions[:, None] + np.arange(horizon)
    actual = load[ahead]
    lookback = config.forecast.lookback_hours
    history_ok = np.array([np.isfinite(load[p - lookback : p]).all() for p in positions])
    skipped = [o for o, ok in zip(origins, history_ok, strict=True) if not ok]
    for origin in skipped:
        logger.warning("origin %s skipped: a gap in the %d hours before it", origin, lookback)

    block = len(origins) if refit_every <= 0 else refit_every * len(config.forecast.issue_hours)
    predictions: dict[str, np.ndarray] = {}
    fit_seconds = 0.0
    refits = []
    for first in range(0, len(origins), block):
        rows = slice(first, min(first + block, len(origins)))
        train = data.window(end=origins[rows.start])
        started = time.perf_counter()
        model = None
        if {"hybrid", "trend_fourier"} & set(models):
            model = HybridModel(config, data.exog)
            if "hybrid" in models:
                model.fit(train)
                refits.append(refit_record(model, origins[rows.start], rows.stop - rows.start))
            else:
                model.fit_base(train)
        fit_seconds += time.perf_counter() - started
        block_positions = positions[rows]
        if progress:
            progress(f"refit on data up to {origins[rows.start]:%Y-%m-%d} ({rows.stop}/{len(origins)} origins)")
        # Each forecast reads load only before its origin (the residual net's window ends there) and
        # exogenous values ahead; tests/test_backtest.py checks that changing later load changes nothing.
        visible = frame
        for name in models:
            if name in ("hybrid", "trend_fourier"):
                components = model.predict_components(visible, block_positions)
                if name == "trend_fourier":
                    values = {"forecast": np.exp(components.trend + components.seasonality)}
                else:
                    values = model.to_megawatts(components)
            elif name == "seasonal_naive_week":
                values = {"forecast": seasonal_naive(visible, block_positions, horizon, 168)}
            elif name == "seasonal_naive_day":
                values = {"forecast": seasonal_naive(visible, block_positions, horizon, 24)}
            else:
                values = {"forecast": peers[name](train, visible, block_positions, horizon)}
            for key, array in values.items():
                predictions.setdefault(f"{name}:{key}", np.full((len(origins), horizon), np.nan))[rows] = array
    result = _summarise(origins, frame.index, ahead, actual, predictions, history_ok, list(models), fit_seconds,
                        skipped)
    result.refits = pd.DataFrame(refits)
    return result


def refit_record(model: HybridModel, first_origin: pd.Timestamp, origins: int) -> dict:
    """One refit's row of ``BacktestResult.refits``: what it was fitted on and what went into its forecasts."""
    training, neural = model.training, model.training.neural
    return {"first_origin": first_origin.isoformat(), "origins": origins, "trained_until": training.end,
            "validation_mape": training.val_mape_log_approx, "neural_kept": model.residual.neural_kept,
            "neural_gain": neural.gain if neural else None, "neural_gain_se": neural.gain_se if neural else None,
            "neural_days": neural.days if neural else None, "residual": model.residual_summary()}


def _summarise(origins, index, ahead, actual, predictions, history_ok, models, fit_seconds, skipped):
    rows_long, overall_rows, horizon_rows = [], [], []
    horizon = actual.shape[1]
    keep = history_ok
    for name in models:
        forecast = predictions[f"{name}:forecast"]
        metrics = point_metrics(actual[keep], forecast[keep])
        row = {"model": name, **metrics}
        issued = [key.split(":", 1)[1] for key in predictions if key.startswith(f"{name}:")]
        pair = band(issued)  # P10-P90 with the default levels; whatever band the model's levels give
        if pair is not None:
            low, high = (predictions[f"{name}:{column}"][keep] for column in pair)
            row[coverage_column(pair)] = coverage(actual[keep], low, high)
            losses = [pinball_loss(actual[keep], predictions[f"{name}:{column}"][keep], level_of(column))
                      for column in quantile_columns(issued)]
            row["pinball"] = float(np.mean(losses))
        overall_rows.append(row)
        for lead in range(horizon):
            horizon_rows.append(
                {"model": name, "lead_hour": lead + 1, **point_metrics(actual[keep, lead], forecast[keep, lead])}
            )
        table = {
            "model": name,
            "origin": np.repeat(np.array(origins, dtype=object), horizon),
            "timestamp": index[ahead.ravel()],
            "lead_hour": np.tile(np.arange(1, horizon + 1), len(origins)),
            "actual": actual.ravel(),
            "forecast": forecast.ravel(),
        }
        for column in quantile_columns(key.split(":", 1)[1] for key in predictions if key.startswith(f"{name}:")):
            table[column] = predictions[f"{name}:{column}"].ravel()
        rows_long.append(pd.DataFrame(table))
    return BacktestResult(
        pd.concat(rows_long, ignore_index=True),
        pd.DataFrame(overall_rows),
        pd.DataFrame(horizon_rows),
        fit_seconds,
        skipped,
    )


def holdout_start(data: HourlyData, holdout_days: int) -> pd.Timestamp:
    """First hour of the holdout: ``holdout_days`` whole days before the end of the data."""
    return data.frame.index[-1] + pd.Timedelta(hours=1) - pd.Timedelta(days=holdout_days)


def score_holdout(model: HybridModel, data: HourlyData, start: pd.Timestamp) -> dict[str, float]:
    """Day-ahead forecasts from every midnight-aligned origin ``start, start+24h, ...`` in ``data``, scored
    against the actual load (MAPE etc. over every holdout hour). Only load before each origin is read."""
    frame = data.frame
    first = int(frame.index.searchsorted(start))
    positions = np.arange(first, len(frame) - model.horizon + 1, model.horizon)
    if len(positions) == 0 or positions[0] < model.lookback:
        raise InsufficientHistoryError(
            f"the holdout from {start} leaves no full {model.horizon}-hour forecast with "
            f"{model.lookback} hours of history before it; lower mlflow.holdout_days or give more data"
        )
    components = model.predict_components(frame, positions)
    forecast = model.to_megawatts(components)["forecast"]
    actual = frame[LOAD].to_numpy(dtype=float)[positions[:, None] + np.arange(model.horizon)]
    return point_metrics(actual, forecast) | {"origins": float(len(positions))}
