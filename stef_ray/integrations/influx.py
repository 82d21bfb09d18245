"""InfluxDB sink for forecasts, their metrics and observed load, for the Grafana dashboards.

Every point goes first to a local append-only spool (line-protocol files, fsync'ed), and a background
thread delivers the spool to the server and deletes what was delivered. So `submit_*` never waits on
the network (the Serve app calls it inside a request), and points survive an unreachable server or a
crash of this process: they are delivered when the server is back.

Exactly once: a batch is removed from the spool only after the server acknowledged it. If the process
dies between the acknowledgement and the removal, the batch is sent again; that is harmless because a
point is identified by measurement + tags + timestamp, and InfluxDB overwrites a point with the same
identity. Points are therefore built deterministically from their content (no submit-time tags).

Spool layout, in `spool_dir`:
  <ns>-<pid>-<rand>.active   the segment this process appends to; it holds an flock on it while alive
  <ns>-<pid>-<rand>.lp       sealed segments, delivered oldest first, rewritten atomically as batches go
  rejected/                  segments the server refused as malformed (HTTP 400), kept for inspection
  .deliver.lock              flock taken by whichever process delivers, so two never send the same lines
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from stef_ray.exceptions import ConfigError, DataError
from stef_ray.quantiles import quantile_columns

logger = logging.getLogger(__name__)

# Names the sink writes; the Grafana dashboard test imports them so the two cannot drift apart.
MEASUREMENT_FORECAST = "power_demand_forecast"
MEASUREMENT_METRICS = "forecast_metrics"
MEASUREMENT_ACTUAL = "power_demand_actual"
MEASUREMENT_ALERT = "forecast_alert"
COMPONENT_FIELDS = ("forecast", "trend", "seasonality", "residual")
QUANTILE_FIELDS = ("p10", "p50", "p90")  # the default levels, which the dashboards read; any p<level> is written
LEAD_HOUR_FIELD = "lead_hour"
METRIC_FIELDS = ("MAE", "MSE", "RMSE", "R2", "MAPE", "SMAPE")
ACTUAL_FIELD = "load"
ALERT_FIELDS = ("mape", "threshold")
TAG_MODEL_NAME = "model_name"
TAG_MODEL_VERSION = "model_version"
TAG_ISSUE_TIME = "issue_time"
TAG_SCOPE = "scope"
TAG_SERIES_ID = "series_id"  # on every point of a fleet's series (stef-ray serve with serve_fleet_config.yaml)
MEASUREMENT_FIELDS: dict[str, tuple[str, ...]] = {
    MEASUREMENT_FORECAST: (*COMPONENT_FIELDS, *QUANTILE_FIELDS, LEAD_HOUR_FIELD),
    MEASUREMENT_METRICS: METRIC_FIELDS,
    MEASUREMENT_ACTUAL: (ACTUAL_FIELD,),
    MEASUREMENT_ALERT: ALERT_FIELDS,
}
MEASUREMENT_TAGS: dict[str, tuple[str, ...]] = {  # series_id only where a fleet's series is written
    MEASUREMENT_FORECAST: (TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_ISSUE_TIME, TAG_SERIES_ID),
    MEASUREMENT_METRICS: (TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_SERIES_ID),
    MEASUREMENT_ACTUAL: (TAG_SERIES_ID,),
    MEASUREMENT_ALERT: (TAG_MODEL_NAME, TAG_SCOPE, TAG_SERIES_ID),
}

ENV_VARS = {
    "url": "INFLUXDB_URL",
    "token": "INFLUXDB_TOKEN",
    "org": "INFLUXDB_ORG",
    "bucket": "INFLUXDB_BUCKET",
    "spool_dir": "STEF_RAY_SPOOL_DIR",
}


class InfluxSettings(BaseModel):
    """Where and how the sink delivers points."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field("http://localhost:8086", description="InfluxDB base URL (env INFLUXDB_URL)")
    token: SecretStr = Field(description="InfluxDB API token with write access (env INFLUXDB_TOKEN)")
    org: str = Field("open-stef", description="InfluxDB organisation (env INFLUXDB_ORG)")
    bucket: str = Field("power_demand", description="InfluxDB bucket written to (env INFLUXDB_BUCKET)")
    spool_dir: Path = Field(
        Path(".stef_ray/spool"),
        description="folder of the local spool that holds points until the server acknowledged them "
        "(env STEF_RAY_SPOOL_DIR)",
    )
    flush_interval_s: float = Field(1.0, gt=0, description="seconds between delivery rounds when idle")
    retry_max_s: float = Field(
        30.0, gt=0, description="longest wait between delivery attempts while the server is unreachable"
    )
    timeout_s: float = Field(5.0, gt=0, description="HTTP timeout of one write request, in seconds")
    batch_lines: int = Field(5000, ge=1, description="points sent in one write request at most")
    fsync: bool = Field(True, description="fsync the spool on every submit, so a crash loses nothing")

    @classmethod
    def from_env(
        cls, env_file: str | Path | None = ".env", environ: Mapping[str, str] | None = None, **overrides
    ) -> InfluxSettings:
        """Settings from the environment, then `env_file` (if it exists), then the defaults.

        Raises:
            ConfigError: a value is missing or invalid; the message names the variable.
        """
        from dotenv import dotenv_values

        environ = os.environ if environ is None else environ
        file_values = dotenv_values(env_file) if env_file is not None and Path(env_file).is_file() else {}
        values: dict[str, object] = {}
        for field_name, var in ENV_VARS.items():
            value = environ.get(var) or file_values.get(var)
            if value:
                values[field_name] = value
        values.update(overrides)
        if "token" not in values:
            raise ConfigError(
                "INFLUXDB_TOKEN is not set: put it in the environment or in .env (see .env.example)"
            )
        try:
            return cls(**values)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"InfluxDB setting {ENV_VARS.get(key, key)}: {first['msg']}") from None


