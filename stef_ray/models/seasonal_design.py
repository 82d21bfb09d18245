"""The columns of the seasonality's regression: Fourier harmonics, daily shapes by season and weekday, the
exogenous inputs' flags, hinges and daily shapes, and the holiday-season flag (see ``seasonality`` for why each
is there). Functions of the fitted settings (config, orders, exogenous spec) and the hours, so the fit, the
forecast and the calendar table build the same columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stef_ray.config import SeasonalityConfig
from stef_ray.features import (
    HOURS_PER_DAY,
    HOURS_PER_YEAR,
    bridge_day_flag,
    exponential_smoothing,
    fourier_names,
    fourier_terms,
    hinge_basis,
    holiday_season_flag,
    interaction_terms,
    seasonal_terms,
    wall_clock_hours,
    weekday_flags,
)


def exog_block(
    config: SeasonalityConfig, orders: tuple[int, int, int], exog_spec: list[dict], index: pd.DatetimeIndex, columns: dict[str, np.ndarray], segment_rows: int | None = None,
    bridge: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """The exogenous columns, their names, and the exogenous input each one comes from."""
    if not exog_spec:
        return np.empty((len(index), 0)), [], []
    wall = wall_clock_hours(index)
    daily = fourier_terms(wall, HOURS_PER_DAY, max(
        orders[0], config.exog_daily_interaction, config.exog_hinge_daily_interaction, 1))
    blocks, names, owners = [], [], []
    for spec in exog_spec:
        name = spec["name"]
        values = columns[name]
        first = len(names)
        if spec["binary"]:
            if config.bridge_day_share:
                # A bridge day counts as part of a day off: many take it off. A share of the learnt
                # effect, rather than a flag of its own, since most histories hold few bridge days
                # or none (measured: the share alone did as well as share + own flag on PJM).
                values = values + config.bridge_day_share * bridge * (spec["off_value"] - values)
            inter = paired(daily, spec["interaction"])
            blocks += [values[:, None], values[:, None] * inter]
            names += [name] + [f"{name}_x_daily{i}" for i in range(inter.shape[1])]
        else:
            hinges = hinge_basis(values, spec["knots"])
            blocks.append(hinges)
            names += [f"{name}_hinge{i}" for i in range(len(spec["knots"]) + 1)]
            for span in spec["spans"]:
                smooth = exponential_smoothing(values, span, segment_rows, config.smoothing_window_hours)
                blocks.append(hinge_basis(smooth, spec["knots"]))
                names += [f"{name}_ewm{span}_hinge{i}" for i in range(len(spec["knots"]) + 1)]
            inter = paired(daily, spec["interaction"])
            blocks.append(values[:, None] * inter)
            names += [f"{name}_x_daily{i}" for i in range(inter.shape[1])]
            if config.exog_hinge_daily_interaction:
                # Heating and cooling (each hinge's slope) act at different hours of the day.
                inter = paired(daily, config.exog_hinge_daily_interaction)
                blocks.append(interaction_terms(hinges, inter))
                names += [f"{name}_hinge{i}_x_daily{j}" for i in range(hinges.shape[1])
                          for j in range(inter.shape[1])]
        owners += [name] * (len(names) - first)
    return np.hstack(blocks), names, owners

def profile_block(config: SeasonalityConfig, orders: tuple[int, int, int], index: pd.DatetimeIndex) -> tuple[np.ndarray, list[str]]:
    """Daily shapes that change with the season (daily x yearly harmonics; only with the yearly terms,
    which need multi-year history) and with the day of the week (daily harmonics x weekday flags)."""
    c = config
    yearly_order = min(c.yearly_interaction_order, orders[2]) if c.daily_yearly_interaction else 0
    blocks, names = [], []
    daily_order = max(c.daily_yearly_interaction if yearly_order else 0, c.weekday_profiles)
    if daily_order:
        wall = wall_clock_hours(index)
        daily = fourier_terms(wall, HOURS_PER_DAY, daily_order)  # both blocks take their first harmonics
    if yearly_order:
        blocks.append(interaction_terms(paired(daily, c.daily_yearly_interaction),
                                        fourier_terms(wall, HOURS_PER_YEAR, yearly_order)))
        names += [f"{d}_x_{y}" for d in fourier_names("daily", c.daily_yearly_interaction)
                  for y in fourier_names("yearly", yearly_order)]
    if c.weekday_profiles:
        blocks.append(interaction_terms(weekday_flags(index), paired(daily, c.weekday_profiles)))
        names += [f"weekday{d}_x_{h}" for d in range(7) for h in fourier_names("daily", c.weekday_profiles)]
    return (np.hstack(blocks), names) if blocks else (np.empty((len(index), 0)), [])

def bridge_flag(exog_spec: list[dict], index: pd.DatetimeIndex, columns: dict[str, np.ndarray], segment_rows: int | None) -> np.ndarray:
    """1.0 on bridge days (see ``bridge_day_flag``); days off come from the binary exogenous columns."""
    off = np.zeros(len(index))
    for spec in exog_spec:
        if spec["binary"]:
            off = np.maximum(off, columns[spec["name"]] == spec["off_value"])
    return bridge_day_flag(index, off, segment_rows)

def exog_design(
    config: SeasonalityConfig, orders: tuple[int, int, int], exog_spec: list[dict], index: pd.DatetimeIndex, exog: pd.DataFrame | None, segment_rows: int | None
) -> tuple[np.ndarray, list[str], list[str]]:
    """The exogenous columns of the design (bridge days folded into the binary ones), their names and
    owners (see ``exog_block``)."""
    columns = float_columns(exog)
    binary = any(spec["binary"] for spec in exog_spec)
    bridge = bridge_flag(exog_spec, index, columns, segment_rows) if config.bridge_day_share and binary else None
    return exog_block(config, orders, exog_spec, index, columns, segment_rows, bridge)

def calendar_design(
    config: SeasonalityConfig, orders: tuple[int, int, int], index: pd.DatetimeIndex
) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[str]]:
    """The columns that depend on the wall clock alone: (blocks before the exog block, blocks after it,
    their names) in the design's column order."""
    seasonal, seasonal_names = seasonal_terms(index, *orders)
    profiles, profile_names = profile_block(config, orders, index)
    after, after_names = [], []
    if config.holiday_season:
        after, after_names = [holiday_season_flag(index)[:, None]], ["holiday_season"]
    return [seasonal, profiles], after, seasonal_names + profile_names, after_names


def float_columns(exog: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """The exogenous columns as float arrays, read once per design: on a forecast request's 200 rows one
    DataFrame column access costs more than the arithmetic on it."""
    if exog is None or not len(exog.columns):
        return {}
    values = exog.to_numpy(dtype=float)
    return {name: values[:, i] for i, name in enumerate(exog.columns)}


def paired(daily: np.ndarray, order: int) -> np.ndarray:
    """The first ``order`` daily harmonics (sin and cos) out of a (n, 2K) Fourier block."""
    half = daily.shape[1] // 2
    order = min(order, half)
    return np.hstack([daily[:, :order], daily[:, half : half + order]])
