from __future__ import annotations

import numpy as np
import pandas as pd

from stef_ray.config import SeasonalityConfig
from stef_ray.models.seasonality import FITTED_WITHOUT, FourierSeasonality

# The options that add columns beyond plain Fourier and exogenous terms, all off: for the tests that read
# single coefficients or compare a model with and without one option.
PLAIN = {"weekday_profiles": 0, "daily_yearly_interaction": 0, "exog_hinge_daily_interaction": 0, "cross_validate": False,
         "bridge_day_share": 0.0}


def _index(hours: int, tz: str = "UTC") -> pd.DatetimeIndex:
    return pd.date_range("2021-01-04", periods=hours, freq="h", tz=tz)  # a Monday


def test_seasonality__recovers_daily_and_weekly_amplitudes():
    index = _index(24 * 7 * 12)
    t = np.arange(len(index), dtype=float)
    target = 0.10 * np.sin(2 * np.pi * t / 24) + 0.04 * np.cos(2 * np.pi * t / 168)
    model = FourierSeasonality(SeasonalityConfig(daily_order=2, weekly_order=2, ridge_alpha=0, **PLAIN)).fit(index, target)
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
    config = SeasonalityConfig(grid_search=True, daily_grid=[1, 2, 4], weekly_grid=[1], yearly_grid=[0], **PLAIN)
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


def test_seasonality__daily_yearly_interaction_learns_a_daily_shape_that_changes_with_the_year():
    index = pd.date_range("2018-01-01", periods=24 * 365 * 3, freq="h", tz="UTC")
    wall = index.asi8 / 3.6e12
    # The daily swing is three times larger in one season than in the other.
    target = 0.1 * np.sin(2 * np.pi * wall / 24) * (1 + 0.5 * np.cos(2 * np.pi * wall / 8766))
    config = SeasonalityConfig(daily_order=2, weekly_order=0, yearly_order=2, ridge_alpha=0, **PLAIN)
    plain = FourierSeasonality(config).fit(index, target)
    seasonal = FourierSeasonality(config.model_copy(update={"daily_yearly_interaction": 1})).fit(index, target)
    assert "daily_sin1_x_yearly_cos1" in seasonal.feature_names
    np.testing.assert_allclose(seasonal.predict(index), target, atol=1e-8)
    assert np.abs(plain.predict(index) - target).max() > 0.04


def test_seasonality__daily_yearly_interaction_needs_the_yearly_terms():
    # One year of history drops the yearly terms, and with them their interactions.
    index = _index(24 * 200)
    config = SeasonalityConfig(daily_yearly_interaction=3)
    model = FourierSeasonality(config).fit(index, np.zeros(len(index)))
    assert not any("_x_yearly" in name for name in model.feature_names)


def test_seasonality__weekday_profiles_give_the_weekend_its_own_daily_shape():
    index = _index(24 * 7 * 20)
    hour = index.hour.to_numpy()
    weekend = index.dayofweek.to_numpy() >= 5
    # Weekdays peak at 09:00, weekends at 13:00: a shape no weekly order up to 7 can hold.
    target = 0.1 * np.cos(2 * np.pi * (hour - np.where(weekend, 13, 9)) / 24)
    config = SeasonalityConfig(daily_order=1, weekly_order=7, ridge_alpha=0, min_weeks_for_profiles=4, **PLAIN)
    plain = FourierSeasonality(config).fit(index, target)
    profiles = FourierSeasonality(config.model_copy(update={"weekday_profiles": 1})).fit(index, target)
    np.testing.assert_allclose(profiles.predict(index), target, atol=1e-8)
    assert np.abs(plain.predict(index) - target).max() > 0.02


def test_seasonality__bridge_day_moves_a_holiday_column_half_way_to_a_day_off():
    # A holiday column (mostly 0 on weekdays) marks days off with 1: the Friday after a Thursday
    # holiday reads 0.5 with a share of 0.5, every other day keeps its value.
    index = pd.date_range("2017-11-06", periods=24 * 7 * 4, freq="h", tz="US/Eastern")
    dates = index.tz_localize(None).normalize()
    exog = pd.DataFrame({"holiday": (dates == "2017-11-23").astype(float)}, index=index)
    model = FourierSeasonality(SeasonalityConfig(bridge_day_share=0.5)).fit(index, np.zeros(len(index)), exog)
    assert model.exog_spec[0]["off_value"] == 1.0
    column = model.design(index, exog)[:, model.feature_names.index("holiday")]
    expected = exog["holiday"].to_numpy() + 0.5 * (dates == "2017-11-24")
    np.testing.assert_array_equal(column, expected)