# ---- points -------------------------------------------------------------------------------------


def _utc(timestamp: pd.Timestamp | dt.datetime, what: str) -> pd.Timestamp:
    stamp = pd.Timestamp(timestamp)
    if stamp.tzinfo is None:
        raise DataError(f"{what} {stamp} has no timezone: give timezone-aware timestamps")
    return stamp.tz_convert("UTC")


def _line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int], seconds: int) -> str:
    from influxdb_client import Point, WritePrecision

    point = Point(measurement)
    for key, value in sorted(tags.items()):
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    return point.time(seconds, WritePrecision.S).to_line_protocol()


def _finite_fields(row: Mapping[str, object], names: Iterable[str]) -> dict[str, float]:
    # Line protocol cannot carry NaN or inf; a missing component is left out rather than faked.
    fields = {}
    for name in names:
        value = row.get(name)
        if value is not None and math.isfinite(float(value)):
            fields[name] = float(value)
    return fields


def _series_tag(series_id: str | None) -> dict[str, str]:
    return {} if series_id is None else {TAG_SERIES_ID: str(series_id)}


def forecast_lines(
    forecast: pd.DataFrame, *, model_name: str, model_version: str, issue_time: pd.Timestamp | dt.datetime,
    series_id: str | None = None,
) -> list[str]:
    """Line protocol for one forecast: one point per hour, tagged with model and issue time.

    Args:
        forecast: columns `timestamp` (tz-aware), `forecast`, `trend`, `seasonality`, `residual`,
            optionally the quantiles the model issues (`p10`, `p50`, `p90` with the default levels; each
            `p<level>` column is a field of the same name).
        issue_time: the forecast origin (tz-aware): the start of the first forecast hour, as
            ``stef_ray.forecasting.Forecast.origin``; stored as a UTC ISO tag. Lead hour 1 is the hour
            that starts at the origin, as in the backtest's horizon_metrics.csv.
        series_id: the fleet's series the forecast is for (a ``series_id`` tag); None for a single series.

    Raises:
        DataError: a required column is missing or a timestamp has no timezone.
    """
    missing = [name for name in ("timestamp", *COMPONENT_FIELDS) if name not in forecast.columns]
    if missing:
        raise DataError(f"forecast frame lacks column(s) {', '.join(missing)}")
    origin = _utc(issue_time, "issue_time")
    tags = {
        TAG_MODEL_NAME: str(model_name),
        TAG_MODEL_VERSION: str(model_version),
        TAG_ISSUE_TIME: origin.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **_series_tag(series_id),
    }
    present = [*COMPONENT_FIELDS, *quantile_columns(forecast.columns)]
    lines = []
    for row in forecast.to_dict("records"):
        target = _utc(row["timestamp"], "forecast timestamp")
        fields: dict[str, float | int] = _finite_fields(row, present)
        if not fields:
            continue
        fields[LEAD_HOUR_FIELD] = round((target - origin).total_seconds() / 3600) + 1
        lines.append(_line(MEASUREMENT_FORECAST, tags, fields, int(target.timestamp())))
    return lines


