"""`stef-ray tune`: a search over whole hybrid configurations on Ray Tune (ASHA), each trial scored by a
rolling-origin backtest; the best is refitted, registered in MLflow and gated against the champion."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from stef_ray.cli.options import DATA_HELP, add_data_arguments

HELP = "search hybrid configurations on Ray Tune (ASHA), register the best model in MLflow"

EPILOG = """\
Each trial is one configuration of the whole hybrid (the keys under search.space: Fourier orders, the ridges'
and trees' settings, the neural residual's architecture or none, ...), scored by the backtest's own metric:
the mean day-ahead MAPE over objective.windows refits spread over the year before the holdout. ASHA stops
the weak ones after each window.

examples:
  stef-ray tune --config tune_configs/smoke.yaml --data data/vic_elec.csv
  stef-ray tune --config tune_configs/quick.yaml --data PJME_hourly.csv --timestamp-col Datetime \\
      --target-col PJME_MW --timestamp-format '%d-%m-%Y %H:%M' --timezone US/Eastern --hour-ending --sort
  stef-ray tune --config tune_configs/prod.yaml --data data/vic_elec.csv --resume   # continue a stopped search
  ray job submit --working-dir . -- stef-ray tune --config tune_configs/prod.yaml --data data/vic_elec.csv

Many series (--fleet FILE.yaml, as train and backtest take it): one search per series, the series with the
most data first, each with the tune config's space, objective and base model on the series' own data (the
fleet file's model section is not read); each search runs its trials in parallel on Ray as above. Each
series' best model goes to --out/<series_id> and is registered under the fleet file's name for it
(registry.model_prefix: power-demand-<series_id>, as train --fleet --register and the fleet Serve app
name it) with its own champion gate; the rest of the mlflow section is the tune config's. A series whose data is wrong or whose every trial failed is reported and the
others go on; summary.csv in --out (default models/tuned-fleet); exit status 1 when a series failed.
  stef-ray tune --config tune_configs/quick.yaml --fleet configs/pjm_fleet.yaml --end 2017-01-01

""" + DATA_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help=HELP, description=HELP + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="tune YAML (see tune_configs/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest interrupted search of this config (same storage_path)")
    parser.add_argument("--num-samples", type=int, metavar="N", help="trials to run (overrides search.num_samples)")
    parser.add_argument("--address", help="Ray cluster address, e.g. 'auto' (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--out", type=Path, help="bundle folder for the best model (default: bundle_out)")
    parser.add_argument("--end", metavar="DATE", help="search and train only on data before this date (local time); with data.store, the store's window ends there")
    parser.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging and registration")
    parser.add_argument("--fleet", metavar="YAML", help="search each series of a fleet file in turn (see below); "
                        "--data and the data options do not apply")
    add_data_arguments(parser)
    parser.set_defaults(handler=run)


def format_top_table(outcome, n: int = 5) -> str:
    """Plain-text table of the best ``n`` trials."""
    top = outcome.top(n)
    names = sorted({k for t in top for k in t.hyperparameters})
    header = ["trial", *names, "MAPE %", "windows", "stopped"]
    rows = []
    for t in top:
        values = [_short(t.hyperparameters.get(k)) for k in names]
        mape = f"{t.mape:.3f}" if math.isfinite(t.mape) else "failed"
        stopped = "-" if t.completed else t.stop_reason
        rows.append([t.trial_id + (" *" if t.trial_id == outcome.best_trial_id else ""), *values, mape,
                     str(t.windows), stopped])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def progress_callback(total_trials: int, windows: int):
    """A Ray Tune callback that prints one line per evaluated window and per finished trial (a search on a
    small machine runs for many minutes; without it nothing shows until the end)."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.finished = 0

        def _say(self, text: str) -> None:
            print(f"[{time.perf_counter() - self.started:6.0f} s] {text}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self._say(f"trial {trial.trial_id}: window {result.get('windows')}/{windows}, "
                      f"MAPE so far {result.get('mape', float('nan')):.3f} %")

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.finished += 1
            done = (trial.last_result or {}).get("windows", 0)
            how = "all windows" if done >= windows else f"stopped by ASHA after {done}"
            self._say(f"trial {trial.trial_id} done ({how}); {self.finished}/{total_trials} trials finished")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.finished += 1
            self._say(f"trial {trial.trial_id} failed; {self.finished}/{total_trials} trials finished")

    return Progress()


def run(args: argparse.Namespace) -> int:
    from stef_ray.cli.options import data_config_with_overrides, load_data
    from stef_ray.config_loading import load_config
    from stef_ray.exceptions import ConfigError
    from stef_ray.integrations.tune import run_search
    from stef_ray.integrations.tune_config import TuneConfig

    config = load_config(TuneConfig, args.config)
    config = config.model_copy(update={"data": data_config_with_overrides(config.data, args)})
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError("--num-samples must be at least 1")
    if args.resume and args.num_samples is not None:
        raise ConfigError("--num-samples cannot change a resumed search; drop it or start a new search")
    if args.fleet:
        return run_fleet(args, config)
    data = load_data(config.data, args.end)
    for line in data.report.lines():
        print(f"data: {line}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    outcome = run_search(
        config, data, name=f"tune_{args.config.stem}", resume=args.resume, num_samples=args.num_samples,
        address=args.address, bundle_out=args.out,
        callbacks=[progress_callback(args.num_samples or config.search.num_samples, config.objective.windows)],
    )
    for note in outcome.notes:
        print(f"note: {note}")
    print(f"\n{len(outcome.trials)} trials, {outcome.trial_windows} windows evaluated in {outcome.wall_seconds:.0f} s; "
          f"top {min(5, len(outcome.trials))} by rolling-origin MAPE (* = chosen):\n")
    print(format_top_table(outcome))
    print(f"\nresidual models in the chosen hybrid: {outcome.model.residual_summary()}")
    metrics = outcome.holdout_metrics
    print(f"\nholdout {outcome.data_window['holdout_start']} .. {outcome.data_window['data_end']} "
          f"({int(metrics['origins'])} day-ahead forecasts): MAPE {metrics['MAPE']:.3f} %, "
          f"MAE {metrics['MAE']:.1f} MW, RMSE {metrics['RMSE']:.1f} MW")
    print(f"bundle: {outcome.bundle_path} (trial {outcome.best_trial_id}'s configuration, refitted on all the data)")
    print(f"ray results: {outcome.experiment_path}")
    if outcome.dashboard_url:
        print(f"ray dashboard: {outcome.dashboard_url}")
    if args.no_mlflow or not config.mlflow.enabled:
        return 0
    from stef_ray.integrations.registry_runs import log_search

    registered = log_search(outcome, config, data)
    decision = registered.decision
    print(f"\nchampion gate: {decision.line(config.mlflow.registered_model, registered.version)}")
    print(f"mlflow: run {registered.run_id} in experiment '{config.mlflow.experiment}' at {registered.tracking_uri}")
    if registered.tracking_uri.startswith("sqlite:"):
        print(f"  browse: mlflow ui --backend-store-uri {registered.tracking_uri}")
    print(f"  forecast with it: stef-ray forecast --model models:/{config.mlflow.registered_model}@{decision.alias}")
    return 0


def run_fleet(args: argparse.Namespace, config) -> int:
    """One search per series of the fleet, one after another (each search's trials in parallel); a series that
    fails is reported and the others go on."""
    import pandas as pd

    from stef_ray.cli.fleet_output import print_report
    from stef_ray.exceptions import ConfigError, StefRayError
    from stef_ray.fleet import SeriesOutcome, load_fleet, series_data, split_long_format
    from stef_ray.integrations.fleet_ray import FleetRun, largest_first
    from stef_ray.integrations.tune import SearchInterruptedError, run_search

    if args.data:
        raise ConfigError("--fleet names each series' data; leave out --data")
    if args.resume:
        raise ConfigError("--resume continues one search; run it without --fleet, with that series' --data")
    fleet = load_fleet(args.fleet)
    tables = split_long_format(fleet)
    order = largest_first(fleet, tables)
    out = Path(args.out or "models/tuned-fleet")
    end = pd.Timestamp(args.end) if args.end else None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    print(f"searching {len(order)} series one after another, {args.num_samples or config.search.num_samples} trials "
          f"each ({config.resources.cpus_per_trial:g} CPU per trial, in parallel)", flush=True)
    started, outcomes = time.perf_counter(), []
    for number, series_id in enumerate(order, 1):
        began = time.perf_counter()
        series_config = config.model_copy(update={
            "data": fleet.data_config(series_id),
            # The name train --fleet --register and the fleet Serve app use: one champion per series.
            "mlflow": config.mlflow.model_copy(update={"registered_model": fleet.registry.registered_name(series_id)}),
        })
        try:
            data = series_data(series_id, series_config.data, tables.get(series_id), end)
            found = run_search(series_config, data, name=f"tune_{args.config.stem}_{series_id}",
                               num_samples=args.num_samples, address=args.address, bundle_out=out / series_id,
                               callbacks=[progress_callback(args.num_samples or config.search.num_samples,
                                                            config.objective.windows)])
            outcome = SeriesOutcome(
                series_id, "ok", next(t.mape for t in found.trials if t.trial_id == found.best_trial_id),
                bundle=str(found.bundle_path), outliers=len(data.report.outliers), data_report=data.report.lines(),
                holdout_mape=float(found.holdout_metrics["MAPE"]), holdout_from=found.holdout_start.isoformat())
            if not (args.no_mlflow or not config.mlflow.enabled):
                from stef_ray.integrations.registry_runs import log_search

                registered = log_search(found, series_config, data)
                outcome.registered = registered.decision.line(series_config.mlflow.registered_model, registered.version)
        except SearchInterruptedError:
            raise  # Ctrl-C stops the fleet, not only this series
        except StefRayError as err:
            outcome = SeriesOutcome(series_id, "failed", error=str(err).strip().splitlines()[-1][:300])
        outcome.seconds = time.perf_counter() - began
        outcomes.append(outcome)
        what = (f"search MAPE {outcome.mape:.3f} %, holdout {outcome.holdout_mape:.3f} % -> {outcome.bundle}"
                + (f"; {outcome.registered}" if outcome.registered else "")
                if outcome.status == "ok" else f"failed: {outcome.error}")
        print(f"  [{number}/{len(order)}] {series_id}: {what} ({outcome.seconds:.0f} s)", flush=True)
    return print_report(FleetRun(outcomes, time.perf_counter() - started), str(out))
