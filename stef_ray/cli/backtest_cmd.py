"""``stef-ray backtest``: rolling-origin day-ahead evaluation against the baselines."""

from __future__ import annotations

import argparse

from stef_ray.cli.options import DATA_HELP, add_data_arguments

DESCRIPTION = """\
Rolling-origin backtest: one 24 h forecast per day at 00:00 local time from --start for --days days.
The hybrid is refitted every --refit-every days on the data before the origin only (0 = fit once on the
data before --start); the neural residual warm-starts from the previous fit. Baselines: seasonal_naive_week
(same hour last week), seasonal_naive_day (same hour yesterday), trend_fourier (the hybrid without its
residual models).
Peers from the 'peers' extra: lightgbm (lags + calendar + exogenous, direct multi-horizon), mstl.

Writes overall_metrics.csv (one row per model), horizon_metrics.csv (per model and lead hour 1-24),
forecasts.csv (every forecast with its actual) and refits.csv (each refit of the hybrid: the data it saw,
its validation score, the residual models in its forecasts and the neural residual's keep-or-drop
evidence) to --out, and prints the table.

example (the vic-elec protocol of the README):
  stef-ray backtest --config configs/vic_elec.yaml --data data/vic_elec.csv \\
      --start 2014-10-03 --days 90 --refit-every 7

Many series at once (--fleet FILE.yaml: each series' file and read options, the shared model; see
configs/pjm_fleet.yaml): one Ray task per series on the local Ray or --address, a line as each series
finishes, and a summary (summary.csv in --out: the hybrid's MAPE and coverage and each other model's
MAPE_<model>, per series) with the mean of each model over the series; each series' tables go to
--out/<series_id>/. A series with bad data is reported and the others go on. Exit status 1 when a series
failed.
  stef-ray backtest --fleet configs/pjm_fleet.yaml --start 2017-01-01 --days 364 --refit-every 28 \
      --models hybrid,trend_fourier,seasonal_naive_week,seasonal_naive_day,lightgbm,mstl
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backtest", help="rolling-origin evaluation against baselines", description=DESCRIPTION,
        epilog=DATA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="data + model config (default: built-in defaults)")
    parser.add_argument("--start", required=True, metavar="DATE", help="first origin date (local), e.g. 2014-10-03")
    parser.add_argument("--days", type=int, default=90, help="number of daily origins (default: %(default)s)")
    parser.add_argument("--refit-every", type=int, default=7, metavar="N",
                        help="days between refits; 0 = fit once before --start (default: %(default)s)")
    parser.add_argument("--models", default="hybrid,trend_fourier,seasonal_naive_week,seasonal_naive_day",
                        help="comma-separated models (default: %(default)s)")
    parser.add_argument("--epochs", type=int, metavar="N", help="override model.residual.max_epochs")
    parser.add_argument("--out", default="out/backtest", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--fleet", metavar="YAML", help="backtest every series of a fleet file on Ray (the hybrid "
                        "only; --config and the data options do not apply)")
    parser.add_argument("--address", metavar="ADDR", help="with --fleet: the Ray cluster (default: $RAY_ADDRESS, "
                        "else a local Ray)")
    add_data_arguments(parser, data_required=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stef_ray.cli.options import load_data, train_config_from_args
    from stef_ray.evaluation.backtest import parse_models, run_backtest
    from stef_ray.evaluation.peers import available_peers

    if args.fleet:
        return run_fleet(args)
    config = train_config_from_args(args)
    if args.epochs:
        config.model.residual.max_epochs = args.epochs
    start = _window(args)
    models = parse_models(args.models)
    data = load_data(config.data)
    peers = available_peers(models)
    result = run_backtest(data, config.model, start, args.days, args.refit_every, models,
                          progress=lambda line: print(f"  {line}", flush=True), peers=peers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.overall.to_csv(out / "overall_metrics.csv", index=False, float_format="%.4f")
    result.by_horizon.to_csv(out / "horizon_metrics.csv", index=False, float_format="%.4f")
    result.forecasts.to_csv(out / "forecasts.csv", index=False, float_format="%.3f")
    written = "overall_metrics.csv, horizon_metrics.csv, forecasts.csv"
    if len(result.refits):
        result.refits.to_csv(out / "refits.csv", index=False, float_format="%.5f")
        written += ", refits.csv"
    print()
    print(format_table(result.overall))
    if result.skipped_origins:
        print(f"{len(result.skipped_origins)} origins skipped for gaps in their history")
    if len(result.refits) and result.refits["neural_days"].notna().any():  # the neural residual was trained
        print(f"neural residual in the forecast in {int(result.refits['neural_kept'].sum())} of "
              f"{len(result.refits)} refits (refits.csv has each gate's evidence)")
    print(f"\nfit time {result.fit_seconds:.1f} s; wrote {out}/{written}")
    return 0


def _window(args: argparse.Namespace):
    import pandas as pd

    from stef_ray.exceptions import ConfigError

    if args.days < 1:
        raise ConfigError(f"--days must be at least 1 (got {args.days})")
    try:
        return pd.Timestamp(args.start)
    except ValueError:
        raise ConfigError(f"--start {args.start!r} is not a date; use e.g. 2014-10-03") from None


def run_fleet(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stef_ray.cli.fleet_output import fleet_from_args, print_report, report_line
    from stef_ray.evaluation.backtest import parse_models
    from stef_ray.integrations.fleet_ray import run_fleet_backtest

    start = _window(args)
    models = parse_models(args.models)
    models.sort(key=lambda name: name != "hybrid")  # the hybrid first: each series' score, the others beside it
    fleet = fleet_from_args(args)
    print(f"backtesting {len(fleet.series)} series on Ray ({', '.join(models)}), "
          f"{fleet.resources.cpus_per_series:g} CPU each", flush=True)
    run = run_fleet_backtest(fleet, start, args.days, args.refit_every, args.address, report_line("MAPE"),
                             models=tuple(models), keep_tables=True)
    for outcome in run.outcomes:  # each series' tables as `stef-ray backtest` writes one series'
        if outcome.tables:
            folder = Path(args.out) / outcome.series_id
            folder.mkdir(parents=True, exist_ok=True)
            for name, table in outcome.tables.items():
                table.to_csv(folder / f"{name}.csv", index=False, float_format="%.4f" if name != "forecasts" else "%.3f")
            outcome.tables = None
    return print_report(run, args.out)


def format_table(overall) -> str:
    bands = [c for c in overall.columns if c.startswith("coverage_")]  # coverage_p10_p90 with the default levels
    columns = [c for c in ("model", "MAPE", "SMAPE", "MAE", "RMSE", "R2", *bands, "pinball") if c in overall.columns]
    table = overall[columns].sort_values("MAPE")
    return table.to_string(index=False, float_format=lambda v: f"{v:,.3f}")
