"""Each origin's rows as a forecast request carries them, cut from a longer frame.

A backtest forecasts hundreds of origins of one history; a request carries the hours before its origin and
the horizon after. Cutting each origin's own rows (and hiding its load from the origin on) makes both one
computation: a forecast from a request-sized frame equals the one from the whole history, and no forecast
reads an input beyond its horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NS_PER_HOUR = 3_600_000_000_000


def request_rows(frame: pd.DataFrame, positions: np.ndarray, before: int, horizon: int,
                 columns: Sequence[str]) -> pd.DataFrame:
    """Segments of ``before + horizon`` rows laid end to end, one per origin (row number in ``positions``):
    the ``before`` hours before it (NaN where the frame starts later) and the ``horizon`` from it, with the
    first column (the load) NaN from the origin on. The index runs hourly within each segment."""
    rows = positions[:, None] + np.arange(-before, horizon)[None, :]
    outside = rows < 0
    source = frame.iloc[np.clip(rows, 0, None).ravel()]
    values = source[list(columns)].to_numpy(dtype=float).reshape(*rows.shape, -1)
    values[outside] = np.nan  # hours before the frame starts: unknown
    values[:, before:, 0] = np.nan  # the load from the origin on: unknown to the forecast
    # The instants, each segment's running hourly from its origin (rows before the frame's start too).
    origin_ns = frame.index[positions].asi8
    instants = origin_ns[:, None] + np.arange(-before, horizon)[None, :] * NS_PER_HOUR
    inside = ~outside.ravel()
    if not np.array_equal(source.index.asi8[inside], instants.ravel()[inside]):
        raise ValueError("the frame must be hourly with every hour once (HourlyData's frames are)")
    index = pd.DatetimeIndex(instants.ravel().view("datetime64[ns]"), name=frame.index.name)
    if frame.index.tz is not None:
        index = index.tz_localize("UTC").tz_convert(frame.index.tz)
    return pd.DataFrame(values.reshape(-1, values.shape[2]), index=index, columns=list(columns))
