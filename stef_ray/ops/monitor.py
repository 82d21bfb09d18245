"""Accuracy monitor: rolling MAPE of the stored forecasts against the stored actuals, and what to do
when it drops below par (log, alert point, webhook, early retrain).

This module holds the monitor's configuration and its loop (`evaluate`): read the window's points, score
them, decide whether to alert, take the configured actions, and keep the time of the last early retrain
so that retraining waits out its cooldown. Reading the points is `stef_ray.ops.monitor_readers`, the numbers
`stef_ray.ops.monitor_report`, the actions `stef_ray.ops.monitor_alerts`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stef_ray.exceptions import DataError, ServiceUnavailableError
from stef_ray.ops.monitor_alerts import alert_lines, post_webhook, submit_early_retrain
from stef_ray.ops.monitor_readers import ExportReader, FluxReader, PointReader, open_reader
from stef_ray.ops.monitor_report import MonitorReport, compute_report
from stef_ray.ops.schedule import ScheduleConfig

if TYPE_CHECKING:
    from stef_ray.integrations.influx import InfluxSettings, InfluxSink

logger = logging.getLogger(__name__)


class MonitorConfig(BaseModel):
    """What the accuracy monitor evaluates, when it alerts, and what an alert does."""

    model_config = ConfigDict(extra="forbid")

    window_days: int = Field(7, ge=1, le=366, description="length of the rolling window that ends now, in days")
    mape_threshold: float = Field(5.0, gt=0, description="alert when the overall MAPE of the window exceeds this, in %")
    min_pairs: int = Field(
        24, ge=1, description="fewest forecast/actual pairs needed before an alert may fire (fewer: report only)"
    )
    webhook_url: str | None = Field(None, description="http(s) URL that receives a JSON alert by POST; None: no webhook")
    webhook_timeout_s: float = Field(5.0, gt=0, description="HTTP timeout of the webhook POST, in seconds")
    retrain_on_alert: bool = Field(False, description="submit an early retraining job to Ray when an alert fires")
    retrain_cooldown_hours: float = Field(
        24.0, ge=0, description="no early retrain if the last one was submitted less than this many hours ago"
    )
    retrain_follow: bool = Field(
        False, description="wait for the retraining job to end (and log its outcome) instead of only submitting it"
    )
    retrain_job: ScheduleConfig = Field(
        default_factory=ScheduleConfig,
        description="the retraining job as the weekly scheduler runs it (entrypoint, ray_address, runtime_env)",
    )
    state_file: Path = Field(
        Path(".stef_ray/monitor_state.json"), description="where the time of the last early retrain is kept"
    )
    source: Literal["influx", "export"] = Field(
        "influx",
        description="how points are read: 'influx' = InfluxDB 2 Flux query API (settings from env/.env), "
        "'export' = Prometheus-style /api/v1/export (victoria-metrics) at export_url",
    )
    export_url: str | None = Field(None, description="base URL of the /api/v1/export server; needed with source 'export'")
    query_timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one read query, in seconds")
    sink_timeout_s: float = Field(10.0, ge=0, description="how long to try delivering the alert point before spooling it")

    @field_validator("webhook_url", "export_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urllib.parse.urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _export_needs_url(self) -> MonitorConfig:
        if self.source == "export" and not self.export_url:
            raise ValueError("source 'export' needs export_url (e.g. http://127.0.0.1:8428)")
        return self


def reader_for(config: MonitorConfig, influx_settings: InfluxSettings | None = None) -> ExportReader | FluxReader:
    """The reader `config.source` names; `influx` needs `influx_settings`."""
    return open_reader(config.source, config.export_url, influx_settings, config.query_timeout_s)


def _last_retrain(path: Path) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(json.loads(path.read_text())["last_retrain_at"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        logger.warning("monitor state %s is unreadable; treating it as no earlier retrain", path)
        return None


def _save_retrain(path: Path, now: pd.Timestamp, job_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"last_retrain_at": now.isoformat(), "job_id": job_id}, indent=2))
    os.replace(tmp, path)


def _retrain(report: MonitorReport, config: MonitorConfig, now: pd.Timestamp, submit: Callable[[str], str]) -> None:
    last = _last_retrain(config.state_file)
    if last is not None and now - last < pd.Timedelta(hours=config.retrain_cooldown_hours):
        report.retrain_note = f"skipped: last early retrain at {last.isoformat()} is within the cooldown"
        logger.info("early retrain %s", report.retrain_note)
        return
    try:
        report.retrain_job_id = submit(report.summary())
    except ServiceUnavailableError as err:  # the alert itself already went out; retry on the next run
        report.retrain_note = f"failed: {err}"
        logger.error("early retrain failed: %s", err)
        return
    report.retrain_note = "submitted"
    _save_retrain(config.state_file, now, report.retrain_job_id)


def evaluate(
    reader: PointReader,
    now: pd.Timestamp | dt.datetime,
    config: MonitorConfig,
    *,
    sink: InfluxSink | None = None,
    submit_retrain: Callable[[str], str] | None = None,
) -> MonitorReport:
    """Rolling MAPE over the `config.window_days` before `now`, and the alert actions when it is too high.

    Args:
        now: tz-aware end of the window (included).
        sink: where the `forecast_alert` point goes; None: not written (logged).
        submit_retrain: called with the alert text, returns a job id; default `submit_early_retrain`.
    Returns:
        The report; `nothing_to_evaluate` when no forecast in the window has an actual.
    Raises:
        DataError: `now` has no timezone.
        ServiceUnavailableError: the points cannot be read.
    """
    now = pd.Timestamp(now)
    if now.tzinfo is None:
        raise DataError(f"now={now} has no timezone: give a timezone-aware time")
    now = now.tz_convert("UTC")
    window_start = now - pd.Timedelta(days=config.window_days)
    report = compute_report(
        reader.forecasts(window_start, now), reader.actuals(window_start, now), window_start, now,
        config.mape_threshold,
    )
    # A fleet's series alerts on its own: one bad zone would otherwise be averaged away by the others.
    report.series_alerts = [score.series_id for score in report.by_series if score.series_id
                            and score.mape > config.mape_threshold and score.pairs >= config.min_pairs]
    if report.nothing_to_evaluate or (report.overall_mape <= config.mape_threshold and not report.series_alerts):
        logger.info("%s", report.summary())
        return report
    if report.pairs < config.min_pairs:
        logger.warning("%s, but only %d pairs (< min_pairs %d): no alert", report.summary(), report.pairs,
                       config.min_pairs)
        return report

    report.alert = True
    logger.warning("ALERT: %s", report.summary())
    if sink is None:
        logger.warning("no InfluxDB sink configured: the forecast_alert point is not written")
    else:
        sink.submit(alert_lines(report, now))
        report.alert_point_delivered = sink.flush(timeout_s=config.sink_timeout_s)
    if config.webhook_url:
        report.webhook_delivered = post_webhook(config.webhook_url, report.to_dict(), config.webhook_timeout_s)
    if config.retrain_on_alert:
        submit = submit_retrain or (
            lambda reason: submit_early_retrain(config.retrain_job, reason, follow=config.retrain_follow)
        )
        _retrain(report, config, now, submit)
    return report
