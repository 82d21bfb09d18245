"""Forecast service of the core: a fitted model + recent history (+ known future exogenous values) ->
the next hours with their components and quantiles. The CLI, the MLflow pyfunc and Ray Serve call it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stef_ray.data.holidays import HOLIDAY_COLUMN, holiday_flags
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import DataError, InsufficientHistoryError
from stef_ray.models.hybrid import HybridModel

logger = logging.getLogger(__name__)

FALLBACK_NOTE = (
    "no known future values for {columns}: used the same hour one week earlier (persistence fallback)"
)


@dataclass
class Forecast:
    """``frame``: timestamp, forecast, trend, seasonality, residual, p10... ; ``notes``: what was assumed."""

    frame: pd.DataFrame
    origin: pd.Timestamp
    notes: list[str] = field(default_factory=list)


def forecast_from_frames(
    model: HybridModel,
    history: pd.DataFrame,
    future: pd.DataFrame | None = None,
    horizon: int | None = None,
) -> Forecast:
    """Forecast the ``horizon`` hours after the last row of ``history``.

    Args:
        history: hourly frame, tz-aware index, column ``load`` and the model's exogenous columns; its last
            ``history_hours`` hours are read, the last ``lookback`` of them must hold the load (short gaps
            interpolated already).
        future: exogenous values for the hours ahead (index = those hours); missing hours or values fall
            back to the same hour one week earlier, noted in ``Forecast.notes``.
        horizon: hours to return (<= the model's horizon; default all).

    Raises:
        InsufficientHistoryError, DataError: with one-line messages.
    """
    horizon = horizon or model.horizon
    if not 1 <= horizon <= model.horizon:
        raise DataError(f"horizon {horizon} is out of range: this model forecasts 1..{model.horizon} hours")
    missing = [name for name in [LOAD, *model.exog] if name not in history.columns]
    if missing:
        raise DataError(f"history lacks column(s) {', '.join(missing)} that the model was trained with")
    need = model.history_hours
    recent = history.iloc[-need:]
    if len(recent) < need:
        raise InsufficientHistoryError(f"history has {len(history)} hours; the model needs {model.history_needed()}")
    gap = np.flatnonzero(~np.isfinite(recent[LOAD].to_numpy(dtype=float)[-model.lookback :]))
    if len(gap):
        raise DataError(
            f"load is missing at {recent.index[len(recent) - model.lookback + gap[0]]} within the last "
            f"{model.lookback} hours before the origin ({len(gap)} hours missing); forecast from an origin after "
            "the gap (--origin) or fill the data"
        )
    origin = recent.index[-1] + pd.Timedelta(hours=1)
    future_index = pd.date_range(origin, periods=model.horizon, freq="h", name="timestamp")
    future_exog, notes = _future_exog(model, history, future, future_index)
    future_rows = future_exog.assign(**{LOAD: np.nan})[[LOAD, *model.exog]]
    frame = pd.concat([recent[[LOAD, *model.exog]], future_rows])
    components = model.predict_components(frame, np.array([len(recent)]))
    # Older history, where there is some, lets the model widen its quantiles after days of large errors.
    # Only the scale is taken from that longer frame (with the bounded smoothing its point forecast is the
    # same; bundles before format 8 smooth from the frame's first row and must forecast as before).
    known = history.iloc[-(need + model.interval_history_hours) :]
    if len(known) > len(recent):
        longer = pd.concat([known[[LOAD, *model.exog]], future_rows])
        components.interval_scale = model.predict_components(longer, np.array([len(known)])).interval_scale
    columns = model.to_megawatts(components)
    out = pd.DataFrame({"timestamp": future_index} | {k: v[0] for k, v in columns.items()}).iloc[:horizon]
    return Forecast(out.reset_index(drop=True), origin, notes)


def _future_exog(
    model: HybridModel, history: pd.DataFrame, future: pd.DataFrame | None, future_index: pd.DatetimeIndex
) -> tuple[pd.DataFrame, list[str]]:
    out = pd.DataFrame(index=future_index)
    if not model.exog:
        return out, []
    known = future.reindex(future_index) if future is not None else pd.DataFrame(index=future_index)
    week_before = history.reindex(future_index - pd.Timedelta(hours=168))
    fell_back = []
    for name in model.exog:
        values = known[name].to_numpy(dtype=float) if name in known.columns else np.full(len(future_index), np.nan)
        holes = ~np.isfinite(values)
        if holes.any():
            values = np.where(holes, week_before[name].to_numpy(dtype=float), values)
            fell_back.append(name)
            if not np.isfinite(values).all():
                raise DataError(
                    f"no future values for '{name}' and none a week earlier to fall back on; give the "
                    "known future values (--future FILE) or at least 192 hours of history"
                )
        out[name] = values
    notes = [FALLBACK_NOTE.format(columns=", ".join(fell_back))] if fell_back else []
    return out, notes


def forecast_at(
    model: HybridModel, data: HourlyData, origin: pd.Timestamp | None = None, future: HourlyData | None = None
) -> Forecast:
    """Forecast from ``origin`` (default: the hour after the last observed load) using ``data``'s rows
    before it as history and its rows from it on (or ``future``) as known future exogenous values."""
    frame = data.frame
    observed = np.flatnonzero(np.isfinite(frame[LOAD].to_numpy(dtype=float)))
    if origin is None:
        origin = frame.index[observed[-1]] + pd.Timedelta(hours=1)
    elif origin.tzinfo is None:
        origin = origin.tz_localize(frame.index.tz)
    if origin <= frame.index[0]:
        raise InsufficientHistoryError(f"origin {origin} is before the data starts ({frame.index[0]})")
    history = frame.loc[frame.index < origin]
    ahead = frame.loc[frame.index >= origin, model.exog]
    if future is not None:
        ahead = future.frame[model.exog].combine_first(ahead) if len(ahead) else future.frame[model.exog]
    if data.calendar and HOLIDAY_COLUMN in model.exog:
        # A calendar's holidays are known ahead: the forecast hours get its flags, not last week's
        # (which the fallback would take, missing Thanksgiving or a bank holiday Monday).
        hours = pd.date_range(origin, periods=model.horizon, freq="h", name=frame.index.name)
        calendar = pd.DataFrame({HOLIDAY_COLUMN: holiday_flags(hours, data.calendar)}, index=hours)
        ahead = ahead.combine_first(calendar) if len(ahead) else calendar
    return forecast_from_frames(model, history, ahead if len(ahead) else None)
