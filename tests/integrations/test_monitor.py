"""The accuracy monitor against a real server (victoria-metrics on loopback, see conftest.py).

Forecasts and actuals go in through the InfluxSink and come back through the monitor's ExportReader.
Actuals carry no tags, so each test writes into its own month: a 7-day window never sees another
test's points. Webhooks are received by a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest

from stef_ray.cli.main import main
from stef_ray.integrations.influx import InfluxSettings, InfluxSink
from stef_ray.integrations.influx_points import MEASUREMENT_ALERT
from stef_ray.ops.monitor import MonitorConfig, evaluate
from stef_ray.ops.monitor_readers import ExportReader

HOURS = 24


def sink_for(tsdb, tmp_path) -> InfluxSink:
    settings = InfluxSettings(
        url=tsdb.url, token="test-token", spool_dir=tmp_path / "spool", flush_interval_s=0.1, retry_max_s=0.3,
        timeout_s=2.0, fsync=False,
    )
    return InfluxSink(settings)


def hourly_actuals(first_issue: pd.Timestamp, days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    timestamps = pd.date_range(first_issue, periods=days * HOURS, freq="h")
    load_mw = 5000 + 800 * np.sin(np.arange(len(timestamps)) / HOURS * 2 * np.pi) + rng.normal(0, 50, len(timestamps))
    return pd.DataFrame({"timestamp": timestamps, "load": load_mw})


def forecasts_from(actuals: pd.DataFrame, issue_time: pd.Timestamp, factor_by_lead) -> pd.DataFrame:
    """The 24 hours after `issue_time`, each = actual x factor_by_lead(lead hour)."""
    day = actuals[(actuals["timestamp"] >= issue_time) & (actuals["timestamp"] < issue_time + pd.Timedelta(hours=HOURS))]
    lead_hours = np.arange(1, HOURS + 1)
    forecast = day["load"].to_numpy() * np.array([factor_by_lead(lead) for lead in lead_hours])
    return pd.DataFrame(
        {"timestamp": day["timestamp"].to_numpy(), "forecast": forecast, "trend": forecast, "seasonality": 0.0,
         "residual": 0.0}
    )


def store(tsdb, tmp_path, actuals: pd.DataFrame, forecasts: list[tuple[pd.DataFrame, str, str, pd.Timestamp]]) -> None:
    with sink_for(tsdb, tmp_path) as sink:
        sink.submit_actuals(actuals)
        for frame, name, version, issue_time in forecasts:
            sink.submit_forecast(frame, model_name=name, model_version=version, issue_time=issue_time)
        assert sink.flush(timeout_s=10)
    # make the fresh samples searchable now rather than after the server's next flush
    urllib.request.urlopen(f"{tsdb.url}/internal/force_flush", timeout=10).close()


def store_fleet(tsdb, tmp_path, issue_time: pd.Timestamp, series: dict[str, tuple[pd.DataFrame, float]]) -> None:
    """Each series' actuals and its forecast (actual x factor) issued at ``issue_time``, tagged with its id."""
    with sink_for(tsdb, tmp_path) as sink:
        for series_id, (actuals, factor) in series.items():
            sink.submit_actuals(actuals, series_id=series_id)
            sink.submit_forecast(forecasts_from(actuals, issue_time, lambda lead, f=factor: f), model_name="hybrid",
                                 model_version="1", issue_time=issue_time, series_id=series_id)
        assert sink.flush(timeout_s=10)
    urllib.request.urlopen(f"{tsdb.url}/internal/force_flush", timeout=10).close()


def alert_samples(tsdb, now: pd.Timestamp) -> dict[str, list[float]]:
    """Values of each forecast_alert field stored at `now`."""
    found = {}
    for field in ("mape", "threshold"):
        values = []
        for series in tsdb.export(f'{MEASUREMENT_ALERT}_{field}{{scope="overall"}}'):
            values += [v for ts, v in zip(series["timestamps"], series["values"], strict=True)
                       if ts == int(now.timestamp()) * 1000]
        found[field] = values
    return found


