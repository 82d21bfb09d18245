"""Options shared by the subcommands that read data, and how they override the YAML config."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from stef_ray.config import DataConfig, TrainConfig
from stef_ray.config_loading import format_validation_error, load_config
from stef_ray.exceptions import ConfigError

DATA_HELP = """\
data options (override the config's data section):
  Timestamps are read with --timezone when naive (e.g. Asia/Seoul; DST days of 23/25 hours are handled),
  converted to it when they carry an offset. By default a timestamp marks the START of its hour; pass
  --hour-ending for files where 01:00 means 00:00-01:00. Sub-hourly data is averaged to hourly.
  Gaps up to 3 h are interpolated and reported; longer gaps are kept out of training windows.
"""


def add_data_arguments(parser: argparse.ArgumentParser, data_required: bool = False) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=data_required, metavar="FILE", help="CSV or Parquet file")
    group.add_argument("--timestamp-col", help="timestamp column (default: timestamp)")
    group.add_argument("--target-col", help="load column, MW (default: load)")
    group.add_argument("--exog", help="comma-separated exogenous columns, e.g. temperature,workday")
    group.add_argument("--timezone", help="IANA zone of naive timestamps, e.g. Asia/Seoul")
    group.add_argument("--timestamp-format", help="strftime format, e.g. '%%d-%%m-%%Y %%H:%%M'")
    group.add_argument("--dayfirst", action="store_true", default=None, help="day-first dates (31-12-2002)")
    group.add_argument("--hour-ending", action="store_true", default=None,
                       help="timestamps mark the end of each interval (PJM style)")
    group.add_argument("--sort", action="store_true", default=None, help="sort unsorted input instead of refusing it")
    group.add_argument("--holidays", metavar="CALENDAR",
                       help="add a 0/1 'holiday' input from a public-holiday calendar: NERC (the six US "
                       "holidays the power industry keeps), US (federal) or a country code, optionally "
                       "with a region, e.g. FR, GB-ENG, AU-VIC")


def data_overrides(args: argparse.Namespace) -> dict:
    overrides = {
        "path": args.data,
        "timestamp_col": args.timestamp_col,
        "target_col": args.target_col,
        "exog": [c.strip() for c in args.exog.split(",") if c.strip()] if args.exog else None,
        "timezone": args.timezone,
        "timestamp_format": args.timestamp_format,
        "dayfirst": args.dayfirst,
        "hour_ending": args.hour_ending,
        "sort": args.sort,
        "holidays": args.holidays,
    }
    return {key: value for key, value in overrides.items() if value is not None}


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The YAML config (if any) with the command-line data options laid over it."""
    config = load_config(TrainConfig, getattr(args, "config", None))
    return config.model_copy(update={"data": data_config_with_overrides(config.data, args)})


def data_config_with_overrides(base: DataConfig, args: argparse.Namespace) -> DataConfig:
    """``base`` with the command-line data options laid over it; a bad value is a one-line ConfigError."""
    try:
        return DataConfig.model_validate(base.model_dump() | data_overrides(args))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "command line", prefix="data")) from None


def local_date(text: str, timezone, flag: str = "--end"):
    """``--end 2017-01-01`` as a timestamp in the data's zone; a one-line ConfigError if it is not a date."""
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a date; use e.g. 2014-10-03") from None
    return stamp.tz_localize(timezone) if stamp.tzinfo is None else stamp.tz_convert(timezone)


def load_data(data: DataConfig, end: str | None = None):
    """The hourly data a command trains on: the file (``data.path``, a glob, or --data), else the
    time-series store (``data.store``), read up to ``end`` (the command's --end) and cut there.

    For the store, --end is also where its window of ``data.store.days`` ends (instead of now): a retrain
    as of a given time reads the history it would have had then."""
    from stef_ray.data import load_hourly

    if data.store is not None and not data.path:
        from stef_ray.integrations.store_source import read_store_history

        if end is not None:
            stop = local_date(end, data.timezone or "UTC").tz_convert("UTC")
            data = data.model_copy(update={"store": data.store.model_copy(update={"end": stop.isoformat()})})
        loaded = read_store_history(data)
    else:
        loaded = load_hourly(data)
    return loaded if end is None else loaded.window(end=local_date(end, loaded.frame.index.tz))