def test_seasonality__bridge_day_reads_a_workday_column_as_off_where_zero():
    index = pd.date_range("2015-01-05", periods=24 * 7 * 8, freq="h", tz="Australia/Melbourne")
    dates = index.tz_localize(None).normalize()
    workday = ((dates.dayofweek < 5) & (dates != "2015-01-22")).astype(float)  # a Thursday off
    exog = pd.DataFrame({"workday": workday}, index=index)
    model = FourierSeasonality(SeasonalityConfig(bridge_day_share=0.5)).fit(index, np.zeros(len(index)), exog)
    assert model.exog_spec[0]["off_value"] == 0.0
    column = model.design(index, exog)[:, model.feature_names.index("workday")]
    assert sorted(set(dates[column == 0.5])) == [pd.Timestamp("2015-01-23")]


def test_seasonality__cooling_that_acts_in_the_afternoon_needs_hinges_times_daily():
    index = _index(24 * 120)
    rng = np.random.default_rng(1)
    temperature = rng.uniform(5, 35, len(index))
    hour = index.hour.to_numpy()
    # Cooling above 25 °C, strongest at 15:00 and absent at 03:00; heating does not depend on the hour.
    target = 0.02 * np.maximum(temperature - 25, 0) * (1 + np.cos(2 * np.pi * (hour - 15) / 24))
    exog = pd.DataFrame({"temperature": temperature}, index=index)
    config = SeasonalityConfig(daily_order=1, weekly_order=0, temperature_knots=5, smoothing_hours=[],
                               exog_daily_interaction=1, ridge_alpha=0, min_weeks_for_profiles=4, **PLAIN)
    plain = FourierSeasonality(config).fit(index, target, exog)
    shaped = FourierSeasonality(config.model_copy(update={"exog_hinge_daily_interaction": 1})).fit(index, target, exog)
    assert "temperature_hinge5_x_daily1" in shaped.feature_names
    error = {name: np.sqrt(np.mean((model.predict(index, exog) - target) ** 2))
             for name, model in (("plain", plain), ("shaped", shaped))}
    assert error["shaped"] < 0.3 * error["plain"]


def test_seasonality__state_without_the_new_option_keys_loads_with_them_off():
    index = _index(24 * 30)
    exog = pd.DataFrame({"temperature": np.linspace(0, 30, len(index)),
                         "workday": (index.dayofweek < 5).astype(float)}, index=index)
    # Fitted as before the options existed (all off), then saved as such a bundle was: without their keys.
    model = FourierSeasonality(SeasonalityConfig(**FITTED_WITHOUT)).fit(index, np.sin(np.arange(len(index))), exog)
    state = model.to_state()
    for key in FITTED_WITHOUT:
        del state["config"][key]
    for spec in state["exog_spec"]:
        spec.pop("off_value", None)
    again = FourierSeasonality.from_state(state)
    assert again.config.weekday_profiles == 0 and again.config.bridge_day_share == 0
    np.testing.assert_allclose(again.predict(index, exog), model.predict(index, exog))