@pytest.fixture
def webhook():
    """A real HTTP server on loopback that records the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alert", received
    server.shutdown()
    server.server_close()


def test_evaluate__mape_by_lead_hour_matches_truth_and_alert_point_and_webhook_fire(tsdb, tmp_path, webhook):
    webhook_url, received = webhook
    first_issue = pd.Timestamp("2019-01-10 00:00", tz="UTC")
    actuals = hourly_actuals(first_issue, days=2, seed=1)
    # day 1 over-forecasts, day 2 under-forecasts, by (4 + 0.1 x lead hour) %: MAPE at lead h = 4 + 0.1 h
    over = forecasts_from(actuals, first_issue, lambda lead: 1 + (4 + 0.1 * lead) / 100)
    under = forecasts_from(actuals, first_issue + pd.Timedelta(days=1), lambda lead: 1 - (4 + 0.1 * lead) / 100)
    store(tsdb, tmp_path, actuals, [(over, "hybrid", "3", first_issue),
                                    (under, "hybrid", "3", first_issue + pd.Timedelta(days=1))])
    now = first_issue + pd.Timedelta(days=2)
    config = MonitorConfig(mape_threshold=5.0, webhook_url=webhook_url, source="export", export_url=tsdb.url)

    with sink_for(tsdb, tmp_path) as sink:
        report = evaluate(ExportReader(tsdb.url), now, config, sink=sink)

    expected_by_lead = {lead: 4 + 0.1 * lead for lead in range(1, HOURS + 1)}
    assert report.pairs == 2 * HOURS
    assert sorted(report.by_lead_hour) == list(range(1, HOURS + 1))
    np.testing.assert_allclose([report.by_lead_hour[h] for h in range(1, 25)], list(expected_by_lead.values()), rtol=1e-9)
    assert report.overall_mape == pytest.approx(4 + 0.1 * 12.5, rel=1e-9)  # 5.25 %
    assert report.alert
    assert report.alert_point_delivered

    stored = alert_samples(tsdb, now)
    assert stored["mape"] == [pytest.approx(5.25, rel=1e-9)]
    assert stored["threshold"] == [5.0]

    assert len(received) == 1
    body = received[0]
    assert body["alert"] is True
    assert body["mape"] == pytest.approx(5.25, rel=1e-9)
    assert body["threshold"] == 5.0
    assert body["pairs"] == 48
    assert body["window_end"] == "2019-01-12T00:00:00+00:00"
    assert body["by_lead_hour"]["24"] == pytest.approx(6.4, rel=1e-9)
    assert body["by_model"] == [{"model_name": "hybrid", "model_version": "3", "mape": pytest.approx(5.25, rel=1e-9),
                                 "pairs": 48}]
    assert "5.25 %" in body["text"]


def test_evaluate__below_threshold_no_alert_no_webhook_no_retrain(tsdb, tmp_path, webhook):
    webhook_url, received = webhook
    first_issue = pd.Timestamp("2019-03-10 00:00", tz="UTC")
    actuals = hourly_actuals(first_issue, days=1, seed=2)
    store(tsdb, tmp_path, actuals, [(forecasts_from(actuals, first_issue, lambda lead: 1.02), "hybrid", "3", first_issue)])
    now = first_issue + pd.Timedelta(days=1)
    retrains = []
    config = MonitorConfig(mape_threshold=5.0, webhook_url=webhook_url, retrain_on_alert=True,
                           state_file=tmp_path / "state.json", source="export", export_url=tsdb.url)

    with sink_for(tsdb, tmp_path) as sink:
        report = evaluate(ExportReader(tsdb.url), now, config, sink=sink, submit_retrain=retrains.append)

    assert report.overall_mape == pytest.approx(2.0, rel=1e-9)
    assert not report.alert
    assert report.alert_point_delivered is None
    assert alert_samples(tsdb, now) == {"mape": [], "threshold": []}
    assert received == []
    assert retrains == []


def test_evaluate__two_model_versions_get_separate_mape(tsdb, tmp_path):
    first_issue = pd.Timestamp("2019-05-10 00:00", tz="UTC")
    actuals = hourly_actuals(first_issue, days=1, seed=3)
    store(tsdb, tmp_path, actuals, [
        (forecasts_from(actuals, first_issue, lambda lead: 1.06), "hybrid", "3", first_issue),  # champion
        (forecasts_from(actuals, first_issue, lambda lead: 0.97), "hybrid", "4", first_issue),  # challenger
    ])
    config = MonitorConfig(mape_threshold=10.0, source="export", export_url=tsdb.url)

    report = evaluate(ExportReader(tsdb.url), first_issue + pd.Timedelta(days=1), config)

    scores = {(score.model_name, score.model_version): (score.mape, score.pairs) for score in report.by_model}
    assert scores.keys() == {("hybrid", "3"), ("hybrid", "4")}
    assert scores["hybrid", "3"] == (pytest.approx(6.0, rel=1e-9), HOURS)
    assert scores["hybrid", "4"] == (pytest.approx(3.0, rel=1e-9), HOURS)
    assert report.overall_mape == pytest.approx(4.5, rel=1e-9)
    assert report.by_lead_hour[1] == pytest.approx(4.5, rel=1e-9)


def test_evaluate__a_fleets_series_meet_their_own_actuals_and_get_their_own_mape(tsdb, tmp_path):
    # Two series of a fleet on the same hours, with different loads: joined on the time alone, each
    # forecast would meet both series' actuals and no MAPE below would hold.
    first_issue = pd.Timestamp("2019-06-10 00:00", tz="UTC")
    north, south = hourly_actuals(first_issue, days=1, seed=4), hourly_actuals(first_issue, days=1, seed=5)
    south = south.assign(load=south["load"] * 3)
    store_fleet(tsdb, tmp_path, first_issue, {"north": (north, 1.02), "south": (south, 1.08)})
    config = MonitorConfig(mape_threshold=10.0, source="export", export_url=tsdb.url)

    report = evaluate(ExportReader(tsdb.url), first_issue + pd.Timedelta(days=1), config)

    assert [(s.series_id, round(s.mape, 9), s.pairs) for s in report.by_series] == [("south", 8.0, HOURS),
                                                                                 ("north", 2.0, HOURS)]
    assert report.pairs == 2 * HOURS and report.overall_mape == pytest.approx(5.0, rel=1e-9)
    assert report.to_dict()["by_series"][0] == {"series_id": "south", "mape": pytest.approx(8.0), "pairs": HOURS}
    assert not report.alert and report.series_alerts == []


def test_evaluate__one_series_above_the_threshold_alerts_though_the_fleets_mape_is_within(tsdb, tmp_path, webhook):
    # The overall MAPE (4.5 %) is within the 5 % threshold; south's 7 % would be averaged away without
    # its own alert.
    first_issue = pd.Timestamp("2019-11-10 00:00", tz="UTC")
    north, south = hourly_actuals(first_issue, days=1, seed=6), hourly_actuals(first_issue, days=1, seed=7)
    store_fleet(tsdb, tmp_path, first_issue, {"north": (north, 1.02), "south": (south, 1.07)})
    url, received = webhook
    config = MonitorConfig(mape_threshold=5.0, min_pairs=24, source="export", export_url=tsdb.url, webhook_url=url)
    now = first_issue + pd.Timedelta(days=1)

    with sink_for(tsdb, tmp_path / "alerts") as sink:
        report = evaluate(ExportReader(tsdb.url), now, config, sink=sink)

    assert report.alert and report.series_alerts == ["south"] and report.alert_point_delivered
    assert report.overall_mape == pytest.approx(4.5, rel=1e-9)
    assert "above it: south 7.00 %" in report.summary()
    assert [body["series_alerts"] for body in received] == [["south"]]
    urllib.request.urlopen(f"{tsdb.url}/internal/force_flush", timeout=10).close()
    points = {(series["metric"]["scope"], series["metric"].get("series_id")): series["values"]
              for series in tsdb.export("forecast_alert_mape")
              if int(now.timestamp()) * 1000 in series["timestamps"]}
    assert points.keys() == {("series", "south")}  # no overall alert: the fleet as a whole is within
    assert points["series", "south"] == [pytest.approx(7.0)]


def test_evaluate__failing_webhook_is_logged_and_retrain_waits_for_cooldown(tsdb, tmp_path, caplog):
    first_issue = pd.Timestamp("2019-07-10 00:00", tz="UTC")
    actuals = hourly_actuals(first_issue, days=1, seed=4)
    store(tsdb, tmp_path, actuals, [(forecasts_from(actuals, first_issue, lambda lead: 1.08), "hybrid", "3", first_issue)])
    now = first_issue + pd.Timedelta(days=1)
    config = MonitorConfig(mape_threshold=5.0, webhook_url="http://127.0.0.1:9/alert", webhook_timeout_s=1,
                           retrain_on_alert=True, retrain_cooldown_hours=24, state_file=tmp_path / "state.json",
                           source="export", export_url=tsdb.url)
    retrains = []

    def submit(reason: str) -> str:
        retrains.append(reason)
        return f"job-{len(retrains)}"

    first = evaluate(ExportReader(tsdb.url), now, config, submit_retrain=submit)
    again = evaluate(ExportReader(tsdb.url), now + pd.Timedelta(hours=1), config, submit_retrain=submit)

    assert first.alert
    assert first.webhook_delivered is False
    assert "alert webhook http://127.0.0.1:9/alert failed" in caplog.text
    assert first.retrain_job_id == "job-1"
    assert len(retrains) == 1
    assert "8.00 %" in retrains[0]
    assert again.alert
    assert again.retrain_job_id is None
    assert again.retrain_note.startswith("skipped: last early retrain at 2019-07-11T00:00:00+00:00")
    assert json.loads((tmp_path / "state.json").read_text())["job_id"] == "job-1"


def test_monitor_cli__alert_prints_table_and_exits_1(tsdb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no stray .env; the spool lands in tmp_path
    monkeypatch.setenv("INFLUXDB_URL", tsdb.url)
    monkeypatch.setenv("INFLUXDB_TOKEN", "test-token")
    first_issue = pd.Timestamp("2019-09-10 00:00", tz="UTC")
    actuals = hourly_actuals(first_issue, days=1, seed=5)
    store(tsdb, tmp_path, actuals, [(forecasts_from(actuals, first_issue, lambda lead: 1.07), "champion", "9", first_issue)])

    code = main(["monitor", "--source", "export", "--url", tsdb.url, "--now", "2019-09-11T00:00", "--threshold", "5"])

    out = capsys.readouterr().out
    assert code == 1
    assert "overall MAPE   7.00 %  (24 pairs)  ALERT" in out
    assert "champion         9     7.00      24" in out
    assert "h24   7.00" in out
    assert "alert point: written" in out
    assert alert_samples(tsdb, pd.Timestamp("2019-09-11", tz="UTC"))["mape"] == [pytest.approx(7.0, rel=1e-9)]


def test_monitor_cli__empty_window_says_nothing_to_evaluate_and_exits_0(tsdb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INFLUXDB_TOKEN", raising=False)

    code = main(["monitor", "--source", "export", "--url", tsdb.url, "--now", "2001-01-01T00:00Z"])

    out = capsys.readouterr().out
    assert code == 0
    assert "nothing to evaluate in 2000-12-25 00:00Z .. 2001-01-01 00:00Z: no stored forecast" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "export"], "error: --source export needs --url"),
        (["--source", "export", "--url", "http://127.0.0.1:9", "--threshold", "-1"],
         "error: monitor options: mape_threshold: Input should be greater than 0"),
        (["--source", "export", "--url", "http://127.0.0.1:9", "--now", "yesterday-ish"],
         "error: --now 'yesterday-ish' is not a time"),
    ],
)
def test_monitor_cli__bad_options_are_one_line_errors_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    code = main(["monitor", *argv])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1


def test_monitor_cli__the_scheduled_config_alerts_the_webhook_named_in_the_environment(
    tsdb, tmp_path, monkeypatch, capsys, webhook
):
    # As the compose stack's hourly monitor job runs it: deploy/monitor.yaml, the webhook from .env.
    from pathlib import Path

    url, received = webhook
    config = Path(__file__).resolve().parents[2] / "deploy" / "monitor.yaml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFLUXDB_URL", tsdb.url)
    monkeypatch.setenv("INFLUXDB_TOKEN", "test-token")
    monkeypatch.setenv("STEF_RAY_ALERT_WEBHOOK", url)
    first_issue = pd.Timestamp("2019-10-10 00:00", tz="UTC")
    actuals = hourly_actuals(first_issue, days=1, seed=6)
    store(tsdb, tmp_path, actuals, [(forecasts_from(actuals, first_issue, lambda lead: 1.09), "champion", "4", first_issue)])

    code = main(["monitor", "--config", str(config), "--source", "export", "--url", tsdb.url,
                 "--now", "2019-10-11T00:00"])

    assert code == 1 and "ALERT" in capsys.readouterr().out
    assert len(received) == 1 and received[0]["mape"] == pytest.approx(9.0, rel=1e-6)
