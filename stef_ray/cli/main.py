"""Entry point: builds the parser from the subcommand modules and turns user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from stef_ray import __version__
from stef_ray.exceptions import StefRayError
from stef_ray.threads import configure_threads

# Each module defines register(subparsers) and sets args.handler; listed in the order --help shows them.
SUBCOMMAND_MODULES = (
    "stef_ray.cli.data_cmd",
    "stef_ray.cli.train_cmd",
    "stef_ray.cli.forecast_cmd",
    "stef_ray.cli.ingest_cmd",
    "stef_ray.cli.backtest_cmd",
    "stef_ray.cli.tune_cmd",
    "stef_ray.cli.serve_cmd",
    "stef_ray.cli.schedule_cmd",
    "stef_ray.cli.monitor_cmd",
)

DESCRIPTION = """\
Hourly electricity-demand forecasting: log-linear trend + Fourier seasonality + residual models (per-hour
ridges, trees on weather, and a neural residual kept where it beats them out of sample), from the last
168 hours to the next 24.

typical session:
  stef-ray data vic-elec --out data/vic_elec.csv          # built-in real dataset (Victoria 2014)
  stef-ray train --data data/vic_elec.csv --config configs/vic_elec.yaml --out models/production
  stef-ray forecast --model models/production --data data/vic_elec.csv
  stef-ray backtest --data data/vic_elec.csv --config configs/vic_elec.yaml --start 2014-10-03 --days 90
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stef-ray", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"stef-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # subcommand not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        configure_threads()  # before the command imports numpy, torch or scikit-learn (they read it once)
        return int(args.handler(args) or 0)
    except StefRayError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
