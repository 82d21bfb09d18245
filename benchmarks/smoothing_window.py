"""What the bounded smoothing costs: the smoothed temperature reading its last `smoothing_window_hours` only
(so that a forecast from a request-sized frame equals the backtest's) against the unbounded smoothing of
format 7 bundles, each forecasting from the rows a request carries.

    python benchmarks/smoothing_window.py --only vic-elec-dev      # the 90 days before the test period (choice)
    python benchmarks/smoothing_window.py --only vic-elec          # the test period, run once

Daily 00:00 forecasts, refit every 7 days on the data before, configs/vic_elec.yaml with the shipped
residual (no neural residual). Since format 8 every forecast, the backtest's included, is made from the
rows a request carries (``HybridModel.predict_components``), so the unbounded smoothing here starts at the
first of those rows, as the HTTP endpoint's did: these are the numbers users got. Appends a dated table to
benchmarks/results/smoothing_window.md and writes the per-day CSV.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import date

import numpy as np
import pandas as pd
from neural_residual import RESULTS, backtest, specs

from stef_ray.config import TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.data import load_hourly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", required=True, choices=["vic-elec-dev", "vic-elec"])
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 168], help="smoothing_window_hours to compare")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = specs(None)[args.only]
    config = load_config(TrainConfig, spec["config"])
    data = load_hourly(config.data, spec["path"])
    scores, rows = {}, []
    for window in args.windows:
        model_config = config.model.model_copy(deep=True)
        model_config.seasonality.smoothing_window_hours = window
        started = time.perf_counter()
        scores[window], _ = backtest(data, model_config, spec["start"], spec["days"], spec["refit"])
        seconds = time.perf_counter() - started
        rows.append({"smoothing_window_hours": window, "days": len(scores[window]),
                     "MAPE %": scores[window]["mape"].mean(), "P10-P90 coverage %": scores[window]["covered"].mean(),
                     "seconds": seconds})
        print(rows[-1], flush=True)
    base = args.windows[0]
    paired = pd.concat({w: s.set_index("origin")["mape"] for w, s in scores.items()}, axis=1).dropna()
    paired.to_csv(RESULTS / f"smoothing_window_{args.only}.csv")
    lines = [f"\n### {args.only} (measured {date.today()})\n",
             "| smoothing_window_hours | days | MAPE % | P10-P90 coverage % | paired vs " + str(base) + " | seconds |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        diff = paired[row["smoothing_window_hours"]] - paired[base]
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        lines.append(f"| {row['smoothing_window_hours']} | {row['days']} | {row['MAPE %']:.3f} | "
                     f"{row['P10-P90 coverage %']:.1f} | {diff.mean():+.3f} ± {se:.3f} | {row['seconds']:.0f} |")
    with open(RESULTS / "smoothing_window.md", "a") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
