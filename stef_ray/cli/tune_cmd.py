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
    from stef_ray.config import load_config
    from stef_ray.exceptions import ConfigError
    from stef_ray.integrations.tune import run_search
    from stef_ray.integrations.tune_config import TuneConfig

    config = load_config(TuneConfig, args.config)
    config = config.model_copy(update={"data": data_config_with_overrides(config.data, args)})
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError("--num-samples must be at least 1")
    if args.resume and args.num_samples is not None:
        raise ConfigError("--num-samples cannot change a resumed search; drop it or start a new search")
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
    from stef_ray.integrations.registry import log_search

    registered = log_search(outcome, config, data)
    decision = registered.decision
    print(f"\nchampion gate: {decision.line(config.mlflow.registered_model, registered.version)}")
    print(f"mlflow: run {registered.run_id} in experiment '{config.mlflow.experiment}' at {registered.tracking_uri}")
    if registered.tracking_uri.startswith("sqlite:"):
        print(f"  browse: mlflow ui --backend-store-uri {registered.tracking_uri}")
    print(f"  forecast with it: stef-ray forecast --model models:/{config.mlflow.registered_model}@{decision.alias}")
    return 0
