"""Three weeks in the life of stef_ray: the weekly operations loop on real servers, with a driven clock.

    python scripts/week_in_the_life.py                  # three weeks of Victoria's load, November 2014
    python scripts/week_in_the_life.py --weeks 1 --keep # one week; keep the servers' folder to look at after

It starts natively on loopback (scripts/local_stack.py): victoria-metrics as the time-series store (it
speaks InfluxDB's write API) and as the metrics scraper (deploy/prometheus/prometheus.yml, as Prometheus
reads it), `mlflow server`, and a Ray head with token authentication; then the Serve
application on that head, following models:/power-demand-hybrid@champion, storing what it answers. The
store is filled with the history before the start (`stef-ray ingest`). The stack starts with no champion.

The clock then moves hour by hour:
  - every hour the hour that just ended is sent to POST /actuals;
  - every day at 00:00 (local) a day-ahead forecast is requested from POST /forecast;
  - the scheduler (RetrainScheduler.tick) fires the retrain at its cron time, Sunday 02:00 Asia/Seoul:
    a Ray job `stef-ray tune` that reads the store up to that time, searches, registers and gates;
    while it runs and until Serve follows the alias, a client keeps asking for forecasts;
  - at the end of each week the monitor computes the rolling 7-day MAPE from the store.
It checks, and exits 1 where a check fails:
  - before the first registration /forecast and /healthz answer 503; every later request is a 200 'ok';
  - every actual and every forecast point written is in the store exactly once, with its value;
  - the champion alias moved exactly when the gate said so, and Serve answered with it afterwards; in the
    last week an operator's bad change reaches the weekly config (three weeks or more), and the gate keeps
    the champion;
  - the monitor's MAPE equals the MAPE of the forecasts the drill received against the actuals it sent;
  - the Serve app's counters, as scraped, equal what the drill sent, and the dashboard's queries run.
A JSON report goes to --report (default: out/week_in_the_life.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_stack import free_port, mlflow_server, ray_head, victoria_metrics

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "power-demand-hybrid"
TIMEZONE = "Australia/Brisbane"  # UTC+10 all year: the offset vic-elec's timestamps carry
HOUR = pd.Timedelta(hours=1)

# The weekly search, cut down to fit 2 cores: two light hybrids (no trees, no net) on two windows.
TUNE = {
    "model": {"seasonality": {"yearly_order": 0},
              "residual": {"enabled": False, "boosted_weight": 0.0, "linear_robust_iterations": 0,
                           "validation_blocks": 2, "validation_days": 7}},
    "search": {"num_samples": 2, "seed": 0, "space": {"seasonality.daily_order": {"type": "choice", "values": [4, 6]}}},
    "objective": {"windows": 2, "window_days": 3, "span_days": 28},
    "scheduler": {"type": "fifo"},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    "mlflow": {"holdout_days": 7, "champion_margin": 0.0},
    "max_failures": 0,
}


@dataclass
class Drill:
    """What the drill sent, received and saw; the checks read it."""

    url: str
    load: pd.Series  # the hourly load, the drill's own copy (what a utility's client holds)
    forecasts: list[dict] = field(default_factory=list)  # every 200 answer to /forecast
    actuals_sent: dict[pd.Timestamp, float] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # answers that were not the expected status
    retrains: list[dict] = field(default_factory=list)
    monitor: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    used_origins: set = field(default_factory=set)

    def check(self, ok: bool, what: str) -> bool:
        print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
        if not ok:
            self.failures.append(what)
        return ok

    def body(self, origin: pd.Timestamp, history_hours: int) -> dict:
        past = self.load.loc[origin - history_hours * HOUR : origin - HOUR]
        return {"history": [{"timestamp": t.isoformat(), "load": float(v)} for t, v in past.items()],
                "future": [{"timestamp": (origin + h * HOUR).isoformat()} for h in range(24)], "horizon": 24}

    def forecast(self, origin: pd.Timestamp, history_hours: int, expect: int = 200) -> dict | None:
        self.used_origins.add(origin)
        answer = requests.post(f"{self.url}/forecast", json=self.body(origin, history_hours), timeout=60)
        if answer.status_code != expect or (expect == 200 and answer.json()["quality"] != "ok"):
            self.refused.append(f"forecast {origin}: {answer.status_code} {answer.text[:200]}")
            return None
        if expect != 200:
            return answer.json()
        self.forecasts.append(answer.json())
        return answer.json()

    def send_actual(self, hour: pd.Timestamp) -> None:
        value = float(self.load[hour])
        answer = requests.post(f"{self.url}/actuals", json={"actuals": [{"timestamp": hour.isoformat(), "load": value}]},
                               timeout=30)
        if answer.status_code != 200 or answer.json()["accepted"] != 1:
            self.refused.append(f"actual {hour}: {answer.status_code} {answer.text[:200]}")
        else:
            self.actuals_sent[hour] = value


def served_model(url: str) -> dict:
    answer = requests.get(f"{url}/model", timeout=30)
    return answer.json() | {"status": answer.status_code}


# ------------------------------------------------------------------------------------------ set-up
def read_vic_elec(folder: Path) -> tuple[Path, pd.Series]:
    from stef_ray.config import DataConfig
    from stef_ray.data import load_hourly
    from stef_ray.data.builtin import write_dataset

    path = folder / "vic_elec.csv"
    write_dataset("vic-elec", path)
    data = load_hourly(DataConfig(path=str(path), exog=[], timezone=TIMEZONE))
    return path, data.frame["load"].dropna()


def write_configs(folder: Path, export_url: str, bad_change: bool = False) -> tuple[Path, Path]:
    """The ingest and weekly tune configs. ``bad_change``: an operator's mistake reaches the weekly config
    (the ridges' penalty up a million-fold, which all but switches off the residual); the gate must catch it."""
    data = {"timestamp_col": "timestamp", "target_col": "load", "exog": [], "timezone": TIMEZONE}
    ingest = folder / "ingest.yaml"
    ingest.write_text(yaml.safe_dump({"data": data}))
    tune = folder / "weekly_tune.yaml"
    model = json.loads(json.dumps(TUNE["model"]))
    if bad_change:
        model["residual"]["linear_alpha"] = 1.0e6
    tune.write_text(yaml.safe_dump({
        "data": data | {"store": {"reader": "export", "export_url": export_url, "days": 365}},
        **TUNE, "model": model, "storage_path": str(folder / "ray_results"),
        "bundle_out": str(folder / "models" / "tuned"),
    }, sort_keys=False))
    return ingest, tune


def deploy_serve(job_api: str, port: int, mlflow_url: str, store_url: str, spool: Path, wait_s: float = 180) -> str:
    """`serve deploy` through the head's dashboard REST API, as an operator deploys to a remote cluster: the
    drill never joins the cluster as a driver (nothing here needs a connection to the head's GCS)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from stef_ray.serving.serve_config import read_serve_config

    config = read_serve_config(ROOT / "serve_config.yaml", model_source=f"models:/{MODEL_NAME}@champion", port=port)
    config["applications"][0]["args"].update({
        "mlflow_tracking_uri": mlflow_url, "alias_poll_s": 1.0, "influx": True,
        "influx_settings": {"url": store_url, "token": "drill", "org": "stef", "bucket": "drill",
                            "spool_dir": str(spool), "flush_interval_s": 0.5}})
    client = ServeSubmissionClient(job_api)
    client.deploy_applications(config)
    names = {app["name"] for app in config["applications"]}
    deadline = time.monotonic() + wait_s
    while True:
        apps = client.get_serve_details().get("applications", {})
        states = {name: apps.get(name, {}).get("status") for name in names}
        if all(state == "RUNNING" for state in states.values()):
            return f"http://127.0.0.1:{port}"
        failed = [name for name, state in states.items() if state in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"Serve applications not running: {states} "
                               f"({apps.get((failed or list(names))[0], {}).get('message', '')[:300]})")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------ the week
def champion_version(client) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    except MlflowException:
        return None


def retrain(drill: Drill, scheduler, now: pd.Timestamp, client, history_hours: int) -> None:
    """The scheduler's tick at ``now``; when it fires, a client keeps forecasting until Serve follows."""
    if scheduler.due(now.to_pydatetime()) is None:
        return
    before = champion_version(client)
    stop = threading.Event()
    answered: list[str] = []

    def keep_asking() -> None:  # unique origins, each hour back from now, so no stored point is written twice
        origin = now.floor("h")
        while not stop.is_set():
            origin -= HOUR
            if origin in drill.used_origins or origin.hour == 0:
                continue
            if (answer := drill.forecast(origin, history_hours)) is not None:
                answered.append(answer["model_version"])
            time.sleep(0.2)

    asking = threading.Thread(target=keep_asking, daemon=True)
    if before is not None:  # with no champion yet, every forecast is a 503
        asking.start()
    outcome = scheduler.tick(now.to_pydatetime())
    after = champion_version(client)
    newest = max((int(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")), default=None)
    decision = client.get_model_version(MODEL_NAME, str(newest)).tags.get("gate_decision") if newest else None
    record = {"fired_at": str(now), "job": outcome.job_id, "status": outcome.status, "seconds": round(outcome.duration_s, 1),
              "registered": str(newest), "gate": decision, "champion_before": before, "champion_after": after}
    drill.retrains.append(record)
    print(f"retrain at {now}: job {outcome.status} in {outcome.duration_s:.0f} s, version {newest} -> {decision}; "
          f"champion {before} -> {after}", flush=True)
    drill.check(outcome.succeeded, f"retrain job at {now} succeeded ({outcome.message[:120]})")
    expected = str(newest) if decision == "champion" else before
    drill.check(after == expected, f"the champion moved only as the gate said ({before} -> {after}, gate: {decision})")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and served_model(drill.url).get("version") != after:
        time.sleep(0.5)
    record["swap_seen_s"] = round(60 - (deadline - time.monotonic()), 1)
    time.sleep(2.0)  # a little more traffic on the new version
    stop.set()
    if asking.is_alive():
        asking.join(timeout=60)
    record["requests_during"] = len(answered)
    drill.check(served_model(drill.url).get("version") == after, f"Serve answers with the champion {after}")
    if before is not None:
        drill.check(len(answered) > 0, f"{len(answered)} forecasts answered while the retrain ran"
                    + (f" and Serve swapped {before} for {after}" if after != before else ""))


def run_monitor(drill: Drill, store_url: str, now: pd.Timestamp) -> None:
    from stef_ray.ops.monitor import MonitorConfig, evaluate
    from stef_ray.ops.monitor_readers import ExportReader

    config = MonitorConfig(source="export", export_url=store_url, window_days=7)
    report = evaluate(ExportReader(store_url, config.query_timeout_s), now, config)
    start = now - pd.Timedelta(days=7)
    errors = [abs(f / drill.actuals_sent[t] - 1) for answer in drill.forecasts
              for t, f in zip(pd.to_datetime(answer["timestamps"]), answer["forecast"], strict=True)
              if start < t <= now and t in drill.actuals_sent]
    expected = float(np.mean(errors) * 100) if errors else None
    drill.monitor.append({"now": str(now), "mape": report.overall_mape, "pairs": report.pairs, "expected": expected,
                          "expected_pairs": len(errors)})
    print(f"monitor at {now}: {report.summary()}", flush=True)
    drill.check(report.pairs == len(errors) and expected is not None and abs(report.overall_mape - expected) < 1e-6,
                f"monitor MAPE {report.overall_mape} over {report.pairs} pairs = the drill's {expected} over {len(errors)}")


# ------------------------------------------------------------------------------------------ read-back
def export(store_url: str, selector: str) -> list[dict]:
    requests.get(f"{store_url}/internal/force_flush", timeout=10)
    answer = requests.get(f"{store_url}/api/v1/export", params={"match[]": selector, "start": 0, "end": 4102444800},
                          timeout=60)
    return [json.loads(line) for line in answer.text.splitlines() if line.strip()]


def read_back(drill: Drill, store_url: str, ingested: pd.Series, timeout_s: float = 60) -> None:
    """Every point written is stored exactly once: the actuals (ingested and posted) and each forecast hour."""
    expected_actuals = {int(t.timestamp()): v for t, v in ingested.items()}
    expected_actuals |= {int(t.timestamp()): v for t, v in drill.actuals_sent.items()}
    expected_forecasts = {(a["origin"], a["model_version"], int(pd.Timestamp(t).timestamp())): f
                          for a in drill.forecasts for t, f in zip(a["timestamps"], a["forecast"], strict=True)}
    deadline = time.monotonic() + timeout_s
    while True:  # the Serve replicas' spools deliver every half second
        actual_series = export(store_url, "power_demand_actual_load")
        forecast_series = export(store_url, "power_demand_forecast_forecast")
        stored_forecasts = sum(len(s["timestamps"]) for s in forecast_series)
        stored_actuals = sum(len(s["timestamps"]) for s in actual_series)
        if (stored_forecasts >= len(expected_forecasts) and stored_actuals >= len(expected_actuals)) \
                or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    seen_actuals: dict[int, list[float]] = {}
    for series in actual_series:
        for stamp, value in zip(series["timestamps"], series["values"], strict=True):
            seen_actuals.setdefault(stamp // 1000, []).append(value)
    drill.check(len(seen_actuals) == len(expected_actuals) and all(len(v) == 1 for v in seen_actuals.values())
                and all(abs(seen_actuals[k][0] - v) < 1e-6 for k, v in expected_actuals.items()),
                f"{len(expected_actuals):,} actual hours written, {stored_actuals:,} points stored, each once with its value")
    seen_forecasts: dict[tuple, list[float]] = {}
    for series in forecast_series:
        tags = series["metric"]
        origin = pd.Timestamp(tags["issue_time"])
        for stamp, value in zip(series["timestamps"], series["values"], strict=True):
            key = (origin, tags["model_version"], stamp // 1000)
            seen_forecasts.setdefault(key, []).append(value)
    wanted = {(pd.Timestamp(o), v, s): f for (o, v, s), f in expected_forecasts.items()}
    drill.check(set(seen_forecasts) == set(wanted) and all(len(v) == 1 for v in seen_forecasts.values())
                and all(abs(seen_forecasts[k][0] - f) < 1e-6 * abs(f) for k, f in wanted.items()),
                f"{len(wanted):,} forecast points answered ({len(drill.forecasts)} forecasts), "
                f"{stored_forecasts:,} stored, each once with its value")


# ------------------------------------------------------------------------------------------ metrics
def scrape_config(folder: Path, service_discovery: Path) -> Path:
    """deploy/prometheus/prometheus.yml, pointed at this head's node list and scraping every second."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s"}
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] == "ray"]
    # (victoria-metrics re-reads file_sd lists on its own flag, not Prometheus' refresh_interval key)
    config["scrape_configs"][0]["file_sd_configs"] = [{"files": [str(service_discovery)]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def promql(store_url: str, expr: str) -> list[dict]:
    answer = requests.get(f"{store_url}/api/v1/query", params={"query": expr}, timeout=30).json()
    if answer.get("status") != "success":
        raise ValueError(f"{expr}: {answer.get('error', answer)}")
    return answer["data"]["result"]


def check_metrics(drill: Drill, store_url: str, timeout_s: float = 120) -> None:
    """The Serve app's own counters, as scraped, agree with what the drill sent; every Prometheus query of
    the Grafana dashboard runs, and those that must have data do."""
    def total(expr: str) -> float:
        result = promql(store_url, expr)
        return float(result[0]["value"][1]) if result else 0.0

    wanted = {"sum(ray_stef_actuals_received_total)": len(drill.actuals_sent),
              'sum(ray_stef_forecasts_served_total{quality="ok"})': len(drill.forecasts)}
    deadline = time.monotonic() + timeout_s  # Ray reports a replica's metrics every few seconds
    while (seen := {expr: total(expr) for expr in wanted}) != wanted and time.monotonic() < deadline:
        time.sleep(2.0)
    for expr, count in wanted.items():
        drill.check(seen[expr] == count, f"scraped {expr} = {seen[expr]:,.0f}, the drill sent {count:,}")
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "stef_ray.json").read_text())
    # Every metric but the degraded answers' (none is expected) has samples by now.
    must_have_data = ("stef_forecasts_served", "stef_forecast_latency_ms", "stef_component_batch_size",
                      "stef_spool_backlog_lines")
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "ray_stef_" not in target.get("expr", ""):
                continue
            try:
                result = promql(store_url, target["expr"])
            except ValueError as err:
                drill.check(False, f"dashboard panel {panel['title']!r}: {err}")
                continue
            needed = any(name in target["expr"] for name in must_have_data)
            drill.check(bool(result) or not needed,
                        f"dashboard panel {panel['title']!r}: {target['expr']} -> {len(result)} series")


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weeks", type=int, default=3, help="simulated weeks (default: %(default)s)")
    parser.add_argument("--start", default="2014-11-08", help="first simulated day, a Saturday (default: %(default)s)")
    parser.add_argument("--folder", type=Path, help="where the servers keep their data and logs (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the folder afterwards")
    parser.add_argument("--report", type=Path, default=Path("out/week_in_the_life.json"),
                        help="JSON report (default: %(default)s)")
    args = parser.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="stef_ray_week_"))
    folder.mkdir(parents=True, exist_ok=True)
    report_path = args.report
    report_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    from stef_ray.serving.mode import use_throughput_mode

    throughput = use_throughput_mode()  # Serve reads these once; the head's processes inherit them
    token = uuid.uuid4().hex * 2
    os.environ |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    data_path, load = read_vic_elec(folder)
    start = pd.Timestamp(args.start, tz=TIMEZONE)
    end = start + pd.Timedelta(weeks=args.weeks)
    with mlflow_server(folder) as mlflow_url, \
            ray_head(folder, num_cpus=3, token=token, env=throughput | {"OMP_NUM_THREADS": "1"}) as head, \
            victoria_metrics(folder, scrape_config(folder, head.service_discovery)) as store_url:
        import mlflow

        from stef_ray.ops.schedule import RetrainScheduler, ScheduleConfig

        address, job_api = head.address, head.job_api
        print(f"servers up: store and scraper {store_url}, mlflow {mlflow_url}, ray {address} (jobs {job_api})",
              flush=True)
        os.environ |= {"MLFLOW_TRACKING_URI": mlflow_url, "INFLUXDB_URL": store_url, "INFLUXDB_TOKEN": "drill",
                       "INFLUXDB_ORG": "stef", "INFLUXDB_BUCKET": "drill", "STEF_RAY_SPOOL_DIR": str(folder / "spool-ingest")}
        ingest_yaml, tune_yaml = write_configs(folder, store_url)
        ingest = subprocess.run([sys.executable, "-m", "stef_ray", "ingest", str(data_path), "--config", str(ingest_yaml),
                                 "--until", str(start.date())], capture_output=True, text=True)
        print(ingest.stdout.strip().splitlines()[-1] if ingest.stdout.strip() else ingest.stderr, flush=True)
        ingested = load.loc[: start - HOUR]
        drill = Drill(deploy_serve(job_api, free_port(), mlflow_url, store_url, folder / "spool-serve"), load)
        drill.check(ingest.returncode == 0, f"stef-ray ingest wrote the history before {start.date()}")
        client = mlflow.MlflowClient(mlflow_url)
        fresh = served_model(drill.url)
        drill.check(fresh["status"] == 503 and requests.get(f"{drill.url}/healthz", timeout=10).status_code == 503,
                    f"a fresh stack says so: /model and /healthz answer 503 ({fresh.get('detail', '')[:90]})")
        scheduler = RetrainScheduler(ScheduleConfig(
            entrypoint=f"{sys.executable} -m stef_ray tune --config {tune_yaml} --end {{scheduled_for}}",
            ray_address=job_api, state_file=folder / "schedule_state.json", poll_interval_s=1.0,
            runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": mlflow_url, "OMP_NUM_THREADS": "1",
                                      "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}}))
        scheduler.tick(start.to_pydatetime())  # a first start records the time; the first run is the next Sunday's
        history_hours = 168
        bad_week = start + pd.Timedelta(weeks=args.weeks - 1) if args.weeks >= 3 else None
        for now in pd.date_range(start, end, freq="h", inclusive="left"):
            if now > start:
                drill.send_actual(now - HOUR)
            if now == bad_week:
                write_configs(folder, store_url, bad_change=True)
                print(f"{now}: an operator's bad change reaches {tune_yaml.name} (residual.linear_alpha 1e6)", flush=True)
            retrain(drill, scheduler, now, client, history_hours)
            model = served_model(drill.url)
            history_hours = model.get("history_hours", history_hours)
            if now.hour == 0:
                if model["status"] == 503:
                    answer = drill.forecast(now, history_hours, expect=503)
                    drill.check(answer is not None, f"no champion yet on {now.date()}: /forecast answers 503")
                else:
                    drill.forecast(now, history_hours)
            if now.dayofweek == 4 and now.hour == 23:  # Friday night: the week's evaluation
                read_back(drill, store_url, ingested)
                run_monitor(drill, store_url, now)
        read_back(drill, store_url, ingested)
        check_metrics(drill, store_url)
        drill.check(not drill.refused, f"every request answered as expected ({len(drill.refused)} not: {drill.refused[:3]})")
        drill.check(len(drill.retrains) == args.weeks and all(r["status"] == "SUCCEEDED" for r in drill.retrains),
                    f"{len(drill.retrains)} weekly retrains fired for {args.weeks} weeks, each Sunday 02:00 Asia/Seoul")
        if bad_week is not None:
            last = drill.retrains[-1] if drill.retrains else {}
            drill.check(last.get("gate") == "challenger" and last.get("champion_after") == last.get("champion_before"),
                        f"the bad change was caught: version {last.get('registered')} -> {last.get('gate')}, the "
                        f"champion stayed {last.get('champion_after')}")
    day_ahead = [a for a in drill.forecasts if pd.Timestamp(a["origin"]).hour == 0]
    report = {"start": str(start), "weeks": args.weeks, "seconds": round(time.monotonic() - started),
              "actual_hours_posted": len(drill.actuals_sent), "history_hours_ingested": len(ingested),
              "forecasts": len(drill.forecasts), "day_ahead_forecasts": len(day_ahead),
              "retrains": drill.retrains, "monitor": drill.monitor, "refused": drill.refused,
              "failures": drill.failures, "folder": str(folder)}
    report_path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n{len(drill.failures)} check(s) failed; report: {report_path} ({report['seconds']} s)", flush=True)
    if not args.keep and args.folder is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 1 if drill.failures else 0


if __name__ == "__main__":
    sys.exit(main())
