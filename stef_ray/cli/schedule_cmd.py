"""`stef-ray schedule`: weekly retraining as Ray jobs, in the foreground (also the compose `scheduler`)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

HELP = "retrain on a cron schedule by submitting the tune job to the Ray cluster"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help=HELP,
        description=HELP + ". Defaults: every Sunday 02:00 Asia/Seoul; a run missed while the scheduler "
        "was down runs once at start-up.",
    )
    parser.add_argument("--config", type=Path, help="YAML file with ScheduleConfig keys (flags override it)")
    parser.add_argument("--cron", help="cron expression, e.g. '0 2 * * 0'")
    parser.add_argument("--timezone", help="IANA time zone of the cron expression, e.g. Asia/Seoul")
    parser.add_argument("--entrypoint", help="command the Ray job runs")
    parser.add_argument("--address", dest="ray_address", help="Ray job API address (default $RAY_ADDRESS)")
    parser.add_argument("--state-file", type=Path, help="where the last handled run time is kept")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one retraining cycle now and exit")
    mode.add_argument("--show-next", type=int, metavar="N", help="print the next N run times and exit")
    parser.set_defaults(handler=run)


def _config(args: argparse.Namespace):
    import yaml
    from pydantic import ValidationError

    from stef_ray.exceptions import ConfigError
    from stef_ray.ops.schedule import ScheduleConfig

    values = {}
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"schedule config {args.config} does not exist")
        values = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"schedule config {args.config} must be a mapping of ScheduleConfig keys")
    for key in ("cron", "timezone", "entrypoint", "ray_address", "state_file"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    try:
        return ScheduleConfig(**values)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"schedule config key {key!r}: {first['msg']}") from None


def run(args: argparse.Namespace) -> int:
    from stef_ray.ops.schedule import RetrainScheduler
    from stef_ray.ops.schedule_cron import next_run_times

    config = _config(args)
    if args.show_next:
        for moment in next_run_times(config.cron, config.timezone, dt.datetime.now(dt.UTC), n=args.show_next):
            print(moment.isoformat())
        return 0
    scheduler = RetrainScheduler(config)
    if args.once:
        outcome = scheduler.run_cycle(dt.datetime.now(dt.UTC))
        print(f"{outcome.job_id} {outcome.status} in {outcome.duration_s:.0f} s")
        return 0 if outcome.succeeded else 1
    scheduler.run_forever()
    return 0
