from __future__ import annotations

import numpy as np
import pandas as pd

from stef_ray.config import SeasonalityConfig
from stef_ray.models.seasonality import FourierSeasonality


def _index(hours: int, tz: str = "UTC") -> pd.DatetimeIndex:
    return pd.date_range("2021-01-04", periods=hours, freq="h", tz=tz)  # a Monday


def test_seasonality__recovers_daily_and_weekly_amplitudes():
    index = _index(24 * 7 * 12)
    t = np.arange(len(index), dtype=float)
    target = 0.10 * np.sin(2 * np.pi * t / 24) + 0.04 * np.cos(2 * np.pi * t / 168)
    model = FourierSeasonality(SeasonalityConfig(daily_order=2, weekly_order=2, ridge_alpha=0)).fit(index, target)
    np.testing.assert_allclose(model.predict(index), target, atol=1e-6)
    names = model.feature_names
    raw_coef = model.coef / model.column_scale
    assert abs(raw_coef[names.index("daily_sin1")] - 0.10) < 1e-4
    assert abs(raw_coef[names.index("weekly_cos1")] - 0.04) < 1e-4


def test_seasonality__yearly_dropped_on_short_history_with_a_note():
    index = _index(24 * 100)
    model = FourierSeasonality(SeasonalityConfig(yearly_order=3)).fit(index, np.zeros(len(index)))
    assert model.orders[2] == 0
    assert any("yearly terms dropped" in note for note in model.notes)


def test_seasonality__temperature_hinge_learns_cooling_bend():
    index = _index(24 * 120)
    rng = np.random.default_rng(3)
    temperature = rng.uniform(5, 35, len(index))
    target = 0.01 * np.maximum(temperature - 22, 0)
    exog = pd.DataFrame({"temperature": temperature}, index=index)
    config = SeasonalityConfig(daily_order=1, weekly_order=1, smoothing_hours=[], exog_daily_interaction=0,
                               temperature_knots=5, ridge_alpha=0)
    model = FourierSeasonality(config).fit(index, target, exog)
    fitted = model.predict(index, exog)
    assert np.sqrt(np.mean((fitted - target) ** 2)) < 0.01 * target.std() + 0.003


def test_seasonality__follows_local_clock_across_dst():
    # A profile tied to local hours stays at the same local hours after the clocks change.
    index = pd.date_range("2024-03-01", "2024-04-30", freq="h", tz="Europe/Amsterdam")
    local_hour = index.hour.to_numpy()
    target = 0.1 * np.sin(2 * np.pi * local_hour / 24)
    model = FourierSeasonality(SeasonalityConfig(daily_order=1, weekly_order=0, ridge_alpha=0)).fit(index, target)
    np.testing.assert_allclose(model.predict(index), target, atol=1e-6)


def test_seasonality__grid_search_picks_the_needed_order():
    index = _index(24 * 7 * 10)
    t = np.arange(len(index), dtype=float)
    target = 0.05 * np.sin(2 * np.pi * 4 * t / 24) + np.random.default_rng(0).normal(0, 0.005, len(t))
    config = SeasonalityConfig(grid_search=True, daily_grid=[1, 2, 4], weekly_grid=[1], yearly_grid=[0])
    model = FourierSeasonality(config).fit(index, target)
    assert model.orders[0] == 4


def test_seasonality__state_round_trip_with_exog():
    index = _index(24 * 30)
    exog = pd.DataFrame({"temperature": np.linspace(0, 30, len(index)),
                         "workday": (index.dayofweek < 5).astype(float)}, index=index)
    target = 0.01 * exog["temperature"].to_numpy() - 0.05 * exog["workday"].to_numpy()
    model = FourierSeasonality().fit(index, target, exog)
    again = FourierSeasonality.from_state(model.to_state())
    np.testing.assert_allclose(again.predict(index, exog), model.predict(index, exog))



def test_seasonality__holiday_season_flag_learns_the_christmas_dip():
    index = pd.date_range("2020-11-01", "2021-02-28 23:00", freq="h", tz="Australia/Melbourne")
    local = index.tz_localize(None)
    in_season = ((local.month == 12) & (local.day >= 24)) | ((local.month == 1) & (local.day <= 1))
    target = np.where(in_season, -0.08, 0.0)
    config = SeasonalityConfig(daily_order=1, weekly_order=1, ridge_alpha=0)
    with_flag = FourierSeasonality(config).fit(index, target)
    without = FourierSeasonality(config.model_copy(update={"holiday_season": False})).fit(index, target)
    assert "holiday_season" in with_flag.feature_names
    np.testing.assert_allclose(with_flag.predict(index), target, atol=1e-6)
    assert np.abs(without.predict(index) - target).max() > 0.05


def test_seasonality__state_without_holiday_season_key_loads_as_fitted_before_the_flag():
    # Bundles written before the flag existed: their config lacks the key and their coefficients lack
    # the column, so loading must keep the flag off and give the same predictions.
    index = _index(24 * 30)
    model = FourierSeasonality(SeasonalityConfig(holiday_season=False)).fit(index, np.sin(np.arange(len(index))))
    state = model.to_state()
    del state["config"]["holiday_season"]
    again = FourierSeasonality.from_state(state)
    assert again.config.holiday_season is False
    np.testing.assert_allclose(again.predict(index), model.predict(index))
