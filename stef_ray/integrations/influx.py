"""InfluxDB sink for forecasts, their metrics and observed load, for the Grafana dashboards.

Every point goes first to a local append-only spool (`stef_ray.integrations.influx_spool`: line-protocol
files, fsync'ed), and a background thread delivers the spool to the server and deletes what was delivered.
So `submit_*` never waits on the network (the Serve app calls it inside a request), and points survive an
unreachable server or a crash of this process: they are delivered when the server is back.

Exactly once: a batch is removed from the spool only after the server acknowledged it. If the process
dies between the acknowledgement and the removal, the batch is sent again; that is harmless because a
point is identified by measurement + tags + timestamp, and InfluxDB overwrites a point with the same
identity. Points are therefore built deterministically from their content (no submit-time tags), in
`stef_ray.integrations.influx_points`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from stef_ray.exceptions import ConfigError
from stef_ray.integrations.influx_points import (
    ACTUAL_FIELD,
    actual_lines,
    forecast_lines,
    metrics_lines,
)
from stef_ray.integrations.influx_spool import Spool

logger = logging.getLogger(__name__)

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
