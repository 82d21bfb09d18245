"""Reading the stored forecasts and actuals back for the accuracy monitor and for training from the store.

Forecasts are the `power_demand_forecast` points the sink writes (field `forecast`, tags model name,
model version, issue time and, for a fleet, series id); actuals are `power_demand_actual` points (field
`load`). Both come back as plain frames in UTC, one row per point, a retried point counted once.

Two ways to read the points (`PointReader`):
  FluxReader    the InfluxDB 2 query API (Flux), what production uses. InfluxDB 2 is not installable on
                the development machines, so this reader is not exercised by the tests.
  ExportReader  the Prometheus-style `/api/v1/export` of victoria-metrics, which stores the same line
                protocol as `<measurement>_<field>{tags}`; the tests run against it.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from stef_ray.exceptions import ConfigError, ServiceUnavailableError
from stef_ray.integrations.influx_points import (
    ACTUAL_FIELD,
    MEASUREMENT_ACTUAL,
    MEASUREMENT_FORECAST,
    TAG_ISSUE_TIME,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_SERIES_ID,
)

if TYPE_CHECKING:
    from stef_ray.integrations.influx import InfluxSettings

logger = logging.getLogger(__name__)

FORECAST_FIELD = "forecast"
FORECAST_COLUMNS = ("timestamp", "issue_time", "model_name", "model_version", "series_id", "forecast")
ACTUAL_COLUMNS = ("timestamp", "series_id", "load")  # series_id "" where a single series wrote no tag
EXPORT_PAD_S = 60


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


def flux_query(bucket: str, measurement: str, field_name: str, tags: tuple[str, ...], start: pd.Timestamp,
               end: pd.Timestamp) -> str:
    """The Flux query that reads one field of one measurement over [start, end] (UTC), a row per time and
    series with ``tags`` as columns."""
    def flux_string(text: str) -> str:
        return json.dumps(text)  # a JSON string literal is a valid Flux string literal

    keep = json.dumps(["_time", field_name, *tags])
    # range's stop is exclusive; the window's end is not.
    stop = (end + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"from(bucket: {flux_string(bucket)})"
        f" |> range(start: {start.strftime('%Y-%m-%dT%H:%M:%SZ')}, stop: {stop})"
        f" |> filter(fn: (r) => r._measurement == {flux_string(measurement)}"
        f" and r._field == {flux_string(field_name)})"
        # one row per time and series, the value under the field's name (what query_data_frame expects)
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        f" |> keep(columns: {keep})"
        " |> group()"
    )


class FluxReader:
    """Reads from InfluxDB 2 with Flux through influxdb-client's `query_api().query_data_frame`.

    Not run against a server in the tests: InfluxDB 2 cannot be installed on the development machines, and
    victoria-metrics does not speak Flux. Its query (``flux_query``) is checked by Flux's own parser and
    type checker (tests/ops/test_flux_queries.py).
    """

    def __init__(self, settings: InfluxSettings, timeout_s: float = 30.0):
        from influxdb_client import InfluxDBClient

        self.settings = settings
        self._client = InfluxDBClient(
            url=settings.url, token=settings.token.get_secret_value(), org=settings.org, timeout=int(timeout_s * 1000)
        )

    def _query(self, measurement: str, field_name: str, tags: tuple[str, ...], start, end) -> pd.DataFrame:
        query = flux_query(self.settings.bucket, measurement, field_name, tags, start, end)
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
