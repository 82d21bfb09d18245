"""The forecast service: gaps refused, fallbacks said out loud, horizons bounded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.exceptions import DataError, InsufficientHistoryError
from stef_ray.forecasting import forecast_at, forecast_from_frames


def test_forecasting__returns_the_next_24_hours_with_components(fitted_model, synthetic_hourly):
    history, future = synthetic_hourly.frame.iloc[:-24], synthetic_hourly.frame.iloc[-24:]
    result = forecast_from_frames(fitted_model, history, future)
    frame = result.frame
    assert list(frame.columns) == ["timestamp", "forecast", "trend", "seasonality", "residual", "p10", "p50", "p90"]
    assert (pd.DatetimeIndex(frame["timestamp"]) == future.index).all()
    assert result.notes == [] and np.isfinite(frame.drop(columns="timestamp").to_numpy()).all()


def test_forecasting__gap_in_last_168h_is_refused(fitted_model, synthetic_hourly):
    history = synthetic_hourly.frame.iloc[:-24].copy()
    history.iloc[-30:-25, history.columns.get_loc("load")] = np.nan
    with pytest.raises(DataError, match="load is missing at .* within the last 168 hours"):
        forecast_from_frames(fitted_model, history)


def test_forecasting__too_short_history_is_refused(fitted_model, synthetic_hourly):
    with pytest.raises(InsufficientHistoryError, match=r"needs the last 671 hours before the origin \(168 of load, and 503 more of temperature for"):
        forecast_from_frames(fitted_model, synthetic_hourly.frame.iloc[:100])


def test_forecasting__missing_future_exog_falls_back_with_a_note(fitted_model, synthetic_hourly):
    history = synthetic_hourly.frame.iloc[:-24]
    result = forecast_from_frames(fitted_model, history, future=None)
    assert result.notes and "same hour one week earlier" in result.notes[0]
    explicit = history.iloc[-168:-144][["temperature", "workday"]].set_index(synthetic_hourly.frame.index[-24:])
    expected = forecast_from_frames(fitted_model, history, explicit)
    np.testing.assert_allclose(result.frame["forecast"], expected.frame["forecast"])


def test_forecasting__horizon_is_bounded(fitted_model, synthetic_hourly):
    history, future = synthetic_hourly.frame.iloc[:-24], synthetic_hourly.frame.iloc[-24:]
    assert len(forecast_from_frames(fitted_model, history, future, horizon=6).frame) == 6
    with pytest.raises(DataError, match="1..24 hours"):
        forecast_from_frames(fitted_model, history, future, horizon=48)


def test_forecasting__forecast_at_uses_rows_after_origin_as_known_future(fitted_model, synthetic_hourly):
    origin = synthetic_hourly.frame.index[-48]
    result = forecast_at(fitted_model, synthetic_hourly, origin)
    assert result.origin == origin and result.notes == []
    assert pd.Timestamp(result.frame["timestamp"].iloc[-1]) == synthetic_hourly.frame.index[-25]


def test_forecasting__quantile_band_matches_the_backtest_path_with_long_history(fitted_model, synthetic_hourly):
    # The forecast passes the days before the lookback on, so its band (offsets times the adaptive scale)
    # is the one predict_components gives on the whole frame, as in the backtest, and so is its point.
    frame = synthetic_hourly.frame.copy()
    rows = np.arange(len(frame) - 24 * 8, len(frame) - 48)
    frame.iloc[rows, frame.columns.get_loc("load")] *= np.where(np.arange(len(rows)) % 2, 1.15, 0.85)
    history, future = frame.iloc[:-24], frame.iloc[-24:]
    result = forecast_from_frames(fitted_model, history, future).frame
    masked = frame.copy()
    masked.iloc[-24:, masked.columns.get_loc("load")] = np.nan
    components = fitted_model.predict_components(masked, np.array([len(frame) - 24]))
    expected = fitted_model.to_megawatts(components)
    assert components.interval_scale[0] > 1.0
    np.testing.assert_allclose(np.log(result["p90"] / result["p10"]), np.log(expected["p90"][0] / expected["p10"][0]),
                               rtol=1e-3)
    np.testing.assert_allclose(result["forecast"], expected["forecast"][0], rtol=1e-9)


def test_forecasting__a_calendar_holiday_ahead_comes_from_the_calendar_not_last_week(thanksgiving_eve):
    # Data made with `holidays: US` ends the night before Thanksgiving: the forecast must treat the day as
    # the holiday the calendar says it is. The fallback (same hour a week earlier) once made it a Thursday.
    _, data, model = thanksgiving_eve
    assert data.calendar == "US" and data.frame["holiday"].sum() == 48  # Columbus and Veterans Day
    result = forecast_at(model, data)
    assert result.origin == pd.Timestamp("2021-11-25", tz="America/New_York")  # Thanksgiving
    assert len(result.notes) == 1 and "for temperature:" in result.notes[0]  # only the weather fell back
    history = data.frame
    future = history.iloc[-168:-144][["temperature"]].set_index(pd.DatetimeIndex(result.frame["timestamp"]))
    holiday = forecast_from_frames(model, history, future.assign(holiday=1.0))
    np.testing.assert_allclose(result.frame["forecast"], holiday.frame["forecast"])
    workday = forecast_from_frames(model, history, future.assign(holiday=0.0))
    assert np.abs(workday.frame["forecast"] - holiday.frame["forecast"]).max() > 1.0