def metrics_lines(
    metrics: Mapping[str, float],
    *,
    model_name: str,
    model_version: str,
    issue_time: pd.Timestamp | dt.datetime,
    series_id: str | None = None,
) -> list[str]:
    """One `forecast_metrics` point at the issue time of the evaluated forecast (unknown names dropped)."""
    fields = _finite_fields(metrics, METRIC_FIELDS)
    if not fields:
        raise DataError(f"no metric among {', '.join(METRIC_FIELDS)} in {sorted(metrics)}")
    seconds = int(_utc(issue_time, "issue_time").timestamp())
    tags = {TAG_MODEL_NAME: str(model_name), TAG_MODEL_VERSION: str(model_version), **_series_tag(series_id)}
    return [_line(MEASUREMENT_METRICS, tags, fields, seconds)]


def actual_lines(actuals: pd.DataFrame, *, value_column: str = ACTUAL_FIELD, series_id: str | None = None) -> list[str]:
    """`power_demand_actual` points from a frame with `timestamp` (tz-aware) and `value_column` (tagged
    with ``series_id`` for a fleet's series)."""
    missing = [name for name in ("timestamp", value_column) if name not in actuals.columns]
    if missing:
        raise DataError(f"actuals frame lacks column(s) {', '.join(missing)}")
    lines = []
    for timestamp, value in zip(actuals["timestamp"], actuals[value_column], strict=True):
        if value is None or not math.isfinite(float(value)):
            continue
        seconds = int(_utc(timestamp, "actual timestamp").timestamp())
        lines.append(_line(MEASUREMENT_ACTUAL, _series_tag(series_id), {ACTUAL_FIELD: float(value)}, seconds))
    return lines


