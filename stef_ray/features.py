"""Design matrices in numpy: time axes, Fourier terms, exogenous bases and the residual models' calendar inputs.

Seasonal terms run on the *local wall clock* (hours since 1970-01-01 00:00 local), so the daily profile
follows local time across DST changes: a 23-hour day simply skips one hour of the profile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOURS_PER_DAY = 24.0
HOURS_PER_WEEK = 168.0
HOURS_PER_YEAR = 8766.0  # 365.25 days
DAYS_PER_YEAR = HOURS_PER_YEAR / 24
MONDAY_OFFSET_HOURS = 96.0  # 1970-01-01 was a Thursday; Monday 1970-01-05 00:00 starts the weekly phase


NS_PER_HOUR = 3.6e12


def absolute_hours(index: pd.DatetimeIndex) -> np.ndarray:
    """Hours since the Unix epoch (UTC instants); the trend's time axis."""
    return _naive_hours(index)  # a tz-aware index's integers are UTC instants


def wall_clock_hours(index: pd.DatetimeIndex) -> np.ndarray:
    """Hours since 1970-01-01 00:00 on the local wall clock; the seasonal time axis (read-only array).

    One design reads it several times (Fourier terms, weekday profiles, calendar flags) and the UTC to local
    conversion is the costly part, so the last index's answer is kept: by identity, and an index is
    immutable."""
    cached = _last_wall
    if cached is not None and cached[0] is index:
        return cached[1]
    local = index.tz_localize(None) if index.tz is not None else index
    hours = _naive_hours(local)
    hours.flags.writeable = False  # shared between callers
    _remember_wall(index, hours)
    return hours


_last_wall: tuple[pd.DatetimeIndex, np.ndarray] | None = None


def _remember_wall(index: pd.DatetimeIndex, hours: np.ndarray) -> None:
    global _last_wall
    _last_wall = (index, hours)  # one tuple assignment: threads see the old pair or the new one


def wall_clock_days(index: pd.DatetimeIndex) -> np.ndarray:
    """Whole local days since 1970-01-01 (int64), from the wall clock."""
    return np.floor(wall_clock_hours(index) / HOURS_PER_DAY).astype(np.int64)


def _naive_hours(index: pd.DatetimeIndex) -> np.ndarray:
    # Integer nanoseconds over a float: the same numbers as (index - 1970-01-01) / 1 h, five times faster, and
    # these run on every forecast request (as_unit: an index may hold seconds or microseconds).
    return index.as_unit("ns").asi8 / NS_PER_HOUR


def fourier_terms(hours: np.ndarray, period: float, order: int) -> np.ndarray:
    """Columns sin(2πkt/P), cos(2πkt/P) for k = 1..order; shape (len(hours), 2 * order)."""
    if order == 0:
        return np.empty((len(hours), 0))
    # Harmonic k from k-1 by the angle-addition formulas: two sin/cos evaluations instead of 2 * order,
    # which dominate a fit on 80,000 rows; the numbers agree with sin(k * angle) to ~1e-12.
    angle = 2 * np.pi * np.asarray(hours, dtype=float) / period
    out = np.empty((2 * order, len(angle)))
    sin1, cos1 = np.sin(angle), np.cos(angle)
    out[0], out[order] = sin1, cos1
    for k in range(1, order):
        np.multiply(out[k - 1], cos1, out=out[k])
        out[k] += out[order + k - 1] * sin1
        np.multiply(out[order + k - 1], cos1, out=out[order + k])
        out[order + k] -= out[k - 1] * sin1
    return np.ascontiguousarray(out.T)  # row-major, as callers stack and multiply by rows


def fourier_names(prefix: str, order: int) -> list[str]:
    return [f"{prefix}_sin{k}" for k in range(1, order + 1)] + [f"{prefix}_cos{k}" for k in range(1, order + 1)]


def seasonal_terms(index: pd.DatetimeIndex, daily: int, weekly: int, yearly: int) -> tuple[np.ndarray, list[str]]:
    """Daily, weekly and yearly Fourier blocks on the wall clock, and their names."""
    wall = wall_clock_hours(index)
    blocks = [
        fourier_terms(wall, HOURS_PER_DAY, daily),
        fourier_terms(wall - MONDAY_OFFSET_HOURS, HOURS_PER_WEEK, weekly),
        fourier_terms(wall, HOURS_PER_YEAR, yearly),
    ]
    names = fourier_names("daily", daily) + fourier_names("weekly", weekly) + fourier_names("yearly", yearly)
    return np.hstack(blocks), names