def test_seasonality__bridge_day_share_applies_part_of_the_holiday_effect_without_bridge_examples():
    # Training holds holidays but no bridge day; a forecast for a Monday before a Tuesday holiday then
    # gets half the holiday dip with a share of 0.5, and none without.
    index = pd.date_range("2015-01-05", periods=24 * 7 * 30, freq="h", tz="Australia/Melbourne")
    dates = index.tz_localize(None).normalize()
    holidays = pd.DatetimeIndex(["2015-02-04", "2015-03-11", "2015-04-15", "2015-05-20", "2015-06-24"])  # Wed
    workday = ((dates.dayofweek < 5) & ~dates.isin(holidays)).astype(float)
    target = 0.10 * workday  # every day off, weekend or holiday, 10 % lower
    exog = pd.DataFrame({"workday": workday}, index=index)
    config = SeasonalityConfig(daily_order=1, weekly_order=7, ridge_alpha=0, holiday_season=False, **PLAIN)
    future = pd.date_range("2015-08-03", periods=48, freq="h", tz="Australia/Melbourne")  # Mon, Tue
    future_exog = pd.DataFrame({"workday": np.r_[np.ones(24), np.zeros(24)]}, index=future)
    shared = FourierSeasonality(config.model_copy(update={"bridge_day_share": 0.5})).fit(index, target, exog)
    plain = FourierSeasonality(config).fit(index, target, exog)
    monday_dip = shared.predict(future, future_exog)[:24] - shared.predict(future, future_exog * 0 + 1)[:24]
    np.testing.assert_allclose(monday_dip, -0.05, atol=1e-6)
    np.testing.assert_allclose(plain.predict(future, future_exog)[:24], plain.predict(future, future_exog * 0 + 1)[:24])


def test_seasonality__weekday_profiles_and_hinge_shapes_dropped_on_short_history_with_a_note():
    index = _index(24 * 7 * 10)
    exog = pd.DataFrame({"temperature": np.linspace(0, 30, len(index))}, index=index)
    config = SeasonalityConfig(weekday_profiles=6, exog_hinge_daily_interaction=2, min_weeks_for_profiles=26,
                               cross_validate=False)
    model = FourierSeasonality(config).fit(index, np.zeros(len(index)), exog)
    assert not any(name.startswith("weekday") or "_hinge0_x_daily" in name for name in model.feature_names)
    assert any("weekday profiles and temperature x daily shapes dropped" in note for note in model.notes)
    assert FourierSeasonality.from_state(model.to_state()).config.weekday_profiles == 0
    longer = FourierSeasonality(config.model_copy(update={"min_weeks_for_profiles": 8})).fit(
        index, np.zeros(len(index)), exog)
    assert "weekday0_x_daily_sin1" in longer.feature_names


