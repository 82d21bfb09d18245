"""The Python API as a notebook user calls it: a DataFrame in, forecasts out, the same numbers as the CLI's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray import HybridForecaster
from stef_ray.config import ModelConfig, ResidualConfig
from stef_ray.exceptions import DataError, ModelNotFoundError

TINY = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=5, boosted_weight=0.0))


@pytest.fixture(scope="module")
def df(synthetic_frame) -> pd.DataFrame:
    return synthetic_frame  # timestamp, load, temperature, workday


@pytest.fixture(scope="module")
def fitted(df) -> HybridForecaster:
    return HybridForecaster(TINY, exog=["temperature", "workday"]).fit(df.iloc[:-24])


def test_api__fit_predict_gives_the_components_and_quantiles_of_the_cli_forecast(fitted, df):
    from stef_ray.forecasting import forecast_at

    forecast = fitted.predict()
    assert list(forecast.columns) == ["timestamp", "forecast", "trend", "seasonality", "residual", "p10", "p50", "p90"]
    assert len(forecast) == 24 and forecast["timestamp"].iloc[0] == pd.Timestamp(df["timestamp"].iloc[-24])
    np.testing.assert_allclose(forecast[["trend", "seasonality", "residual"]].sum(axis=1), forecast["forecast"])
    expected = forecast_at(fitted.model, fitted.data).frame
    pd.testing.assert_frame_equal(forecast.reset_index(drop=True), expected, check_like=False)
    assert "per-hour ridges" in forecast.attrs["residual_models"]


def test_api__a_datetime_index_and_an_origin_and_horizon(fitted, df):
    indexed = df.set_index("timestamp")
    origin = df["timestamp"].iloc[-48]
    forecast = fitted.predict(indexed, origin=origin, horizon=6)
    assert len(forecast) == 6 and forecast["timestamp"].iloc[0] == origin
    with pytest.raises(DataError, match="horizon 30 is out of range"):
        fitted.predict(indexed, horizon=30)


def test_api__save_and_load_forecast_the_same(fitted, df, tmp_path):
    path = fitted.save(tmp_path / "bundle")
    loaded = HybridForecaster.load(path)
    with pytest.raises(ModelNotFoundError, match="pass df"):
        loaded.predict()
    pd.testing.assert_frame_equal(loaded.predict(df.iloc[:-24]), fitted.predict())


def test_api__backtest_scores_rolling_daily_forecasts(df):
    frame = HybridForecaster(TINY, exog=["temperature", "workday"]).backtest(df, start=df["timestamp"].iloc[-24 * 7],
                                                                            days=6, refit_every=3)
    assert set(frame["lead_hour"]) == set(range(1, 25)) and frame["origin"].nunique() == 6
    assert 0 < frame.attrs["overall"]["MAPE"] < 10


def test_api__bad_input_is_a_one_line_error(df):
    with pytest.raises(DataError, match="column 'temperature' not found"):
        HybridForecaster(TINY, exog=["temperature"]).fit(df.drop(columns="temperature"))
    with pytest.raises(ModelNotFoundError, match="not fitted"):
        HybridForecaster(TINY).predict(df)
    with pytest.raises(TypeError, match="pandas DataFrame"):
        HybridForecaster(TINY).fit(df.to_numpy())


def test_api__the_readme_example_runs(tmp_path, monkeypatch):
    # The README's Python block, as written, on 90 days of the built-in dataset as the user's `df`.
    import re
    from pathlib import Path

    from stef_ray.data.builtin import write_dataset

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## The Python API\s+```python\n(.*?)```", readme, re.S).group(1)
    df = pd.read_csv(write_dataset("vic-elec", tmp_path / "vic_elec.csv")).iloc[-24 * 90:]
    monkeypatch.chdir(tmp_path)
    namespace = {"df": df}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["forecast"]["forecast"].between(2000, 12000).all() and len(namespace["forecast"]) == 24
    assert (tmp_path / "models" / "mine" / "manifest.json").is_file()