def interaction_terms(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Every column of ``left`` times every column of ``right``; shape (n, left cols * right cols),
    ``left``'s column varying slowest."""
    return (left[:, :, None] * right[:, None, :]).reshape(len(left), -1)


def weekday_flags(index: pd.DatetimeIndex) -> np.ndarray:
    """One 0/1 column per local day of the week, Monday first; shape (n, 7)."""
    weekday = (wall_clock_days(index) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    return (weekday[:, None] == np.arange(7)[None, :]).astype(float)


def bridge_day_flag(index: pd.DatetimeIndex, off_flag: np.ndarray, segment_rows: int | None = None) -> np.ndarray:
    """1.0 for hours of a working weekday between two days off (the Friday after a Thursday holiday, the
    Monday before a Tuesday one), else 0.0. Days off are Saturdays, Sundays and the days where
    ``off_flag`` (hourly 0/1) is 1 in any hour. A neighbour day outside the frame counts as off only if it
    is a weekend day. ``segment_rows``: several frames end to end, each judged on its own.

    Many people take such a day off, so the load looks half like a holiday; a holiday flag alone misses it.
    """
    day = wall_clock_days(index)
    segment = np.arange(len(day)) // segment_rows if segment_rows else np.zeros(len(day), dtype=np.int64)
    key = segment * 10_000_000 + day  # ~27,000 years of days per segment
    keys, row_day = np.unique(key, return_inverse=True)
    flagged = np.zeros(len(keys))
    np.maximum.at(flagged, row_day, np.nan_to_num(np.asarray(off_flag, dtype=float)) > 0.5)
    weekend = ((keys % 10_000_000 + 3) % 7) >= 5  # day 0 (1970-01-01) was a Thursday: (0 + 3) % 7 = 3
    off = weekend | (flagged > 0)

    def neighbour_off(step: int) -> np.ndarray:
        wanted = keys + step
        at = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)
        present = keys[at] == wanted
        weekend_there = ((wanted % 10_000_000 + 3) % 7) >= 5
        return np.where(present, off[at], weekend_there)

    bridge = ~off & neighbour_off(-1) & neighbour_off(1)
    return bridge[row_day].astype(float)


def holiday_season_flag(index: pd.DatetimeIndex) -> np.ndarray:
    """1.0 for hours whose local date lies in 24 Dec .. 1 Jan, else 0.0."""
    days = wall_clock_days(index).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    month = months.astype(np.int64) % 12 + 1
    day = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    return (((month == 12) & (day >= 24)) | ((month == 1) & (day <= 1))).astype(float)


def season_weights(index: pd.DatetimeIndex, reference: pd.Timestamp, days: float, floor: float = 0.0) -> np.ndarray:
    """A weight per timestamp from how far its day of the year lies from ``reference``'s (either way round
    the year): a Gaussian of ``days``, not below ``floor``."""
    hours = wall_clock_hours(index) - wall_clock_hours(pd.DatetimeIndex([reference]))[0]
    apart = hours / 24 % DAYS_PER_YEAR  # in [0, a year)
    apart = np.minimum(apart, DAYS_PER_YEAR - apart)
    return floor + (1 - floor) * np.exp(-0.5 * (apart / days) ** 2)


def is_binary(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.isin(finite, (0.0, 1.0)).all())


def exponential_smoothing(
    values: np.ndarray, span_hours: int, segment_rows: int | None = None, window_hours: int = 0
) -> np.ndarray:
    """EWM with the given span, causal (uses only the past and the present hour); NaN-tolerant.

    ``window_hours`` > 0: the smoothing's weights (1 - a)^j for the last ``window_hours`` hours only,
    renormalised over the hours that have a value. Each hour's value then depends on that window alone, so a
    forecast from a frame holding ``window_hours - 1`` hours before its first row equals one from the whole
    history (the forecast path's warm-up, ``FourierSeasonality.warmup_hours``). 0: pandas'
    ``ewm(adjust=False, ignore_na=True)`` from the frame's first row (bundles before format 8).

    ``segment_rows``: ``values`` is one or more series of that length end to end (a batch of forecast
    requests in the Serve app), each smoothed on its own. For the unbounded smoothing without NaNs that runs
    as the first-order filter y[t] = a x[t] + (1 - a) y[t-1], y[0] = x[0] in one scipy call for the whole
    batch (pandas' numbers to 1e-13, ten times faster per request); scipy.signal is imported only then,
    since importing it costs 1.5 s, which the CLI should not pay.
    """
    values = np.asarray(values, dtype=float)
    if window_hours:
        return _windowed_smoothing(values, span_hours, segment_rows or len(values), window_hours)
    if segment_rows is None:
        return pd.Series(values).ewm(span=span_hours, adjust=False, ignore_na=True).mean().to_numpy()
    segments = values.reshape(-1, segment_rows)
    if np.isfinite(segments).all():
        from scipy.signal import lfilter

        alpha = 2.0 / (span_hours + 1.0)
        zi = (1.0 - alpha) * segments[:, :1]
        return lfilter([alpha], [1.0, alpha - 1.0], segments, axis=1, zi=zi)[0].ravel()
    columns = pd.DataFrame(segments.T)
    return columns.ewm(span=span_hours, adjust=False, ignore_na=True).mean().to_numpy().T.ravel()


def _windowed_smoothing(values: np.ndarray, span_hours: int, segment_rows: int, window_hours: int) -> np.ndarray:
    """``exponential_smoothing`` with ``window_hours``: a weighted mean of each hour's last ``window_hours``
    hours within its segment (fewer at a segment's start), weights (1 - a)^j, a = 2 / (span + 1)."""
    weights = (1.0 - 2.0 / (span_hours + 1.0)) ** np.arange(window_hours)
    out = np.empty_like(values)
    for start in range(0, len(values), segment_rows):
        segment = values[start : start + segment_rows]
        present = np.isfinite(segment)
        n = len(segment)
        total = np.convolve(np.where(present, segment, 0.0), weights)[:n]
        weight = np.convolve(present.astype(float), weights)[:n]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + n] = np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)
    return out


def hinge_basis(values: np.ndarray, knots: list[float]) -> np.ndarray:
    """Piecewise-linear basis: x and max(x - k, 0) for each knot; captures heating/cooling bends."""
    return np.column_stack([values] + [np.maximum(values - knot, 0.0) for knot in knots])


# The names of ``calendar_inputs``' columns, as they stand among the residual models' channels.
CALENDAR_CHANNELS = ["hour_sin", "hour_cos", "week_sin", "week_cos"]


def calendar_inputs(index: pd.DatetimeIndex) -> np.ndarray:
    """The residual models' calendar channels: hour-of-day and day-of-week on the unit circle; shape (n, 4)."""
    wall = wall_clock_hours(index)
    day = 2 * np.pi * wall / HOURS_PER_DAY
    week = 2 * np.pi * (wall - MONDAY_OFFSET_HOURS) / HOURS_PER_WEEK
    return np.column_stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)])
