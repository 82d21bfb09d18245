"""Training data read back from the time-series store (victoria-metrics on loopback, see conftest.py)."""

from __future__ import annotations

import urllib.request

import numpy as np
import pandas as pd
import pytest

from stef_ray.config import DataConfig, StoreSource
from stef_ray.exceptions import ConfigError, DataError
from stef_ray.integrations.influx import InfluxSettings, InfluxSink
from stef_ray.integrations.store_source import read_store_history


def test_store_source__stored_actuals_come_back_as_the_hourly_grid_they_were(tsdb, tmp_path):
    # What `stef-ray ingest` or POST /actuals wrote is what the weekly retrain trains on: same hours, same
    # values, in the configured zone, the short gap interpolated as from a file, the holiday flag added.
    index = pd.date_range("2012-06-01", periods=24 * 40, freq="h", tz="US/Eastern")
    load = 30000 + 5000 * np.sin(np.arange(len(index)) / 24 * 2 * np.pi)
    measured = np.ones(len(index), dtype=bool)
    measured[100:102] = False
    settings = InfluxSettings(url=tsdb.url, token="test-token", spool_dir=tmp_path / "spool", flush_interval_s=0.1)
    with InfluxSink(settings) as sink:
        sink.submit_actuals(pd.DataFrame({"timestamp": index[measured], "load": load[measured]}))
        assert sink.flush(timeout_s=10)
    # victoria-metrics makes fresh points searchable within a second or two; the test does not wait for it.
    urllib.request.urlopen(f"{tsdb.url}/internal/force_flush", timeout=10).close()

    end = index[-1] + pd.Timedelta(hours=1)
    config = DataConfig(timezone="US/Eastern", holidays="NERC", store=StoreSource(
        reader="export", export_url=tsdb.url, days=40, end=end.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M")))
    data = read_store_history(config)
    assert data.frame.index.equals(index)
    np.testing.assert_allclose(data.frame["load"].to_numpy()[measured], load[measured], rtol=1e-9)
    assert np.isfinite(data.frame["load"].to_numpy()[100:102]).all()  # interpolated, and reported
    assert any("interpolated 1 short gaps" in line for line in data.report.lines())
    assert data.frame.loc["2012-07-04", "holiday"].eq(1).all() and data.exog == ["holiday"]


def test_store_source__an_empty_window_or_weather_it_cannot_hold_is_one_clear_line(tsdb):
    store = StoreSource(reader="export", export_url=tsdb.url, days=30, end="1999-01-01T00:00")
    with pytest.raises(DataError, match=r"no power_demand_actual points in the time-series store .* fill it with "
                       r"`stef-ray ingest FILE` or POST /actuals"):
        read_store_history(DataConfig(store=store))
    with pytest.raises(ConfigError, match=r"data.store holds load only, so data.exog \(temperature\)"):
        read_store_history(DataConfig(exog=["temperature"], store=store))
    with pytest.raises(ValueError, match="reader 'export' needs export_url"):
        StoreSource(reader="export")


def test_load_data__end_ends_the_store_window_there_as_a_retrain_as_of_that_time_reads_it(tsdb, tmp_path):
    # The scheduler's `--end {scheduled_for}`: a retrain as of a past time reads the store's window ending
    # then, not now (which here holds nothing), and nothing from after it.
    from stef_ray.cli.options import load_data

    index = pd.date_range("2011-03-01", periods=24 * 60, freq="h", tz="Australia/Brisbane")
    load = 5000 + 800 * np.sin(np.arange(len(index)) / 24 * 2 * np.pi)
    settings = InfluxSettings(url=tsdb.url, token="test-token", spool_dir=tmp_path / "spool", flush_interval_s=0.1)
    with InfluxSink(settings) as sink:
        sink.submit_actuals(pd.DataFrame({"timestamp": index, "load": load}))
        assert sink.flush(timeout_s=10)
    urllib.request.urlopen(f"{tsdb.url}/internal/force_flush", timeout=10).close()
    config = DataConfig(timezone="Australia/Brisbane", store=StoreSource(reader="export", export_url=tsdb.url, days=28))
    with pytest.raises(DataError, match="no power_demand_actual points"):
        load_data(config)  # the window ending now
    data = load_data(config, end="2011-04-15T03:00:00+09:00")  # 2011-04-15 04:00 in Brisbane
    assert data.frame.index[-1] == pd.Timestamp("2011-04-15 03:00", tz="Australia/Brisbane")
    assert data.frame.index[0] == pd.Timestamp("2011-03-18 04:00", tz="Australia/Brisbane")  # 28 days before
    np.testing.assert_allclose(data.frame["load"].to_numpy(), load[index.get_indexer(data.frame.index)], rtol=1e-9)
