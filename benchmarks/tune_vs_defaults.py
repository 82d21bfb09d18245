"""Does the search pay? `stef-ray tune --config tune_configs/quick.yaml` on PJM East before 2017 against
`stef-ray train` with the shipped defaults, both judged on 2017 (refit every 28 days, daily 00:00 forecasts).

    python benchmarks/tune_vs_defaults.py                       # quick.yaml, PJM East (../shared)
    python benchmarks/tune_vs_defaults.py --config tune_configs/prod.yaml   # on a machine with GPUs

1. The search runs on the data before 2017-01-01 with the data options of configs/pjme.yaml (the model
   section of the tune config is the shipped defaults; what varies is its search.space), is logged to a
   throw-away MLflow store and registered (the champion gate as `stef-ray tune` runs it).
2. The registered model's configuration and the shipped defaults (`ModelConfig()`, what `stef-ray train`
   fits without --config) are each backtested on 2017 with a refit every 28 days on the data before.
Writes benchmarks/results/tune_vs_defaults.md (with the date) and a per-day CSV.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from stef_ray.config import ModelConfig, TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.data import load_hourly
from stef_ray.evaluation.backtest import run_backtest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
PJME = ROOT.parent / "shared" / "data" / "pjme" / "PJME_hourly.csv"


def daily(result) -> pd.Series:
    frame = result.forecasts
    frame = frame[frame["model"] == "hybrid"]
    ape = (frame["forecast"] / frame["actual"] - 1).abs() * 100
    return ape.groupby(frame["origin"]).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "tune_configs" / "quick.yaml"))
    parser.add_argument("--test-start", default="2017-01-01")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--refit", type=int, default=28)
    args = parser.parse_args()
    os.environ.setdefault("STEF_RAY_DASHBOARD", "0")
    from stef_ray.integrations.registry_runs import log_search
    from stef_ray.integrations.tune import run_search
    from stef_ray.integrations.tune_config import TuneConfig

    data_config = load_config(TrainConfig, ROOT / "configs" / "pjme.yaml").data
    data = load_hourly(data_config, PJME)
    start = pd.Timestamp(args.test_start).tz_localize(data.frame.index.tz)
    config = load_config(TuneConfig, args.config)
    with tempfile.TemporaryDirectory() as folder:
        config = config.model_copy(update={
            "data": data_config, "storage_path": str(Path(folder) / "ray_results"),
            "bundle_out": str(Path(folder) / "bundle"),
            "mlflow": config.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{folder}/mlflow.db"}),
        })
        started = time.perf_counter()
        outcome = run_search(config, data.window(end=start), name="tune_vs_defaults")
        search_seconds = time.perf_counter() - started
        registered = log_search(outcome, config, data.window(end=start))
    print(f"search: {len(outcome.trials)} trials in {search_seconds:.0f} s; chosen {outcome.best_trial_id} "
          f"{outcome.top(1)[0].hyperparameters}; registered version {registered.version} "
          f"({registered.decision.alias})", flush=True)
    rows, days = [], {}
    for label, model_config in (("tuned (registered)", outcome.best_config), ("shipped defaults", ModelConfig())):
        began = time.perf_counter()
        result = run_backtest(data, model_config, start, args.days, args.refit, ["hybrid"])
        seconds = time.perf_counter() - began
        days[label] = daily(result)
        overall = result.overall.iloc[0]
        rows.append({"model": label, "MAPE": overall["MAPE"], "coverage_p10_p90": overall.get("coverage_p10_p90"),
                     "backtest_seconds": seconds})
        print(f"{label}: MAPE {overall['MAPE']:.3f} % ({seconds:.0f} s)", flush=True)
    paired = pd.concat(days, axis=1).dropna()
    diff = paired.iloc[:, 0] - paired.iloc[:, 1]
    RESULTS.mkdir(exist_ok=True)
    paired.to_csv(RESULTS / "tune_vs_defaults_daily.csv")
    lines = [
        f"# `stef-ray tune --config {Path(args.config).relative_to(ROOT)}` on PJM East before {args.test_start} "
        f"against the shipped defaults, both backtested from {args.test_start}",
        "",
        f"Measured {date.today()} with `python benchmarks/tune_vs_defaults.py`, {os.cpu_count()} CPUs, no GPU. The "
        f"search: {len(outcome.trials)} trials, {outcome.trial_windows} windows evaluated, {search_seconds:.0f} s; "
        f"chosen trial {outcome.best_trial_id}: `{outcome.top(1)[0].hyperparameters}`; its rolling-origin MAPE "
        f"{outcome.top(1)[0].mape:.3f} %, holdout MAPE {outcome.holdout_metrics['MAPE']:.3f} %; registered as "
        f"version {registered.version} ({registered.decision.alias}). Backtest: {args.days} daily 00:00 forecasts, "
        f"refit every {args.refit} days on the data before.",
        "",
        "| model | MAPE % | P10-P90 coverage % | backtest seconds |",
        "|---|---:|---:|---:|",
        *[f"| {r['model']} | {r['MAPE']:.3f} | {r['coverage_p10_p90']:.1f} | {r['backtest_seconds']:.0f} |" for r in rows],
        "",
        f"Paired over {len(diff)} days, tuned minus defaults: {diff.mean():+.3f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.3f} "
        f"MAPE points ({diff.mean() / paired.iloc[:, 1].mean() * 100:+.1f} %).",
    ]
    (RESULTS / "tune_vs_defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
