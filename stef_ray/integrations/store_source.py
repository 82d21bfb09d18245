"""Training data from the time-series store: the `power_demand_actual` points read back over a window.

The weekly retrain can then train on what `stef-ray ingest`, `POST /actuals` and `stef-ray forecast
--influx` wrote, with no file copied by hand (`data.store` in the config). The store holds load only.
"""

from __future__ import annotations

import pandas as pd

from stef_ray.config import DataConfig
from stef_ray.data import frame_to_hourly
from stef_ray.data.hourly import HourlyData
from stef_ray.exceptions import ConfigError, DataError
from stef_ray.integrations.influx import InfluxSettings
from stef_ray.integrations.influx_points import ACTUAL_FIELD, MEASUREMENT_ACTUAL


def store_window(end: str | None, days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(start, end) in UTC: ``days`` days ending at ``end`` (ISO, naive = UTC) or now."""
    try:
        stop = pd.Timestamp(end) if end else pd.Timestamp.now(tz="UTC").floor("h")
    except ValueError:
        raise ConfigError(f"data.store.end {end!r} is not a time; use e.g. 2017-01-01T00:00") from None
    stop = stop.tz_localize("UTC") if stop.tzinfo is None else stop.tz_convert("UTC")
    return stop - pd.Timedelta(days=days), stop


def read_store_history(data: DataConfig, env_file: str | None = ".env") -> HourlyData:
    """The hourly grid of the stored actuals over ``data.store``'s window, read with ``data``'s time zone and
    holiday calendar. Raises ConfigError for a config the store cannot serve, DataError for an empty window,
    ServiceUnavailableError when the store does not answer."""
    from stef_ray.ops.monitor_readers import open_reader

    store = data.store
    if store is None:
        raise ConfigError("data.store is not set")
    if data.exog:
        raise ConfigError(f"data.store holds load only, so data.exog ({', '.join(data.exog)}) cannot come from it: "
                          "read a file (data.path / --data) or leave exog empty (data.holidays still works)")
    start, end = store_window(store.end, store.days)
    settings = InfluxSettings.from_env(env_file) if store.reader == "influx" else None
    where = f"{settings.url}, bucket {settings.bucket}" if settings else store.export_url
    reader = open_reader(store.reader, store.export_url, settings)
    try:
        actuals = reader.actuals(start, end)
    finally:
        reader.close()
    if actuals.empty:
        raise DataError(f"no {MEASUREMENT_ACTUAL} points in the time-series store ({where}) between "
                        f"{start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC; fill it with `stef-ray ingest FILE` "
                        "or POST /actuals, or widen data.store.days")
    table = pd.DataFrame({"timestamp": actuals["timestamp"].to_numpy(), "load": actuals[ACTUAL_FIELD].to_numpy()})
    read_as = data.model_copy(update={"path": None, "timestamp_col": "timestamp", "target_col": "load",
                                      "timestamp_format": None, "dayfirst": False, "hour_ending": False, "sort": True})
    return frame_to_hourly(table, read_as,
                           source=f"the time-series store ({where}, {start:%Y-%m-%d} .. {end:%Y-%m-%d})")
