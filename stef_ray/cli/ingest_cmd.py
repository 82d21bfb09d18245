"""``stef-ray ingest``: write observed load to the time-series store as ``power_demand_actual``."""

from __future__ import annotations

import argparse

from stef_ray.cli.options import DATA_HELP, add_data_arguments, local_date, train_config_from_args

DESCRIPTION = """\
Read a load file with the same reader and flags as 'train' and write each observed hour to the time-series
store (InfluxDB v2 API) as power_demand_actual, the measurement 'stef-ray monitor' and the dashboards join
forecasts with. Points go through the local spool (.stef_ray/spool/): if the store is down they wait there
and are delivered on the next run. Idempotent: a point is keyed by its hour, so sending a day again changes
nothing. Hours the reader interpolated (short gaps) are not sent: only what was measured.
Settings: INFLUXDB_URL, INFLUXDB_TOKEN, INFLUXDB_ORG, INFLUXDB_BUCKET from the environment or .env.

example:
  stef-ray ingest data/latest_week.csv --config configs/vic_elec.yaml --since 2014-12-01
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest", help="write observed load (actuals) to the time-series store", description=DESCRIPTION,
        epilog=DATA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="CSV or Parquet file (or --data, or the config's data.path)")
    parser.add_argument("--config", metavar="YAML", help="config whose data section says how to read the file")
    parser.add_argument("--since", metavar="DATE", help="only hours from this date on (local time)")
    parser.add_argument("--until", metavar="DATE", help="only hours before this date (local time)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for delivery before leaving the rest in the spool (default: %(default)s)")
    add_data_arguments(parser)
    parser.set_defaults(handler=run)


def observed_actuals(data, since=None, until=None):
    """The measured hours of ``data`` as a (timestamp, load) frame: interpolated hours and gaps left out."""
    import numpy as np
    import pandas as pd

    from stef_ray.data.hourly import LOAD

    load = data.frame[LOAD]
    measured = load.notna().to_numpy().copy()
    for start, hours in data.report.interpolated:
        at = data.frame.index.get_indexer([start])[0]
        if at >= 0:
            measured[at : at + hours] = False
    keep = pd.Series(measured, index=load.index)
    if since is not None:
        keep &= load.index >= since
    if until is not None:
        keep &= load.index < until
    chosen = load[keep.to_numpy()]
    return pd.DataFrame({"timestamp": chosen.index, LOAD: np.asarray(chosen, dtype=float)})


def run(args: argparse.Namespace) -> int:
    from stef_ray.data import load_hourly
    from stef_ray.data.hourly import LOAD
    from stef_ray.exceptions import ConfigError
    from stef_ray.integrations.influx import InfluxSink

    if args.file and args.data and args.file != args.data:
        raise ConfigError(f"two files given ({args.file} and --data {args.data}); give one")
    args.data = args.file or args.data
    config = train_config_from_args(args)
    data = load_hourly(config.data)
    for line in data.report.lines():
        print(f"data: {line}")
    zone = data.frame.index.tz
    since = local_date(args.since, zone, "--since") if args.since else None
    until = local_date(args.until, zone, "--until") if args.until else None
    actuals = observed_actuals(data, since, until)
    if actuals.empty:
        raise ConfigError(f"no measured hours in {config.data.path} between {args.since or 'its start'} and "
                          f"{args.until or 'its end'}; check --since/--until")
    with InfluxSink.from_env() as sink:
        sent = sink.submit_actuals(actuals, value_column=LOAD)
        delivered = sink.flush(timeout_s=args.timeout)
    first, last = actuals["timestamp"].iloc[0], actuals["timestamp"].iloc[-1]
    print(f"✓ {sent:,} hours of actual load, {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} ({zone}), "
          + ("delivered to the time-series store" if delivered
             else "spooled: the store did not answer in time; they are sent on the next run"))
    return 0
