"""The InfluxDB sink against a real server (victoria-metrics on loopback, see conftest.py).

Each test writes under its own model name, so tests sharing the session's server do not see each
other's points. The server keeps every sample it receives (no de-duplication), so a point sent twice
shows up twice: "none duplicated" below really means "sent once".
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stef_ray.exceptions import ConfigError, DataError
from stef_ray.integrations.influx import InfluxSettings, InfluxSink
from stef_ray.integrations.influx_points import (
    MEASUREMENT_ACTUAL,
    MEASUREMENT_FORECAST,
    MEASUREMENT_METRICS,
    forecast_lines,
)
from stef_ray.integrations.influx_spool import Spool

HERE = Path(__file__).resolve().parent
ISSUE_TIME = pd.Timestamp("2014-06-01 00:00", tz="Australia/Melbourne")


def make_forecast(issue_time: pd.Timestamp, seed: int, quantiles: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    timestamps = pd.date_range(issue_time, periods=24, freq="h")  # origin = first forecast hour
    trend = np.full(24, 4500.0)
    seasonality = 600 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    residual = rng.normal(0, 30, 24)
    frame = pd.DataFrame(
        {
            "timestamp": timestamps,
            "forecast": trend + seasonality + residual,
            "trend": trend,
            "seasonality": seasonality,
            "residual": residual,
        }
    )
    if quantiles:
        frame["p10"] = frame["forecast"] - 100
        frame["p50"] = frame["forecast"]
        frame["p90"] = frame["forecast"] + 100
    return frame


def settings_for(server, tmp_path, **overrides) -> InfluxSettings:
    values = {
        "url": server.url if server is not None else "http://127.0.0.1:9",
        "token": "test-token",
        "spool_dir": tmp_path / "spool",
        "flush_interval_s": 0.1,
        "retry_max_s": 0.3,
        "timeout_s": 2.0,
    }
    values.update(overrides)
    return InfluxSettings(**values)


def samples(server, measurement: str, field: str, **tags: str) -> list[tuple[dict, int, float]]:
    """(tags, timestamp ms, value) of every stored sample of one field."""
    selector = ",".join(f'{key}="{value}"' for key, value in tags.items())
    rows = []
    for series in server.export(f"{measurement}_{field}{{{selector}}}"):
        rows.extend((series["metric"], ts, value) for ts, value in zip(series["timestamps"], series["values"], strict=True))
    return rows


def test_influx_sink__forecast_metrics_and_actuals_read_back(tsdb, tmp_path):
    forecast = make_forecast(ISSUE_TIME, seed=1, quantiles=True)
    actuals = pd.DataFrame({"timestamp": forecast["timestamp"], "load": np.linspace(4000, 5000, 24)})
    metrics = {"MAE": 542.3, "MSE": 450123.8, "RMSE": 670.9, "R2": 0.9678, "MAPE": 1.23, "SMAPE": 1.12}
    with InfluxSink(settings_for(tsdb, tmp_path)) as sink:
        assert sink.submit_forecast(forecast, model_name="readback", model_version="7", issue_time=ISSUE_TIME) == 24
        assert sink.submit_metrics(metrics, model_name="readback", model_version="7", issue_time=ISSUE_TIME) == 1
        assert sink.submit_actuals(actuals) == 24
        assert sink.flush(timeout_s=10)

    expected_ms = [int(ts.timestamp()) * 1000 for ts in forecast["timestamp"]]
    for field in ("forecast", "trend", "seasonality", "residual", "p10", "p50", "p90"):
        rows = samples(tsdb, MEASUREMENT_FORECAST, field, model_name="readback")
        assert [ts for _, ts, _ in rows] == expected_ms, field
        # victoria-metrics keeps about 12 significant digits
        np.testing.assert_allclose([value for _, _, value in rows], forecast[field], rtol=1e-9, atol=1e-9)
    tags = rows[0][0]
    assert tags["model_version"] == "7"
    assert tags["issue_time"] == "2014-05-31T14:00:00Z"  # Melbourne midnight in UTC
    lead_hours = [value for _, _, value in samples(tsdb, MEASUREMENT_FORECAST, "lead_hour", model_name="readback")]
    assert lead_hours == list(range(1, 25))

    metric_rows = samples(tsdb, MEASUREMENT_METRICS, "MAPE", model_name="readback")
    assert [(ts, value) for _, ts, value in metric_rows] == [(int(ISSUE_TIME.timestamp()) * 1000, 1.23)]
    actual_rows = [row for row in samples(tsdb, MEASUREMENT_ACTUAL, "load") if row[1] in set(expected_ms)]
    np.testing.assert_allclose(sorted(value for _, _, value in actual_rows), np.linspace(4000, 5000, 24))
    assert not list((tmp_path / "spool").glob("*.lp")), "delivered segments must be removed"


def test_forecast_lines__same_forecast_gives_identical_points():
    # Retries are harmless only if a re-sent point has the same identity: measurement, tags, timestamp.
    forecast = make_forecast(ISSUE_TIME, seed=2)
    first = forecast_lines(forecast, model_name="m", model_version="1", issue_time=ISSUE_TIME)
    in_utc = forecast.assign(timestamp=forecast["timestamp"].dt.tz_convert("UTC"))
    again = forecast_lines(in_utc, model_name="m", model_version="1", issue_time=ISSUE_TIME.tz_convert("Asia/Seoul"))
    assert first == again
    assert len(set(first)) == 24


def test_forecast_lines__naive_timestamp_or_missing_column_is_a_data_error():
    forecast = make_forecast(ISSUE_TIME, seed=3)
    with pytest.raises(DataError, match="no timezone"):
        forecast_lines(forecast, model_name="m", model_version="1", issue_time=ISSUE_TIME.tz_localize(None))
    with pytest.raises(DataError, match=r"lacks column.*residual"):
        forecast_lines(forecast.drop(columns="residual"), model_name="m", model_version="1", issue_time=ISSUE_TIME)


def test_forecast_lines__missing_component_is_left_out_not_zeroed():
    forecast = make_forecast(ISSUE_TIME, seed=4)
    forecast.loc[0, "residual"] = np.nan
    lines = forecast_lines(forecast, model_name="m", model_version="1", issue_time=ISSUE_TIME)
    assert "residual=" not in lines[0]
    assert "residual=" in lines[1]


def test_influx_settings__environment_wins_over_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("INFLUXDB_URL=http://from-file:8086\nINFLUXDB_TOKEN=file-token\nINFLUXDB_BUCKET=b1\n")
    settings = InfluxSettings.from_env(env_file, environ={"INFLUXDB_URL": "http://from-env:8086"})
    assert settings.url == "http://from-env:8086"
    assert settings.token.get_secret_value() == "file-token"
    assert settings.bucket == "b1"
    assert settings.org == "open-stef"
    assert "file-token" not in repr(settings)


def test_influx_settings__missing_token_or_bad_value_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="INFLUXDB_TOKEN is not set"):
        InfluxSettings.from_env(tmp_path / "absent.env", environ={})
    with pytest.raises(ConfigError, match="flush_interval_s"):
        InfluxSettings.from_env(None, environ={"INFLUXDB_TOKEN": "t"}, flush_interval_s=-1)
    with pytest.raises(ValueError, match="Extra inputs"):
        InfluxSettings(token="t", bukket="typo")


@pytest.mark.slow
def test_influx_sink__outage_points_spooled_then_delivered_once(tsdb, tmp_path):
    forecasts = [make_forecast(ISSUE_TIME + pd.Timedelta(days=day), seed=day) for day in range(3)]
    with InfluxSink(settings_for(tsdb, tmp_path)) as sink:
        sink.submit_forecast(forecasts[0], model_name="outage", model_version="1", issue_time=ISSUE_TIME)
        assert sink.flush(timeout_s=10)
        tsdb.stop()
        for day in (1, 2):
            sink.submit_forecast(
                forecasts[day], model_name="outage", model_version="1", issue_time=ISSUE_TIME + pd.Timedelta(days=day)
            )
        assert not sink.flush(timeout_s=0.5)
        assert sink.spool.pending_lines() == 48
        assert sink.last_error is not None
        tsdb.start()
        assert sink.flush(timeout_s=10)
        assert sink.delivered_lines == 72
    rows = samples(tsdb, MEASUREMENT_FORECAST, "forecast", model_name="outage")
    assert len(rows) == 72
    assert len({(row[0]["issue_time"], row[1]) for row in rows}) == 72


@pytest.mark.slow
def test_influx_sink__hundred_forecasts_with_server_stopped_midway_all_present_once(tsdb, tmp_path):
    # The acceptance check, with a short outage (benchmarks/influx_outage.py does the 30 s one).
    issue_times = [ISSUE_TIME + pd.Timedelta(hours=hour) for hour in range(100)]
    outage = threading.Timer(0.5, tsdb.stop)
    with InfluxSink(settings_for(tsdb, tmp_path)) as sink:
        outage.start()
        for index, issue_time in enumerate(issue_times):
            sink.submit_forecast(make_forecast(issue_time, seed=index), model_name="accept", model_version="1", issue_time=issue_time)
            if index == 60:
                outage.join()
                assert sink.spool.pending_lines() > 0
                time.sleep(2.0)
                tsdb.start()
            time.sleep(0.02)
        assert sink.flush(timeout_s=20)
    assert sink.failed_attempts > 0, "the server was down for part of the run: some delivery must have failed"
    rows = samples(tsdb, MEASUREMENT_FORECAST, "forecast", model_name="accept")
    per_key = Counter((row[0]["issue_time"], row[1]) for row in rows)
    assert len(per_key) == 2400
    assert max(per_key.values()) == 1
    assert len(rows) == 2400


def test_influx_sink__submit_does_not_wait_for_a_hanging_server(tmp_path):
    # A server that accepts connections and never answers: the flusher hangs on it, submit must not.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    sink = InfluxSink(settings_for(None, tmp_path, url=url, timeout_s=3.0))
    try:
        sink.submit_forecast(make_forecast(ISSUE_TIME, seed=5), model_name="m", model_version="1", issue_time=ISSUE_TIME)
        time.sleep(0.3)  # the flusher is now inside a write that will hang for timeout_s
        started = time.perf_counter()
        for hour in range(1, 11):
            issue_time = ISSUE_TIME + pd.Timedelta(hours=hour)
            sink.submit_forecast(make_forecast(issue_time, seed=hour), model_name="m", model_version="1", issue_time=issue_time)
        elapsed_s = time.perf_counter() - started
        assert elapsed_s < 1.0, f"10 submits took {elapsed_s:.2f} s behind a hanging server"
        assert sink.spool.pending_lines() == 11 * 24
    finally:
        sink.close(timeout_s=0)
        listener.close()
    assert Spool(tmp_path / "spool").pending_lines() == 11 * 24, "undelivered points stay spooled after close"


CRASHING_WRITER = """
import os, sys
sys.path[:0] = sys.argv[2:4]
from stef_ray.integrations.influx_points import forecast_lines
from stef_ray.integrations.influx_spool import Spool
from test_influx import make_forecast, ISSUE_TIME
spool = Spool(sys.argv[1])
spool.append(forecast_lines(make_forecast(ISSUE_TIME, 6), model_name="crash", model_version="1", issue_time=ISSUE_TIME))
os.write(spool._active_fd, b"power_demand_forecast,model_name=crash fore")  # killed mid-line
os._exit(1)
"""


@pytest.mark.slow
def test_influx_sink__segment_of_a_crashed_writer_is_delivered_without_its_half_line(tsdb, tmp_path, caplog):
    spool_dir = tmp_path / "spool"
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(spool_dir), str(HERE), str(HERE.parents[1])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert len(list(spool_dir.glob("*.active"))) == 1
    with caplog.at_level(logging.WARNING), InfluxSink(settings_for(tsdb, tmp_path)) as sink:
        assert sink.flush(timeout_s=10)
    assert any("half-written line" in message for message in caplog.messages)
    rows = samples(tsdb, MEASUREMENT_FORECAST, "forecast", model_name="crash")
    assert len(rows) == 24
    assert not list(spool_dir.glob("*.active"))
    assert not list(spool_dir.glob("*.lp"))


def test_ingest__measured_hours_reach_the_store_once_and_a_resend_changes_nothing(tsdb, tmp_path, monkeypatch, capsys):
    # `stef-ray ingest FILE` reads with train's reader and flags; hours it interpolated are not actuals.
    from stef_ray.cli.main import main as cli_main

    index = pd.date_range("2011-03-01 00:00", periods=72, freq="h")
    load = 5000 + 800 * np.sin(np.arange(72) / 24 * 2 * np.pi)
    keep = np.ones(72, dtype=bool)
    keep[30:32] = False  # a 2-hour gap the reader interpolates
    pd.DataFrame({"time": index[keep].strftime("%d/%m/%Y %H:%M"), "mw": load[keep].round(1)}).to_csv(
        tmp_path / "actuals.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFLUXDB_URL", tsdb.url)
    monkeypatch.setenv("INFLUXDB_TOKEN", "test-token")
    monkeypatch.setenv("STEF_RAY_SPOOL_DIR", str(tmp_path / "spool"))
    argv = ["ingest", "actuals.csv", "--timestamp-col", "time", "--target-col", "mw", "--dayfirst",
            "--timezone", "Asia/Seoul", "--since", "2011-03-01 06:00"]
    assert cli_main(argv) == 0
    said = capsys.readouterr().out
    assert "✓ 64 hours of actual load" in said and "delivered" in said

    seoul = index.tz_localize("Asia/Seoul")
    expected = {int(ts.timestamp()) * 1000: value for ts, value, k in zip(seoul, load.round(1), keep, strict=True)
                if k and ts >= seoul[6]}
    window = {int(ts.timestamp()) * 1000 for ts in seoul}

    def stored() -> list[tuple[int, float]]:
        return [(ts, value) for _, ts, value in samples(tsdb, MEASUREMENT_ACTUAL, "load") if ts in window]

    first = stored()
    assert sorted(first) == sorted(expected.items())  # every measured hour once, no interpolated one
    assert cli_main(argv) == 0  # sent again: the same points, key for key (InfluxDB overwrites, so nothing
    # changes there; this test server keeps every sample, so the resend shows as identical twins)
    assert set(stored()) == set(first)

    assert cli_main([*argv[:-1], "yesterday-ish"]) != 0
    assert "--since 'yesterday-ish' is not a date" in capsys.readouterr().err
