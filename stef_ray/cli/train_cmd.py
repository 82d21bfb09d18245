"""``stef-ray train``: fit trend, seasonality and the residual models in one process; write a bundle."""

from __future__ import annotations

import argparse

from stef_ray.cli.options import DATA_HELP, add_data_arguments, local_date, train_config_from_args

DESCRIPTION = """\
Fit the hybrid model (log-linear trend -> Fourier seasonality -> residual models: per-hour ridges, trees
beside them where there is weather, and a neural residual (LSTM or MLP) kept only where it beats them on
validation blocks spread over the last year) on one file and write a model bundle folder. Hyperparameters
come from --config (YAML with 'data' and 'model' sections, see configs/vic_elec.yaml); to search them in
parallel use 'stef-ray tune'. The output says which residual models are in the forecast and why.

example:
  stef-ray train --config configs/vic_elec.yaml --data data/vic_elec.csv --out models/production

Many series at once (--fleet FILE.yaml, see configs/pjm_fleet.yaml): one Ray task per series on the local
Ray or --address, a bundle per series in --out/<series id>, a line as each finishes and summary.csv; a
series with bad data is reported and the others go on. Exit status 1 when a series failed.
  stef-ray train --fleet configs/pjm_fleet.yaml --out models/pjm --end 2017-01-01
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="fit the hybrid model and write a bundle", description=DESCRIPTION,
        epilog=DATA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="data + model config (default: built-in defaults)")
    parser.add_argument("--out", default="models/production", metavar="DIR", help="bundle folder (default: %(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the neural residual trains (default: auto)")
    parser.add_argument("--epochs", type=int, metavar="N", help="override model.residual.max_epochs")
    parser.add_argument("--end", metavar="DATE", help="train only on data before this date (local time); with data.store, the store's window ends there")
    parser.add_argument("--fleet", metavar="YAML", help="fit every series of a fleet file on Ray, a bundle per "
                        "series in --out (--config and the data options do not apply)")
    parser.add_argument("--register", action="store_true", help="with --fleet: score each series on its last "
                        "registry.holdout_days days, register it in MLflow as <registry.model_prefix>-<series id> and "
                        "move that series' champion alias only to a version at least as good (the fleet file's registry "
                        "section)")
    parser.add_argument("--address", metavar="ADDR", help="with --fleet: the Ray cluster (default: $RAY_ADDRESS, "
                        "else a local Ray)")
    add_data_arguments(parser)
    parser.set_defaults(handler=run)


class EpochTable:
    """The seed's per-epoch table: Epoch, Train Loss, Val Loss (on the early-stopping days), Best Val, Status;
    one table per ensemble member."""

    def __call__(self, report, model) -> None:
        if report.epoch == 1:
            if len(model.nets) > 1:
                print(f"ensemble member {report.member + 1} of {len(model.nets)} (seed {model.config.seed + report.member})")
            print(f"{'Epoch':>5}  {'Train Loss':>10}  {'Val Loss':>10}  {'Best Val':>10}  {'Time':>6}  Status")
        status = "✓ Best" if report.improved else ""
        print(f"{report.epoch:>5}  {report.train_loss:>10.4f}  {report.val_loss:>10.4f}  "
              f"{report.best_val_loss:>10.4f}  {report.seconds:>5.1f}s  {status}", flush=True)


def print_line(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:

    from stef_ray.bundle import save_bundle
    from stef_ray.cli.options import load_data
    from stef_ray.models.hybrid import HybridModel

    if args.fleet:
        return run_fleet(args)
    if args.register:
        from stef_ray.exceptions import ConfigError

        raise ConfigError("--register goes with --fleet; one series is registered by `stef-ray tune`")
    config = train_config_from_args(args)
    if args.device:
        config.model.residual.device = args.device
    if args.epochs:
        config.model.residual.max_epochs = args.epochs
    data = load_data(config.data, args.end)
    for line in data.report.lines():
        print(f"data: {line}")
    model = HybridModel(config.model, data.exog).fit(data, callbacks=[EpochTable()], on_stage=print_line)
    path = save_bundle(model, args.out, config.data)
    print(f"✓ bundle written to {path}")
    return 0


def run_fleet(args: argparse.Namespace) -> int:
    from stef_ray.cli.fleet_output import fleet_from_args, print_report, report_line
    from stef_ray.integrations.fleet_ray import run_fleet_train

    fleet = fleet_from_args(args)
    if args.device:
        fleet.model.residual.device = args.device
    end = local_date(args.end, None) if args.end else None  # each series' own zone: see train_series
    print(f"training {len(fleet.series)} series on Ray, {fleet.resources.cpus_per_series:g} CPU each", flush=True)
    run = run_fleet_train(fleet, args.out, end, args.address, report_line("validation MAPE"), register=args.register)
    for outcome in run.outcomes:
        if outcome.registered:
            print(f"  registered {outcome.series_id}: {outcome.registered}")
    return print_report(run, args.out)
