"""`stef-ray monitor`: rolling MAPE of the stored forecasts against the actuals, with alerts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "rolling MAPE of stored forecasts vs actuals; alert when above a threshold"

DESCRIPTION = """\
Compares the forecasts stored in InfluxDB with the observed load over the last days and prints the MAPE
overall, by model (name and version: champion vs challenger) and by lead hour. When the overall MAPE is
above the threshold it logs an alert, writes a forecast_alert point, POSTs a JSON alert to --webhook and,
with --retrain, submits the retraining job to Ray (at most once per cooldown, 24 h by default).

exit status (for cron):
  0  evaluated, no alert (also when the window holds nothing to evaluate)
  1  an alert fired
  2  a usage or configuration error (one line on stderr)
  3  the point store or Ray could not be reached

The webhook may also come from $STEF_RAY_ALERT_WEBHOOK (a secret kept out of the config file).

examples:
  stef-ray monitor                                   # InfluxDB 2 from INFLUXDB_* in env/.env
  stef-ray monitor --threshold 4 --webhook https://hooks.example/abc --retrain
  stef-ray monitor --source export --url http://127.0.0.1:8428 --now 2014-12-31T00:00Z
"""

LEAD_HOURS_PER_LINE = 6
WEBHOOK_ENV = "STEF_RAY_ALERT_WEBHOOK"  # the webhook when neither --webhook nor the config names one


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "monitor", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML file with MonitorConfig keys (flags override it)")
    parser.add_argument("--window-days", type=int, help="rolling window ending now, in days (default 7)")
    parser.add_argument("--threshold", type=float, metavar="PCT", help="alert above this MAPE, in %% (default 5)")
    parser.add_argument("--webhook", metavar="URL", help="POST a JSON alert to this URL")
    parser.add_argument("--retrain", action="store_true", default=None, help="submit an early retrain on alert")
    parser.add_argument("--source", choices=["influx", "export"],
                        help="read with InfluxDB 2 Flux (default) or a Prometheus-style /api/v1/export")
    parser.add_argument("--url", help="export server base URL (--source export) or InfluxDB URL (overrides INFLUXDB_URL)")
    parser.add_argument("--now", metavar="TIME", help="end of the window, ISO time (naive = UTC; default: now)")
    parser.set_defaults(handler=run)


def _config(args: argparse.Namespace):
    from pydantic import ValidationError

    from stef_ray.config_loading import format_validation_error, read_yaml
    from stef_ray.exceptions import ConfigError
    from stef_ray.ops.monitor import MonitorConfig

    values = read_yaml(args.config) if args.config is not None else {}
    flags = {
        "window_days": args.window_days,
        "mape_threshold": args.threshold,
        "webhook_url": args.webhook,
        "retrain_on_alert": args.retrain,
        "source": args.source,
    }
    values.update({key: value for key, value in flags.items() if value is not None})
    if not values.get("webhook_url") and os.environ.get(WEBHOOK_ENV):
        values["webhook_url"] = os.environ[WEBHOOK_ENV]  # a secret kept out of the YAML (the compose stack's .env)
    if values.get("source", "influx") == "export":
        if args.url is not None:
            values["export_url"] = args.url
        if not values.get("export_url"):
            raise ConfigError("--source export needs --url, the export server's base URL (e.g. http://127.0.0.1:8428)")
    try:
        return MonitorConfig(**values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(args.config or "monitor options"))) from None


def _now(text: str | None):
    import pandas as pd

    from stef_ray.exceptions import ConfigError

    if text is None:
        return pd.Timestamp.now(tz="UTC")
    try:
        moment = pd.Timestamp(text)
    except ValueError:
        raise ConfigError(f"--now {text!r} is not a time; use ISO form, e.g. 2014-12-31T00:00Z") from None
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment


def _influx_settings(args: argparse.Namespace, config):
    """InfluxDB settings for the Flux reader and the alert point; None when absent and only the sink needs them."""
    from stef_ray.exceptions import ConfigError
    from stef_ray.integrations.influx import InfluxSettings

    overrides = {"url": args.url} if args.url is not None and config.source == "influx" else {}
    try:
        return InfluxSettings.from_env(**overrides)
    except ConfigError:
        if config.source == "influx":
            raise
        return None


def print_report(report, window_days: int) -> None:
    print(f"window {report.window_text()} ({window_days} days), threshold {report.threshold:g} %")
    if report.nothing_to_evaluate:
        print(report.summary())
        return
    overall_alert = report.alert and report.overall_mape > report.threshold
    print(f"overall MAPE {report.overall_mape:6.2f} %  ({report.pairs} pairs)" + ("  ALERT" if overall_alert else ""))
    width = max(len("model"), *(len(score.model_name) for score in report.by_model))
    print(f"  {'model':<{width}}  {'version':>8}  {'MAPE %':>7}  {'pairs':>6}")
    for score in report.by_model:
        print(f"  {score.model_name:<{width}}  {score.model_version:>8}  {score.mape:7.2f}  {score.pairs:6d}")
    if report.by_series:
        width = max(len("series"), *(len(score.series_id or "(untagged)") for score in report.by_series))
        print(f"  {'series':<{width}}  {'MAPE %':>7}  {'pairs':>6}   (worst first)")
        for score in report.by_series:
            flag = "  ALERT" if score.series_id in report.series_alerts else ""
            print(f"  {score.series_id or '(untagged)':<{width}}  {score.mape:7.2f}  {score.pairs:6d}{flag}")
    print("MAPE % by lead hour")
    cells = [f"h{hour:<3d}{mape:6.2f}" for hour, mape in report.by_lead_hour.items()]
    for start in range(0, len(cells), LEAD_HOURS_PER_LINE):
        print("  " + "   ".join(cells[start : start + LEAD_HOURS_PER_LINE]))
    if not report.alert:
        return
    point = {None: "not written (no InfluxDB settings)", True: "written", False: "kept in the local spool"}
    print(f"alert point: {point[report.alert_point_delivered]}")
    if report.webhook_delivered is not None:
        print(f"webhook: {'delivered' if report.webhook_delivered else 'failed (see the log)'}")
    if report.retrain_note is not None:
        job = f" job {report.retrain_job_id}" if report.retrain_job_id else ""
        print(f"early retrain: {report.retrain_note}{job}")


def run(args: argparse.Namespace) -> int:
    from stef_ray.integrations.influx import InfluxSink
    from stef_ray.ops.monitor import evaluate, reader_for

    config = _config(args)
    now = _now(args.now)
    settings = _influx_settings(args, config)
    reader = reader_for(config, settings)
    sink = InfluxSink(settings) if settings is not None else None
    try:
        report = evaluate(reader, now, config, sink=sink)
    finally:
        reader.close()
        if sink is not None:
            sink.close(timeout_s=0)  # evaluate already waited for the alert point; the rest stays spooled
    print_report(report, config.window_days)
    return 1 if report.alert else 0
