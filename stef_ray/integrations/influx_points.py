"""The points the InfluxDB sink writes: the names of measurements, fields and tags (the schema the Grafana
dashboards and the accuracy monitor read), and the line protocol of forecasts, metrics and actuals.

A point is built from its content alone (no submit-time tags or clocks), so the same forecast always gives
the same lines: a batch the sink sends twice overwrites itself instead of doubling (see
`stef_ray.integrations.influx`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping

import pandas as pd

from stef_ray.exceptions import DataError
from stef_ray.quantiles import quantile_columns

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
