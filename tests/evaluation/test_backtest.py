"""Rolling-origin backtest: shapes, baselines, and strictly no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.config import DataConfig
from stef_ray.data import frame_to_hourly
from stef_ray.evaluation.backtest import run_backtest
from stef_ray.exceptions import DataError


@pytest.fixture(scope="module")
def result(synthetic_hourly, tiny_model_config):
    return run_backtest(synthetic_hourly, tiny_model_config, pd.Timestamp("2020-02-20"), days=6, refit_every=3)


def test_backtest__tables_have_one_row_per_model_and_lead_hour(result):
    assert set(result.overall["model"]) == {"hybrid", "trend_fourier", "seasonal_naive_week", "seasonal_naive_day"}
    assert {"MAE", "MSE", "RMSE", "R2", "MAPE", "SMAPE"} <= set(result.overall.columns)
    assert len(result.by_horizon) == 4 * 24 and result.by_horizon["lead_hour"].tolist()[:3] == [1, 2, 3]
    hybrid = result.overall.set_index("model").loc["hybrid"]
    assert 0 <= hybrid["coverage_p10_p90"] <= 100 and hybrid["pinball"] > 0
    assert len(result.forecasts) == 4 * 6 * 24


def test_backtest__refits_say_what_each_fit_saw_and_kept(result):
    # 6 days refitted every 3: two fits, the second on 3 more days of data; each row says whether the neural
    # residual (enabled in the tiny config) went into that block's forecasts and with what evidence.
    refits = result.refits
    assert len(refits) == 2 and refits["origins"].tolist() == [3, 3]
    assert refits["first_origin"].tolist() == ["2020-02-20T00:00:00+00:00", "2020-02-23T00:00:00+00:00"]
    gap = pd.Timestamp(refits["trained_until"][1]) - pd.Timestamp(refits["trained_until"][0])
    assert gap == pd.Timedelta(days=3)
    assert refits["neural_kept"].dtype == bool and (refits["validation_mape"] > 0).all()
    for _, row in refits.iterrows():
        in_forecast = row["residual"].split(";")[0]  # what is summed; after the ";": why the net is not
        assert "per-hour ridges" in in_forecast and ("neural residual" in in_forecast) == row["neural_kept"]
        assert row["neural_kept"] or "neural residual" in row["residual"].split(";")[1]


def test_backtest__seasonal_naive_week_is_the_load_a_week_before(result, synthetic_hourly):
    rows = result.forecasts[result.forecasts["model"] == "seasonal_naive_week"]
    load = synthetic_hourly.frame["load"]
    expected = load.reindex(pd.DatetimeIndex(rows["timestamp"]) - pd.Timedelta(hours=168)).to_numpy()
    np.testing.assert_allclose(rows["forecast"].to_numpy(), expected)


def test_backtest__origins_are_local_midnight(result):
    origins = pd.DatetimeIndex(result.forecasts["origin"].unique())
    assert (origins.hour == 0).all() and len(origins) == 6


def test_backtest__origins_at_each_issue_hour_of_each_day_across_a_clock_change(synthetic_frame, tiny_model_config):
    # Two issue hours a day, over the night the clocks go forward in Melbourne (02:00 -> 03:00 on
    # 2020-10-04): 06:00 is the wall clock's, not six hours after midnight.
    from stef_ray.data.synthetic import synthetic_load
    from stef_ray.evaluation.backtest import origins_for

    frame = synthetic_load(hours=24 * 60, seed=1, start="2020-08-20", timezone="Australia/Melbourne")
    data = frame_to_hourly(frame, DataConfig(exog=["temperature", "workday"]))
    origins = origins_for(data, pd.Timestamp("2020-10-03"), days=3, issue_hours=[0, 6])
    assert [(o.day, o.hour) for o in origins] == [(3, 0), (3, 6), (4, 0), (4, 6), (5, 0), (5, 6)]
    config = tiny_model_config.model_copy(deep=True)
    config.forecast.issue_hours = [0, 12]
    result = run_backtest(frame_to_hourly(synthetic_frame, DataConfig(exog=["temperature", "workday"])), config,
                          pd.Timestamp("2020-02-20"), days=3, refit_every=0, models=["seasonal_naive_day"])
    issued = pd.DatetimeIndex(result.forecasts["origin"].unique())
    assert sorted(set(issued.hour)) == [0, 12] and len(issued) == 6


def test_backtest__no_leakage_from_load_after_each_origin(synthetic_frame, tiny_model_config):
    """Changing the load from day 4 of the window on must leave the first 3 days' forecasts identical,
    including the refitted model's (it refits before day 4 on data before day 4)."""
    config = DataConfig(exog=["temperature", "workday"])
    data = frame_to_hourly(synthetic_frame, config)
    changed = synthetic_frame.copy()
    cut = pd.Timestamp("2020-02-23", tz="UTC")
    changed.loc[changed["timestamp"] >= cut, "load"] *= 1.5
    data_changed = frame_to_hourly(changed, config)
    models = ("hybrid", "trend_fourier", "seasonal_naive_week", "seasonal_naive_day")
    a = run_backtest(data, tiny_model_config, pd.Timestamp("2020-02-20"), 5, 3, models).forecasts
    b = run_backtest(data_changed, tiny_model_config, pd.Timestamp("2020-02-20"), 5, 3, models).forecasts
    early = pd.DatetimeIndex(a["origin"]) < cut
    np.testing.assert_array_equal(a.loc[early, "forecast"].to_numpy(), b.loc[early, "forecast"].to_numpy())
    assert not np.allclose(a.loc[~early, "actual"].to_numpy(), b.loc[~early, "actual"].to_numpy())


def test_backtest__window_outside_the_data_is_a_clear_error(synthetic_hourly, tiny_model_config):
    with pytest.raises(DataError, match="does not fit in the data"):
        run_backtest(synthetic_hourly, tiny_model_config, pd.Timestamp("2020-02-25"), 30, 7)


def test_backtest__unknown_model_is_a_clear_error(synthetic_hourly, tiny_model_config):
    with pytest.raises(DataError, match="unknown backtest model 'prophet'"):
        run_backtest(synthetic_hourly, tiny_model_config, pd.Timestamp("2020-02-20"), 2, 0, ["prophet"])


@pytest.mark.parametrize(("text", "words"), [
    ("hybrid,prophet", "unknown model 'prophet'"),
    (" , ", "names no model"),
])
def test_backtest__models_flag_is_checked_before_any_work(text, words):
    from stef_ray.evaluation.backtest import parse_models
    from stef_ray.exceptions import ConfigError

    with pytest.raises(ConfigError, match=words) as caught:
        parse_models(text)
    assert "\n" not in str(caught.value)


def test_backtest__models_flag_keeps_order_and_drops_repeats():
    from stef_ray.evaluation.backtest import parse_models

    assert parse_models("lightgbm, hybrid,lightgbm") == ["lightgbm", "hybrid"]
