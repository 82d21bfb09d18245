"""Accuracy monitor: rolling MAPE of the stored forecasts against the stored actuals, and what to do
when it drops below par (log, alert point, webhook, early retrain).

Forecasts are the `power_demand_forecast` points the sink writes (field `forecast`, tags model name,
model version and issue time); actuals are `power_demand_actual` points (field `load`). A pair is a
forecast whose target hour lies in the window (now - window_days, now] and has an actual; its lead
hour is 1 + (target - issue_time) in hours (issue_time is the forecast origin). MAPE is reported over all pairs, by lead hour, and by model
name + version, so a champion and a challenger that share the traffic can be compared.

Two ways to read the points (`PointReader`):
  FluxReader    the InfluxDB 2 query API (Flux), what production uses. InfluxDB 2 is not installable on
                the development machines, so this reader is not exercised by the tests.
  ExportReader  the Prometheus-style `/api/v1/export` of victoria-metrics, which stores the same line
                protocol as `<measurement>_<field>{tags}`; the tests run against it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stef_ray.exceptions import ConfigError, DataError, ServiceUnavailableError
from stef_ray.integrations.influx import (
    ACTUAL_FIELD,
    MEASUREMENT_ACTUAL,
    MEASUREMENT_ALERT,
    MEASUREMENT_FORECAST,
    TAG_ISSUE_TIME,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_SCOPE,
    TAG_SERIES_ID,
)
from stef_ray.metrics import point_metrics
from stef_ray.schedule import ScheduleConfig

if TYPE_CHECKING:
    from stef_ray.integrations.influx import InfluxSettings, InfluxSink

logger = logging.getLogger(__name__)

FORECAST_FIELD = "forecast"
FORECAST_COLUMNS = ("timestamp", "issue_time", "model_name", "model_version", "series_id", "forecast")
ACTUAL_COLUMNS = ("timestamp", "series_id", "load")  # series_id "" where a single series wrote no tag
ALERT_MODEL_ALL = "all"  # model_name tag of an alert about all models together
HOUR = pd.Timedelta(hours=1)
EXPORT_PAD_S = 60


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


# ---- readers ------------------------------------------------------------------------------------


class PointReader(Protocol):
    """Reads the points of one time range [start, end] (tz-aware) into plain frames."""

    def forecasts(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Columns FORECAST_COLUMNS; timestamp and issue_time in UTC."""
        ...

    def actuals(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Columns ACTUAL_COLUMNS; timestamp in UTC."""
        ...


def _issue_times(tags: pd.Series) -> pd.Series:
    return pd.to_datetime(tags, utc=True, errors="coerce", format="ISO8601")


def _utc_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    # One dtype whatever the reader parsed, so the join on the target hour never meets two resolutions.
    return frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]"))


def _tidy_forecasts(frame: pd.DataFrame) -> pd.DataFrame:
    frame = _utc_timestamps(frame.reindex(columns=list(FORECAST_COLUMNS)))
    frame["issue_time"] = _issue_times(frame["issue_time"])
    untagged = frame[["issue_time", "model_name", "model_version"]].isna().any(axis=1)
    if untagged.any():
        logger.warning("ignoring %d forecast point(s) without model or issue-time tags", int(untagged.sum()))
        frame = frame[~untagged]
    frame = frame.assign(series_id=frame["series_id"].fillna("")).astype(
        {"model_name": str, "model_version": str, "series_id": str, "forecast": float})
    # A point sent twice (a spool retry) is one point: InfluxDB overwrites it, victoria-metrics keeps both.
    return frame.drop_duplicates(["series_id", "model_name", "model_version", "issue_time", "timestamp"], keep="last")


def _tidy_actuals(frame: pd.DataFrame) -> pd.DataFrame:
    frame = _utc_timestamps(frame.reindex(columns=list(ACTUAL_COLUMNS)))
    frame = frame.assign(series_id=frame["series_id"].fillna("")).astype({"series_id": str, "load": float})
    return frame.drop_duplicates(["series_id", "timestamp"], keep="last")


class ExportReader:
    """Reads from a Prometheus-style `/api/v1/export` (victoria-metrics), one JSON series per line."""

    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _series(self, metric: str, start: pd.Timestamp, end: pd.Timestamp) -> list[dict]:
        # Padded by a minute: victoria-metrics 1.x sometimes leaves out a sample that lies exactly on `end`
        # (seen in the tests); the exact range is cut in `_rows`.
        params = urllib.parse.urlencode(
            {
                "match[]": metric,
                "start": math.floor(start.timestamp()) - EXPORT_PAD_S,
                "end": math.ceil(end.timestamp()) + EXPORT_PAD_S,
            }
        )
        query = f"{self.url}/api/v1/export?{params}"
        try:
            with urllib.request.urlopen(query, timeout=self.timeout_s) as response:
                body = response.read().decode()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace").strip().splitlines()[:1]
            raise ServiceUnavailableError(f"{self.url} refused the export query: HTTP {err.code} {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ServiceUnavailableError(f"cannot read points from {self.url} ({reason}); is it running?") from None
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def _rows(self, measurement: str, field_name: str, start, end) -> pd.DataFrame:
        frames = []
        for series in self._series(f"{measurement}_{field_name}", start, end):
            labels = series.get("metric", {})
            frame = pd.DataFrame(
                {
                    "timestamp": pd.to_datetime(series["timestamps"], unit="ms", utc=True),
                    field_name: series["values"],
                }
            )
            for tag in (TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_ISSUE_TIME, TAG_SERIES_ID):
                if tag in labels:
                    frame[tag] = labels[tag]
            frames.append(frame)
        if not frames:
            return pd.DataFrame()
        rows = pd.concat(frames, ignore_index=True)
        return rows[(rows["timestamp"] >= start) & (rows["timestamp"] <= end)]

    def forecasts(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return _tidy_forecasts(self._rows(MEASUREMENT_FORECAST, FORECAST_FIELD, start, end))

    def actuals(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return _tidy_actuals(self._rows(MEASUREMENT_ACTUAL, ACTUAL_FIELD, start, end))

    def close(self) -> None:
        pass


class FluxReader:
    """Reads from InfluxDB 2 with Flux through influxdb-client's `query_api().query_data_frame`.

    Not covered by the tests: InfluxDB 2 cannot be installed on the development machines, and
    victoria-metrics does not speak Flux.
    """

    def __init__(self, settings: InfluxSettings, timeout_s: float = 30.0):
        from influxdb_client import InfluxDBClient

        self.settings = settings
        self._client = InfluxDBClient(
            url=settings.url, token=settings.token.get_secret_value(), org=settings.org, timeout=int(timeout_s * 1000)
        )

    def _query(self, measurement: str, field_name: str, tags: tuple[str, ...], start, end) -> pd.DataFrame:
        def flux_string(text: str) -> str:
            return json.dumps(text)  # a JSON string literal is a valid Flux string literal

        keep = json.dumps(["_time", field_name, *tags])
        # range's stop is exclusive; the window's end is not.
        stop = (end + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = (
            f"from(bucket: {flux_string(self.settings.bucket)})"
            f" |> range(start: {start.strftime('%Y-%m-%dT%H:%M:%SZ')}, stop: {stop})"
            f" |> filter(fn: (r) => r._measurement == {flux_string(measurement)}"
            f" and r._field == {flux_string(field_name)})"
            # one row per time and series, the value under the field's name (what query_data_frame expects)
            ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
            f" |> keep(columns: {keep})"
            " |> group()"
        )
        try:
            result = self._client.query_api().query_data_frame(query, org=self.settings.org)
        except Exception as err:  # urllib3 and ApiException errors alike mean: no answer to use
            raise ServiceUnavailableError(
                f"InfluxDB at {self.settings.url} did not answer the query ({type(err).__name__}: {str(err)[:160]})"
            ) from None
        frames = result if isinstance(result, list) else [result]
        frames = [frame for frame in frames if "_time" in frame.columns and len(frame)]
        if not frames:
            return pd.DataFrame()
        frame = pd.concat(frames, ignore_index=True)
        frame = frame.rename(columns={"_time": "timestamp"})
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame

    def forecasts(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        tags = (TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_ISSUE_TIME, TAG_SERIES_ID)
        return _tidy_forecasts(self._query(MEASUREMENT_FORECAST, FORECAST_FIELD, tags, start, end))

    def actuals(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return _tidy_actuals(self._query(MEASUREMENT_ACTUAL, ACTUAL_FIELD, (TAG_SERIES_ID,), start, end))

    def close(self) -> None:
        self._client.close()


def open_reader(source: str, export_url: str | None, influx_settings: InfluxSettings | None,
                timeout_s: float = 30.0) -> ExportReader | FluxReader:
    """The reader ``source`` names ('export' or 'influx'); 'influx' needs ``influx_settings``."""
    if source == "export":
        return ExportReader(export_url, timeout_s=timeout_s)
    if influx_settings is None:
        raise ConfigError("source 'influx' needs InfluxDB settings (INFLUXDB_URL, INFLUXDB_TOKEN, ... in env or .env)")
    return FluxReader(influx_settings, timeout_s=timeout_s)


def reader_for(config: MonitorConfig, influx_settings: InfluxSettings | None = None) -> ExportReader | FluxReader:
    """The reader `config.source` names; `influx` needs `influx_settings`."""
    return open_reader(config.source, config.export_url, influx_settings, config.query_timeout_s)


# ---- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMape:
    model_name: str
    model_version: str
    mape: float
    pairs: int


@dataclass(frozen=True)
class SeriesMape:
    series_id: str  # "" for the points of a single series (written without the tag)
    mape: float
    pairs: int


@dataclass
class MonitorReport:
    """MAPE of one window, and what was done about it. `pairs == 0` means nothing to evaluate."""

    window_start: pd.Timestamp
    window_end: pd.Timestamp
    threshold: float
    forecast_points: int
    actual_points: int
    pairs: int
    overall_mape: float | None
    by_lead_hour: dict[int, float] = field(default_factory=dict)
    by_model: list[ModelMape] = field(default_factory=list)
    by_series: list[SeriesMape] = field(default_factory=list)  # a fleet's series, worst first
    series_alerts: list[str] = field(default_factory=list)  # series above the threshold (with min_pairs each)
    alert: bool = False
    alert_point_delivered: bool | None = None  # None: not attempted; False: kept in the sink's spool
    webhook_delivered: bool | None = None
    retrain_job_id: str | None = None
    retrain_note: str | None = None

    @property
    def nothing_to_evaluate(self) -> bool:
        return self.pairs == 0

    def window_text(self) -> str:
        return f"{self.window_start:%Y-%m-%d %H:%MZ} .. {self.window_end:%Y-%m-%d %H:%MZ}"

    def summary(self) -> str:
        """One line for logs, the webhook and the CLI."""
        if self.nothing_to_evaluate:
            if not self.forecast_points:
                why = "no stored forecast"
            elif not self.actual_points:
                why = "no stored actual"
            else:
                why = "no forecast hour has an actual yet"
            return (
                f"nothing to evaluate in {self.window_text()}: {why} "
                f"({self.forecast_points} forecast and {self.actual_points} actual points)"
            )
        state = "above" if self.overall_mape > self.threshold else "within"
        text = (
            f"forecast MAPE {self.overall_mape:.2f} % over {self.window_text()} ({self.pairs} pairs) "
            f"is {state} the {self.threshold:g} % threshold"
        )
        if self.series_alerts:
            mape = {score.series_id: score.mape for score in self.by_series}
            text += "; above it: " + ", ".join(f"{sid} {mape[sid]:.2f} %" for sid in self.series_alerts)
        return text

    def to_dict(self) -> dict:
        """JSON-ready: the webhook body. `text` lets chat webhooks (Slack, Mattermost) show it as is."""
        return {
            "text": self.summary(),
            "alert": self.alert,
            "mape": self.overall_mape,
            "threshold": self.threshold,
            "pairs": self.pairs,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "by_model": [asdict(score) for score in self.by_model],
            "by_series": [asdict(score) for score in self.by_series],
            "series_alerts": list(self.series_alerts),
            "by_lead_hour": {str(hour): mape for hour, mape in self.by_lead_hour.items()},
        }


def _mape(pairs: pd.DataFrame) -> float:
    return point_metrics(pairs["load"].to_numpy(), pairs["forecast"].to_numpy())["MAPE"]


def compute_report(
    forecasts: pd.DataFrame, actuals: pd.DataFrame, window_start: pd.Timestamp, window_end: pd.Timestamp,
    threshold: float,
) -> MonitorReport:
    """MAPE over (window_start, window_end] of forecasts joined with actuals on the series and the target
    hour (a fleet's forecasts meet their own series' actuals only)."""
    def in_window(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["timestamp"] > window_start) & (frame["timestamp"] <= window_end)]

    forecasts, actuals = in_window(forecasts), in_window(actuals)
    pairs = forecasts.merge(actuals, on=["series_id", "timestamp"], how="inner")
    zero = pairs["load"] == 0
    if zero.any():
        logger.warning("leaving out %d pair(s) whose actual load is 0 (MAPE is undefined there)", int(zero.sum()))
        pairs = pairs[~zero]
    report = MonitorReport(
        window_start, window_end, threshold, len(forecasts), len(actuals), len(pairs), overall_mape=None
    )
    if pairs.empty:
        return report
    # Lead hour 1 starts at the origin (issue_time), as in the backtest and the sink.
    pairs = pairs.assign(lead_hour=((pairs["timestamp"] - pairs["issue_time"]) / HOUR).round().astype(int) + 1)
    report.overall_mape = _mape(pairs)
    report.by_lead_hour = {int(hour): _mape(group) for hour, group in pairs.groupby("lead_hour", sort=True)}
    report.by_model = [
        ModelMape(name, version, _mape(group), len(group))
        for (name, version), group in pairs.groupby(["model_name", "model_version"], sort=True)
    ]
    if (pairs["series_id"] != "").any():
        report.by_series = sorted((SeriesMape(series_id, _mape(group), len(group))
                                   for series_id, group in pairs.groupby("series_id", sort=True)),
                                  key=lambda score: -score.mape)
    return report


# ---- actions ------------------------------------------------------------------------------------


def alert_lines(report: MonitorReport, now: pd.Timestamp) -> list[str]:
    """The `forecast_alert` points of an alert, at `now`: one about all models together when the overall
    MAPE is above the threshold (scope overall), one per series above it (scope series, its series_id)."""
    from influxdb_client import Point, WritePrecision

    def point(scope: str, mape: float, series_id: str | None = None) -> str:
        alert = Point(MEASUREMENT_ALERT).tag(TAG_MODEL_NAME, ALERT_MODEL_ALL).tag(TAG_SCOPE, scope)
        if series_id is not None:
            alert = alert.tag(TAG_SERIES_ID, series_id)
        return (alert.field("mape", float(mape)).field("threshold", float(report.threshold))
                .time(int(now.timestamp()), WritePrecision.S).to_line_protocol())

    lines = [point("overall", report.overall_mape)] if report.overall_mape > report.threshold else []
    mape = {score.series_id: score.mape for score in report.by_series}
    return lines + [point("series", mape[series_id], series_id) for series_id in report.series_alerts]


def post_webhook(url: str, payload: dict, timeout_s: float = 5.0) -> bool:
    """POST `payload` as JSON; True on a 2xx answer. Never raises: a broken webhook must not stop the monitor."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except Exception as err:  # HTTP error, refused, timeout, bad URL: log and carry on
        logger.error("alert webhook %s failed: %s", url, err)
        return False


def submit_early_retrain(job: ScheduleConfig, reason: str, follow: bool = False) -> str:
    """Submit the retraining job to Ray now; returns its id.

    Without `follow` it returns once Ray accepted the job: a monitor run from cron should not wait
    hours for a tune job. With `follow` it is the scheduler's own `submit_and_follow`.

    Raises:
        ServiceUnavailableError: the Ray job API cannot be reached or refuses the job.
    """
    from stef_ray.schedule import job_client, submit_and_follow

    client = job_client(job.ray_address)
    if follow:
        outcome = submit_and_follow(
            client, job.entrypoint, runtime_env=job.runtime_env, poll_interval_s=job.poll_interval_s,
            timeout_s=job.job_timeout_s,
        )
        log = logger.info if outcome.succeeded else logger.error
        log("early retraining job %s %s after %.0f s", outcome.job_id, outcome.status, outcome.duration_s)
        return outcome.job_id
    submission_id = f"stef-ray-early-retrain-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    try:
        job_id = client.submit_job(
            entrypoint=job.entrypoint,
            submission_id=submission_id,
            runtime_env=job.runtime_env,
            metadata={"submitted_by": "stef-ray monitor", "reason": reason[:200]},
        )
    except RuntimeError as err:
        raise ServiceUnavailableError(f"Ray refused the early retraining job: {str(err).splitlines()[0][:200]}") from None
    logger.info("submitted early retraining job %s: %s", job_id, job.entrypoint)
    return job_id


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
