"""The nine PJM series (PJM East and eight utility zones) backtested together on Ray, each against the peers:
the 2017 day-ahead backtest with 28-day refits, as a user runs it:

    stef-ray backtest --fleet <configs/pjm_fleet.yaml, its paths pointed at ../shared/data> \
        --start 2017-01-01 --days 364 --refit-every 28 \
        --models hybrid,trend_fourier,seasonal_naive_week,seasonal_naive_day,lightgbm,mstl

    python benchmarks/pjm_zones.py                 # needs ../shared/data (about an hour on 2 cores)
    python benchmarks/pjm_zones.py --days 28       # a quick look

One Ray task per series (``resources.cpus_per_series: 1``), as many at once as the machine has CPUs. The
model is configs/pjm_fleet.yaml's, chosen on PJM East 2016 (the zones' own 2017 was not looked at first).
Writes benchmarks/results/pjm_zones.md (a dated table: per zone, each model's MAPE, the hybrid's coverage,
and the hybrid against the best other model, paired over the days) and pjm_zones.csv (per zone and model).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SHARED = ROOT.parent / "shared" / "data"
MODELS = "hybrid,trend_fourier,seasonal_naive_week,seasonal_naive_day,lightgbm,mstl"


def fleet_file(folder: Path) -> Path:
    """configs/pjm_fleet.yaml with each series' path pointed at the shared data."""
    fleet = yaml.safe_load((ROOT / "configs" / "pjm_fleet.yaml").read_text())
    for series_id, options in fleet["series"].items():
        where = SHARED / ("pjme" if series_id == "PJME" else "pjm_regions") / Path(options["path"]).name
        if not where.is_file():
            sys.exit(f"{where} not found: this benchmark reads the PJM series from ../shared/data")
        options["path"] = str(where)
    path = folder / "pjm_fleet.yaml"
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    return path


def daily_mape(forecasts: pd.DataFrame) -> pd.DataFrame:
    """MAPE per origin (day) and model: one column per model."""
    forecasts = forecasts.assign(ape=(forecasts["forecast"] - forecasts["actual"]).abs() / forecasts["actual"] * 100)
    return forecasts.groupby(["origin", "model"])["ape"].mean().unstack("model")


def paired(daily: pd.DataFrame, a: str, b: str) -> tuple[float, float]:
    """Mean and standard error of the per-day MAPE difference a - b."""
    diff = (daily[a] - daily[b]).dropna()
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default="2017-01-01")
    parser.add_argument("--days", type=int, default=364)
    parser.add_argument("--refit-every", type=int, default=28)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--tag", default="", help="suffix of the results files (e.g. _quick)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out = folder / "out"
        command = [str(Path(sys.executable).parent / "stef-ray"), "backtest", "--fleet", str(fleet_file(folder)),
                   "--start", args.start, "--days", str(args.days), "--refit-every", str(args.refit_every),
                   "--models", args.models, "--out", str(out)]
        print(" ".join(command[1:]), flush=True)
        started = time.perf_counter()
        # The run's own output goes straight through: a line per series as it finishes.
        code = subprocess.run(command, env=os.environ | {"RAY_AUTH_MODE": "disabled"}).returncode
        wall = time.perf_counter() - started
        summary = pd.read_csv(out / "summary.csv")
        rows, lines = [], []
        for _, row in summary.iterrows():
            if row["status"] != "ok":
                lines.append(f"| {row['series_id']} | failed: {row['error']} |")
                continue
            forecasts = pd.read_csv(out / row["series_id"] / "forecasts.csv")
            daily = daily_mape(forecasts)
            overall = pd.read_csv(out / row["series_id"] / "overall_metrics.csv").set_index("model")
            for model in overall.index:
                rows.append({"series_id": row["series_id"], "model": model, "MAPE": overall.loc[model, "MAPE"],
                             "coverage_p10_p90": overall.loc[model].get("coverage_p10_p90", np.nan),
                             "days": row["days"], "seconds": row["seconds"], "outliers": row["outliers"]})
            others = [m for m in overall.index if m != "hybrid"]
            best = min(others, key=lambda m: overall.loc[m, "MAPE"])
            gain, se = paired(daily, "hybrid", best)
            lines.append(
                f"| {row['series_id']} | " + " | ".join(f"{overall.loc[m, 'MAPE']:.3f}" for m in overall.index)
                + f" | {overall.loc['hybrid', 'coverage_p10_p90']:.1f} | {best} | {gain:+.3f} ± {se:.3f} "
                f"| {int(row['outliers'])} | {row['seconds']:.0f} |")
    table = pd.DataFrame(rows)
    suffix = args.tag
    table.to_csv(RESULTS / f"pjm_zones{suffix}.csv", index=False, float_format="%.4f")
    models = list(table["model"].drop_duplicates()) if len(table) else args.models.split(",")
    means = table.groupby("model")["MAPE"].mean() if len(table) else pd.Series(dtype=float)
    header = ("| series | " + " | ".join(f"{m} MAPE %" for m in models)
              + " | hybrid P10–P90 coverage % | best other | hybrid − best other, paired over days | outlier hours "
              "| seconds |")
    mean_line = ("| **mean** | " + " | ".join(f"**{means[m]:.3f}**" for m in models) + " | "
                 + (f"{table.loc[table['model'] == 'hybrid', 'coverage_p10_p90'].mean():.1f}" if len(table) else "")
                 + " | | | | |")
    text = "\n".join([
        f"# The nine PJM series against the peers ({date.today().isoformat()})",
        "",
        f"`python benchmarks/pjm_zones.py{' --days ' + str(args.days) if args.days != 364 else ''}`: "
        f"`stef-ray backtest --fleet` (configs/pjm_fleet.yaml's model), day-ahead forecasts from each "
        f"00:00 from {args.start} for {args.days} days, refitted every {args.refit_every} days on the data "
        f"before, one Ray task per series on {os.cpu_count()} CPUs. Wall time {wall / 60:.1f} minutes "
        f"(exit status {code}).",
        "",
        header,
        "|" + "---|" * (len(models) + 6),
        *lines,
        mean_line,
        "",
        "The paired difference is the mean over days of the hybrid's daily MAPE minus the best other model's, "
        "± its standard error (negative: the hybrid is better). Seconds: each series' task, on one CPU.",
    ])
    (RESULTS / f"pjm_zones{suffix}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
