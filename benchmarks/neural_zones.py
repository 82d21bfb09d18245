"""Does the neural residual earn its place on the eight PJM zones? Issue 21's zone table: the zones' 2017
day-ahead backtest with 28-day refits, run twice as a user runs it on Ray, once with the neural residual
(``model.residual.enabled: true``) and once without, paired over the days:

    stef-ray backtest --fleet <configs/pjm_fleet.yaml without PJME, residual on|off> \
        --start 2017-01-01 --days 364 --refit-every 28 --models hybrid

    python benchmarks/neural_zones.py               # needs ../shared/data (about an hour on 2 cores)
    python benchmarks/neural_zones.py --days 28     # a quick look

The model is configs/pjm_fleet.yaml's, chosen on PJM East 2016; the neural residual's settings are the
shipped defaults (as benchmarks/neural_residual.py runs PJM East). PJM East itself is in
benchmarks/results/neural_residual.md. Writes benchmarks/results/neural_zones.md (per zone: MAPE and coverage
with and without, the paired difference, in how many refits the net was in the forecast),
neural_zones.csv (per zone and day) and neural_zones_refits.csv (each refit's gate, per zone).
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

sys.path.insert(0, str(Path(__file__).parent))
from pjm_zones import daily_mape, fleet_file

RESULTS = Path(__file__).parent / "results"


def zones_file(folder: Path, neural: bool) -> Path:
    """pjm_fleet.yaml's zones (PJM East left out) with the neural residual on or off."""
    fleet = yaml.safe_load(fleet_file(folder).read_text())
    fleet["series"].pop("PJME")
    fleet["model"].setdefault("residual", {})["enabled"] = neural
    path = folder / f"zones_{'with' if neural else 'without'}.yaml"
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    return path


def backtest(folder: Path, neural: bool, args) -> tuple[Path, float]:
    out = folder / ("with" if neural else "without")
    command = [str(Path(sys.executable).parent / "stef-ray"), "backtest", "--fleet", str(zones_file(folder, neural)),
               "--start", args.start, "--days", str(args.days), "--refit-every", str(args.refit_every),
               "--models", "hybrid", "--out", str(out)]
    print(" ".join(command[1:]), flush=True)
    started = time.perf_counter()
    code = subprocess.run(command, env=os.environ | {"RAY_AUTH_MODE": "disabled"}).returncode
    if code != 0:
        sys.exit(f"the backtest {'with' if neural else 'without'} the neural residual failed (exit {code})")
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default="2017-01-01")
    parser.add_argument("--days", type=int, default=364)
    parser.add_argument("--refit-every", type=int, default=28)
    parser.add_argument("--tag", default="", help="suffix of the results files (e.g. _quick)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        without, wall_without = backtest(folder, False, args)
        with_net, wall_with = backtest(folder, True, args)
        rows, days, gates = [], [], []
        for series_id in sorted(p.name for p in with_net.iterdir() if p.is_dir()):
            a = daily_mape(pd.read_csv(with_net / series_id / "forecasts.csv"))["hybrid"]
            b = daily_mape(pd.read_csv(without / series_id / "forecasts.csv"))["hybrid"]
            paired = pd.DataFrame({"with": a, "without": b}).dropna()
            diff = paired["with"] - paired["without"]
            cover = {label: pd.read_csv(where / series_id / "overall_metrics.csv").set_index("model")
                     .loc["hybrid", "coverage_p10_p90"] for label, where in (("with", with_net), ("without", without))}
            refits = pd.read_csv(with_net / series_id / "refits.csv")
            gates.append(refits.assign(series_id=series_id))
            rows.append({"series_id": series_id, "days": len(paired), "mape_without": paired["without"].mean(),
                         "mape_with": paired["with"].mean(), "paired_diff": diff.mean(),
                         "paired_se": diff.std(ddof=1) / np.sqrt(len(diff)),
                         "relative_%": diff.mean() / paired["without"].mean() * 100,
                         "coverage_without": cover["without"], "coverage_with": cover["with"],
                         "kept": int(refits["neural_kept"].sum()), "refits": len(refits)})
            days.append(paired.assign(series_id=series_id).reset_index())
    table = pd.DataFrame(rows).sort_values("series_id")
    pd.concat(days).to_csv(RESULTS / f"neural_zones{args.tag}.csv", index=False, float_format="%.4f")
    pd.concat(gates).to_csv(RESULTS / f"neural_zones{args.tag}_refits.csv", index=False, float_format="%.5f")
    lines = [f"# The neural residual on the eight PJM zones ({date.today().isoformat()})", "",
             f"`python benchmarks/neural_zones.py{' --days ' + str(args.days) if args.days != 364 else ''}`: "
             f"day-ahead forecasts from each 00:00 from {args.start} for {args.days} days, refitted every "
             f"{args.refit_every} days, configs/pjm_fleet.yaml's model with the neural residual on and off "
             f"(`stef-ray backtest --fleet`, one Ray task per zone on {os.cpu_count()} CPUs). Wall time "
             f"{wall_without / 60:.1f} minutes without, {wall_with / 60:.1f} with.", "",
             "| zone | MAPE without % | MAPE with % | with − without, paired over days | relative % | "
             "coverage without % | coverage with % | net in the forecast |", "|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['series_id']} | {r['mape_without']:.3f} | {r['mape_with']:.3f} | "
                     f"{r['paired_diff']:+.3f} ± {r['paired_se']:.3f} | {r['relative_%']:+.2f} | "
                     f"{r['coverage_without']:.1f} | {r['coverage_with']:.1f} | {r['kept']}/{r['refits']} refits |")
    if len(table):
        lines.append(f"| **mean** | **{table['mape_without'].mean():.3f}** | **{table['mape_with'].mean():.3f}** | "
                     f"{table['paired_diff'].mean():+.3f} | {table['relative_%'].mean():+.2f} | "
                     f"{table['coverage_without'].mean():.1f} | {table['coverage_with'].mean():.1f} | "
                     f"{table['kept'].sum()}/{table['refits'].sum()} refits |")
    lines += ["", "Paired: the mean over days of the daily MAPE with the net minus without it, ± its standard "
              "error (negative: the net helps). The net is in a refit's forecast when its walked-forward "
              "validation gain passes the gate (`residual.gate_z` standard errors)."]
    text = "\n".join(lines)
    (RESULTS / f"neural_zones{args.tag}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