def _weekday_shaped_load(weeks: int, saturday_shape: float, seed: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Log load with one daily shape, plus on Saturdays a late-morning bump of ``saturday_shape``."""
    index = _index(24 * 7 * weeks)
    hour = index.hour.to_numpy()
    target = 0.2 * np.sin(2 * np.pi * hour / 24) + saturday_shape * (index.dayofweek == 5) * np.exp(-((hour - 11) / 3) ** 2)
    return index, target + np.random.default_rng(seed).normal(0, 0.02, len(index))


def test_seasonality__weekday_profiles_on_short_history_kept_only_where_the_cross_validation_finds_them():
    # Below min_weeks_for_profiles the profiles are on trial: kept where the weekdays' shapes differ,
    # left out (coefficients 0) where they do not, and the hinge x daily shapes dropped either way.
    config = SeasonalityConfig(weekday_profiles=6, exog_hinge_daily_interaction=2, min_weeks_for_profiles=26)
    index, shaped = _weekday_shaped_load(10, saturday_shape=0.1, seed=1)
    kept = FourierSeasonality(config).fit(index, shaped)
    profiles = [i for i, owner in enumerate(kept.feature_owners) if owner == "weekday_profiles"]
    assert len(profiles) == 7 * 2 * 6 and np.all(kept.coef[profiles] != 0)
    assert any(note.startswith("weekday profiles kept by 5-fold") for note in kept.notes)
    assert kept.config.exog_hinge_daily_interaction == 0 and kept.dropped_exog == []
    saturday = pd.date_range("2021-03-20", periods=24, freq="h", tz="UTC")  # the Saturday after training
    bump = np.exp(-((saturday.hour.to_numpy() - 11) / 3) ** 2)
    assert np.corrcoef(kept.predict(saturday) - 0.2 * np.sin(2 * np.pi * saturday.hour.to_numpy() / 24), bump)[0, 1] > 0.9

    index, flat = _weekday_shaped_load(10, saturday_shape=0.0, seed=1)
    left_out = FourierSeasonality(config).fit(index, flat)
    assert np.all(left_out.coef[profiles] == 0)
    assert any(note.startswith("weekday profiles left out by 5-fold") for note in left_out.notes)
    loaded = FourierSeasonality.from_state(left_out.to_state())
    np.testing.assert_allclose(loaded.predict(saturday), left_out.predict(saturday), rtol=0, atol=1e-12)


def test_seasonality__weekday_profiles_on_trial_are_left_out_when_gaps_leave_too_few_weeks_to_try_them():
    index, shaped = _weekday_shaped_load(6, saturday_shape=0.1, seed=2)
    shaped[: 24 * 14] = np.nan  # six weeks long, four observed: fewer than cv_folds (5) weeks
    model = FourierSeasonality(SeasonalityConfig(weekday_profiles=6, min_weeks_for_profiles=26)).fit(index, shaped)
    profiles = [i for i, owner in enumerate(model.feature_owners) if owner == "weekday_profiles"]
    assert profiles and np.all(model.coef[profiles] == 0)
    assert any(note.startswith("weekday profiles left out: 672 usable hours") for note in model.notes)


def test_seasonality__fit_predict_equals_fit_then_predict():
    """The hybrid fits and predicts the training rows in one go (the design built once); the numbers must
    be predict's, weekday profiles, temperature and working-day columns included."""
    index = _index(24 * 7 * 30, tz="Australia/Melbourne")
    rng = np.random.default_rng(5)
    exog = pd.DataFrame({"temperature": rng.uniform(5, 35, len(index)),
                         "workday": (index.dayofweek < 5).astype(float)}, index=index)
    target = 0.1 * np.sin(2 * np.pi * index.hour.to_numpy() / 24) + 0.01 * exog["temperature"].to_numpy()
    target = target + rng.normal(0, 0.01, len(index))
    once = FourierSeasonality().fit_predict(index, target, exog)
    model = FourierSeasonality().fit(index, target, exog)
    np.testing.assert_allclose(once, model.predict(index, exog), rtol=0, atol=1e-12)
    assert np.std(target - once) < 0.02  # and it fits


def _fitted_with_everything(tz: str) -> tuple[FourierSeasonality, pd.DataFrame]:
    """Two years of hourly data in ``tz`` with every kind of column: yearly terms, daily shapes, hinges,
    smoothing, a workday flag with bridge days, the holiday season."""
    index = pd.date_range("2019-01-01", "2020-12-31 23:00", freq="h", tz=tz)
    rng = np.random.default_rng(5)
    temperature = 15 + 10 * np.sin(2 * np.pi * np.arange(len(index)) / 8766) + rng.normal(0, 2, len(index))
    workday = (index.dayofweek < 5).astype(float)
    exog = pd.DataFrame({"temperature": temperature, "workday": workday}, index=index)
    target = 0.1 * np.sin(2 * np.pi * index.hour.to_numpy() / 24) + 0.01 * np.maximum(temperature - 20, 0) + 0.05 * workday
    model = FourierSeasonality(SeasonalityConfig(yearly_order=3, min_years_for_yearly=1))
    return model.fit(index, target + rng.normal(0, 0.01, len(index)), exog), exog


def test_seasonality__short_frames_from_the_calendar_table_equal_the_whole_design():
    # Forecast-sized frames take the calendar columns' part from a table by wall-clock hour: the same
    # numbers as the design, across both DST changes, far from the table (rebuilt) and in a batch of frames.
    model, exog = _fitted_with_everything("Europe/Amsterdam")
    for start in ("2020-03-25", "2020-10-20", "2019-02-01", "2020-03-26 05:00"):
        frame = exog.loc[start:].iloc[:192]
        direct = model._apply(model.design(frame.index, frame))
        np.testing.assert_allclose(model.predict(frame.index, frame), direct, rtol=0, atol=1e-12)
        assert model._calendar_table is not None
    batch = pd.concat([exog.iloc[1000:1192], exog.iloc[5000:5192], exog.iloc[9000:9192]])
    np.testing.assert_allclose(model.predict(batch.index, batch, segment_rows=192),
                               model._apply(model.design(batch.index, batch, segment_rows=192)), rtol=0, atol=1e-12)


def test_seasonality__calendar_table_follows_a_refit():
    model, exog = _fitted_with_everything("UTC")
    frame = exog.iloc[-192:]
    before = model.predict(frame.index, frame)
    model.fit(exog.index, np.zeros(len(exog)), exog)  # everything is now 0
    np.testing.assert_allclose(model.predict(frame.index, frame), 0.0, atol=1e-9)
    assert np.abs(before).max() > 0.05


def _load_with_a_wandering_input(weeks: int = 30, seed: int = 5) -> tuple[pd.DatetimeIndex, np.ndarray, pd.DataFrame]:
    """Log load that follows temperature (cooling above 20 °C, heating below 12 °C) and a persistent
    residual, next to 'wander': a slowly wandering series that has nothing to do with load."""
    index = _index(24 * 7 * weeks)
    rng = np.random.default_rng(seed)
    t = np.arange(len(index), dtype=float)

    def ar(phi: float, sd: float) -> np.ndarray:
        out = np.zeros(len(index))
        noise = rng.normal(0, sd, len(index))
        for i in range(1, len(index)):
            out[i] = phi * out[i - 1] + noise[i]
        return out

    temperature = 16 + 8 * np.sin(2 * np.pi * t / (24 * 7 * weeks)) + 4 * np.sin(2 * np.pi * (t - 9) / 24) + ar(0.95, 0.6)
    target = (0.08 * np.sin(2 * np.pi * t / 24) + 0.012 * np.maximum(temperature - 20, 0)
              + 0.008 * np.maximum(12 - temperature, 0) + ar(0.97, 0.004))
    return index, target, pd.DataFrame({"temperature": temperature, "wander": ar(0.98, 0.5)}, index=index)


def test_seasonality__cross_validation_leaves_out_an_input_that_says_nothing_about_load():
    index, target, exog = _load_with_a_wandering_input()
    config = SeasonalityConfig(daily_order=2, weekly_order=2)
    model = FourierSeasonality(config).fit(index, target, exog)
    assert model.dropped_exog == ["wander"]
    assert any("'wander' left out" in note for note in model.notes)
    assert FourierSeasonality.from_state(model.to_state()).dropped_exog == ["wander"]  # the bundle keeps it
    moved = exog.assign(wander=exog["wander"] + 3.0)
    np.testing.assert_allclose(model.predict(index, moved), model.predict(index, exog))
    # Without the cross-validation the same fit reads the wandering input: moving it moves the seasonality.
    plain = FourierSeasonality(config.model_copy(update={"cross_validate": False})).fit(index, target, exog)
    assert plain.dropped_exog == []
    assert np.abs(plain.predict(index, moved) - plain.predict(index, exog)).mean() > 1e-3
    # ... and temperature, which does drive load, is kept.
    warmer = exog.assign(temperature=exog["temperature"] + 3.0)
    assert np.abs(model.predict(index, warmer) - model.predict(index, exog)).mean() > 5e-3


def test_seasonality__cross_validation_picks_a_larger_penalty_for_noisier_data():
    index, _, exog = _load_with_a_wandering_input(weeks=12)
    temperature = exog["temperature"].to_numpy()
    target = 0.08 * np.sin(2 * np.pi * np.arange(len(index)) / 24) + 0.012 * np.maximum(temperature - 20, 0)
    config = SeasonalityConfig(daily_order=4, weekly_order=4, cv_alphas=[0.0, 1.0, 100.0, 10_000.0])
    clean = FourierSeasonality(config).fit(index, target, exog)
    noisy = target + np.random.default_rng(1).normal(0, 0.05, len(target))
    rough = FourierSeasonality(config).fit(index, noisy, exog)
    assert clean.alpha < rough.alpha
    assert FourierSeasonality.from_state(rough.to_state()).alpha == rough.alpha


def test_seasonality__without_cross_validation_fits_every_input_at_ridge_alpha():
    index, target, exog = _load_with_a_wandering_input(weeks=12)
    model = FourierSeasonality(SeasonalityConfig(cross_validate=False, ridge_alpha=0.5)).fit(index, target, exog)
    assert model.alpha == 0.5 and model.dropped_exog == []
    assert np.all(model.coef[[i for i, owner in enumerate(model.feature_owners) if owner == "wander"]] != 0)
