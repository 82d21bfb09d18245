"""`stef-ray tune`: the residual-LSTM search on Ray Tune, logged to MLflow, best model registered and gated."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

HELP = "search LSTM hyperparameters on Ray Tune (ASHA), register the best model in MLflow"

EPILOG = """\
examples:
  stef-ray tune --config tune_configs/smoke.yaml --data data/vic_elec.csv
  stef-ray tune --config tune_configs/prod.yaml --data data/vic_elec.csv --resume   # continue a stopped search
  ray job submit --working-dir . -- stef-ray tune --config tune_configs/prod.yaml --data data/vic_elec.csv
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help=HELP, description=HELP + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="tune YAML (see tune_configs/)")
    parser.add_argument("--data", type=Path, help="CSV/Parquet load data (default: data.path in the config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest interrupted search of this config (same storage_path)")
    parser.add_argument("--num-samples", type=int, metavar="N", help="trials to run (overrides search.num_samples)")
    parser.add_argument("--address", help="Ray cluster address, e.g. 'auto' (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--out", type=Path, help="bundle folder for the best model (default: bundle_out)")
    parser.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging and registration")
    parser.set_defaults(handler=run)


def format_top_table(outcome, n: int = 5) -> str:
    """Markdown-ish table of the best ``n`` trials."""
    top = outcome.top(n)
    names = sorted({k for t in top for k in t.hyperparameters})
    header = ["trial", *names, "best val loss", "epochs", "stopped early"]
    rows = []
    for t in top:
        values = [_short(t.hyperparameters.get(k)) for k in names]
        stopped = f"yes ({t.stop_reason})" if t.stopped_early else "no"
        loss = f"{t.best_val_loss:.4f}" if math.isfinite(t.best_val_loss) else "failed"
        rows.append([t.trial_id + (" *" if t.trial_id == outcome.best_trial_id else ""), *values, loss,
                     str(t.epochs_run), stopped])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    from stef_ray.config import load_config
    from stef_ray.data import load_hourly
    from stef_ray.exceptions import ConfigError
    from stef_ray.integrations.tune import run_search
    from stef_ray.integrations.tune_config import TuneConfig

    config = load_config(TuneConfig, args.config)
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError("--num-samples must be at least 1")
    if args.resume and args.num_samples is not None:
        raise ConfigError("--num-samples cannot change a resumed search; drop it or start a new search")
    data = load_hourly(config.data, args.data)
    for line in data.report.lines():
        print(f"data: {line}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    outcome = run_search(
        config, data, name=f"tune_{args.config.stem}", resume=args.resume, num_samples=args.num_samples,
        address=args.address, bundle_out=args.out,
    )
    for note in outcome.notes:
        print(f"note: {note}")
    print(f"\n{len(outcome.trials)} trials, {outcome.trial_epochs} trial-epochs in {outcome.wall_seconds:.0f} s; "
          f"top {min(5, len(outcome.trials))} by validation loss (* = chosen):\n")
    print(format_top_table(outcome))
    metrics = outcome.holdout_metrics
    print(f"\nholdout {outcome.data_window['holdout_start']} .. {outcome.data_window['data_end']} "
          f"({int(metrics['origins'])} day-ahead forecasts): MAPE {metrics['MAPE']:.3f} %, "
          f"MAE {metrics['MAE']:.1f} MW, RMSE {metrics['RMSE']:.1f} MW")
    print(f"bundle: {outcome.bundle_path} (best checkpoint of trial {outcome.best_trial_id})")
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