# ---- spool --------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only segment files; safe against crashes and shared by several processes."""

    def __init__(self, directory: Path, *, fsync: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._active_fd: int | None = None
        self._active_path: Path | None = None
        self._active_lines = 0

    def append(self, lines: list[str]) -> None:
        """Append complete lines to this process's active segment; durable on return if fsync is on."""
        if not lines:
            return
        payload = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            if self._active_fd is None:
                self._open_active()
            os.write(self._active_fd, payload)
            if self.fsync:
                os.fsync(self._active_fd)
            self._active_lines += len(lines)

    def _open_active(self) -> None:
        stem = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Created under a name the orphan scan ignores, locked, then renamed: no other process can
        # mistake a brand-new segment for the leftover of a dead one.
        fresh = self.directory / f"{stem}.new"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._active_path = self.directory / f"{stem}.active"
        os.rename(fresh, self._active_path)
        if self.fsync:
            _fsync_dir(self.directory)
        self._active_fd = fd
        self._active_lines = 0

    def seal(self) -> None:
        """Close this process's active segment so it can be delivered; the next append opens a new one."""
        with self._lock:
            if self._active_fd is None or self._active_lines == 0:
                return
            os.rename(self._active_path, self._active_path.with_suffix(".lp"))
            if self.fsync:
                _fsync_dir(self.directory)
            os.close(self._active_fd)
            self._active_fd, self._active_path, self._active_lines = None, None, 0

    def seal_orphans(self) -> int:
        """Seal active segments whose writer died (its flock is gone). Returns how many."""
        sealed = 0
        for path in sorted(self.directory.glob("*.active")):
            if path == self._active_path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                os.rename(path, path.with_suffix(".lp"))
                sealed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return sealed

    def sealed_segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.lp"))

    def pending_lines(self) -> int:
        """Lines not yet delivered: sealed segments plus this process's active one."""
        with self._lock:
            active = self._active_lines
        return active + sum(len(self.read_segment(path)) for path in self.sealed_segments())

    @staticmethod
    def read_segment(path: Path) -> list[str]:
        """The complete lines of a segment; a half-written last line (a crash mid-write) is dropped."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        text = raw.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines[-1]:
            logger.warning("spool segment %s ends in a half-written line; ignoring it: %r", path.name, lines[-1][:80])
        return [line for line in lines[:-1] if line]

    def replace_segment(self, path: Path, remaining: list[str]) -> None:
        """Atomically leave only `remaining` in a sealed segment (delete it when empty)."""
        if not remaining:
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                handle.write("".join(line + "\n" for line in remaining).encode())
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        if self.fsync:
            _fsync_dir(self.directory)

    def reject(self, path: Path) -> Path:
        rejected = self.directory / "rejected"
        rejected.mkdir(exist_ok=True)
        target = rejected / path.name
        os.replace(path, target)
        return target

    def close(self) -> None:
        self.seal()


# ---- sink ---------------------------------------------------------------------------------------


class _UnreachableError(Exception):
    """The server could not take the batch now; keep it and retry later."""


class InfluxSink:
    """Spooled, non-blocking writer of forecast, metric and actual points.

    Use as a context manager, or call `close()`; `flush(timeout_s)` blocks until the spool is delivered.
    """

    def __init__(self, settings: InfluxSettings, *, start: bool = True):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        self.spool = Spool(settings.spool_dir, fsync=settings.fsync)
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._deliver_lock = threading.Lock()
        self._lock_fd = os.open(self.spool.directory / ".deliver.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.delivered_lines = 0
        self.failed_attempts = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="influx-sink-flusher", daemon=True)
            self._thread.start()

    @classmethod
    def from_env(cls, env_file: str | Path | None = ".env", **overrides) -> InfluxSink:
        return cls(InfluxSettings.from_env(env_file, **overrides))

    # -- submitting (never touches the network) --

    def submit(self, lines: list[str]) -> int:
        """Spool line-protocol lines for delivery; returns how many were spooled."""
        self.spool.append(lines)
        self._wake.set()
        return len(lines)

    def submit_forecast(self, forecast: pd.DataFrame, *, model_name: str, model_version: str, issue_time,
                        series_id: str | None = None) -> int:
        lines = forecast_lines(forecast, model_name=model_name, model_version=model_version, issue_time=issue_time,
                               series_id=series_id)
        return self.submit(lines)

    def submit_metrics(self, metrics: Mapping[str, float], *, model_name: str, model_version: str, issue_time,
                       series_id: str | None = None) -> int:
        lines = metrics_lines(metrics, model_name=model_name, model_version=model_version, issue_time=issue_time,
                              series_id=series_id)
        return self.submit(lines)

    def submit_actuals(self, actuals: pd.DataFrame, *, value_column: str = ACTUAL_FIELD,
                       series_id: str | None = None) -> int:
        return self.submit(actual_lines(actuals, value_column=value_column, series_id=series_id))

    # -- delivering --

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Deliver everything spooled so far; True if the spool is empty before `timeout_s` runs out."""
        deadline = time.monotonic() + timeout_s
        wait_s = self.settings.flush_interval_s
        while True:
            if self._deliver_round() and self.spool.pending_lines() == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning(
                    "InfluxDB at %s: %d point(s) still spooled in %s (%s)",
                    self.settings.url, self.spool.pending_lines(), self.spool.directory, self.last_error,
                )
                return False
            time.sleep(min(wait_s, remaining))
            wait_s = min(wait_s * 2, self.settings.retry_max_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop the flusher after a last delivery attempt of at most `timeout_s`; what is left stays spooled."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        delivered = self.flush(timeout_s) if timeout_s > 0 else False
        self.spool.close()
        os.close(self._lock_fd)
        self._client.close()
        return delivered

    def __enter__(self) -> InfluxSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self) -> None:
        wait_s = self.settings.flush_interval_s
        while not self._stop.is_set():
            self._wake.wait(wait_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                ok = self._deliver_round()
            except Exception:  # the flusher must outlive any surprise; the points stay spooled
                logger.exception("InfluxDB flusher round failed")
                ok = False
            wait_s = self.settings.flush_interval_s if ok else min(wait_s * 2, self.settings.retry_max_s)

    def _deliver_round(self) -> bool:
        """Seal and deliver all sealed segments. False if the server could not be reached."""
        self.spool.seal()
        with self._deliver_lock:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True  # another process is delivering this spool
            try:
                self.spool.seal_orphans()
                for path in self.spool.sealed_segments():
                    self._deliver_segment(path)
            except _UnreachableError as err:
                self.failed_attempts += 1
                self.last_error = str(err)
                logger.debug("InfluxDB delivery postponed: %s", err)
                return False
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return True

    def _deliver_segment(self, path: Path) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        lines = self.spool.read_segment(path)
        size = self.settings.batch_lines
        while lines:
            batch = lines[:size]
            try:
                self._write_api.write(
                    bucket=self.settings.bucket,
                    org=self.settings.org,
                    record="\n".join(batch).encode(),
                    write_precision=WritePrecision.S,
                )
            except ApiException as err:
                if err.status == 400:
                    target = self.spool.reject(path)
                    logger.error("InfluxDB refused %s as malformed (%s); moved to %s", path.name, err.reason, target)
                    return
                # 401/403/404 are set-up errors (token, org, bucket): keep the points until fixed.
                raise _UnreachableError(f"HTTP {err.status} {err.reason}: {(err.body or '')[:200]}") from None
            except Exception as err:  # connection refused, timeout, reset: the server is away
                raise _UnreachableError(f"{type(err).__name__}: {err}") from None
            lines = lines[size:]
            self.spool.replace_segment(path, lines)
            self.delivered_lines += len(batch)
            self.last_error = None
