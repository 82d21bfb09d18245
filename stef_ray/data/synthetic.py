"""Seeded synthetic hourly load with known structure, for tests and benchmarks.

load = exp(log_level + slope * years + daily + weekly + yearly + temperature effect + holiday dip) * noise
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_load(
    hours: int = 24 * 365,
    start: str = "2020-01-01",
    timezone: str = "UTC",
    seed: int = 0,
    base_mw: float = 50_000.0,
    slope_per_year: float = 0.02,
    daily_amplitude: float = 0.10,
    weekly_amplitude: float = 0.04,
    yearly_amplitude: float = 0.08,
    temperature_effect: float = 0.004,
    noise: float = 0.01,
    ar_coefficient: float = 0.8,
) -> pd.DataFrame:
    """A frame with columns timestamp, load (MW), temperature (°C), workday (0/1).

    Amplitudes are of the log load, so ``daily_amplitude=0.1`` is about ±10 %. The temperature effect is a
    cooling response: ``temperature_effect`` per °C above 20 °C. Noise is AR(1) in log space.
    """
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=hours, freq="h", tz=timezone, name="timestamp")
    wall = (index.tz_localize(None) - pd.Timestamp("1970-01-01")) / pd.Timedelta(hours=1)
    t_hours = np.asarray(wall, dtype=float)
    years = (t_hours - t_hours[0]) / 8766.0
    daily = daily_amplitude * np.sin(2 * np.pi * t_hours / 24.0 - np.pi / 2)
    weekly = weekly_amplitude * np.cos(2 * np.pi * t_hours / 168.0)
    yearly = yearly_amplitude * np.cos(2 * np.pi * t_hours / 8766.0)
    temperature = (
        15 + 8 * np.cos(2 * np.pi * (t_hours / 8766.0 - 0.55)) + 4 * np.sin(2 * np.pi * t_hours / 24.0 - 2)
        + rng.normal(0, 1.5, hours).cumsum() * 0.05
    )
    weekday = index.dayofweek < 5
    holiday = np.zeros(hours, dtype=bool)
    for offset in rng.choice(max(hours // 24, 1), size=max(hours // 24 // 40, 1), replace=False):
        holiday[offset * 24 : offset * 24 + 24] = True
    workday = (weekday & ~holiday).astype(float)
    ar = np.zeros(hours)
    shocks = rng.normal(0, noise, hours)
    for i in range(1, hours):
        ar[i] = ar_coefficient * ar[i - 1] + shocks[i]
    log_load = (
        np.log(base_mw) + slope_per_year * years + daily + weekly + yearly
        + temperature_effect * np.maximum(temperature - 20, 0) - 0.05 * (1 - workday) * weekday + ar
    )
    return pd.DataFrame(
        {"timestamp": index, "load": np.exp(log_load), "temperature": temperature, "workday": workday}
    )
