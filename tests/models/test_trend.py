from __future__ import annotations

import numpy as np
import pandas as pd

from stef_ray.models.trend import LogLinearTrend


def test_trend__recovers_known_growth_rate():
    index = pd.date_range("2020-01-01", periods=24 * 365 * 3, freq="h", tz="UTC")
    years = np.arange(len(index)) / 8766.0
    rng = np.random.default_rng(0)
    load = np.exp(np.log(40_000) + 0.03 * years + rng.normal(0, 0.01, len(index)))
    trend = LogLinearTrend().fit(index, load)
    assert abs(trend.slope_per_year - 0.03) < 1e-3
    assert abs(np.exp(trend.intercept) - 40_000) / 40_000 < 1e-3
    assert trend.r2 > 0.8


def test_trend__ignores_missing_hours_and_round_trips_state():
    index = pd.date_range("2020-01-01", periods=2000, freq="h", tz="UTC")
    load = np.exp(10 + 0.05 * np.arange(2000) / 8766.0)
    load[100:300] = np.nan
    trend = LogLinearTrend().fit(index, load)
    again = LogLinearTrend.from_state(trend.to_state())
    np.testing.assert_allclose(again.predict(index), trend.predict(index))
    np.testing.assert_allclose(np.exp(trend.predict(index))[:100], load[:100], rtol=1e-9)


def test_trend__disabled_gives_a_flat_level():
    index = pd.date_range("2020-01-01", periods=500, freq="h", tz="UTC")
    trend = LogLinearTrend(enabled=False).fit(index, np.exp(np.linspace(5, 6, 500)))
    assert trend.slope_per_year == 0.0 and np.ptp(trend.predict(index)) == 0
