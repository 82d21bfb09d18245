"""Day-ahead accuracy on real data: the hybrid against its peers, and an ablation of its parts.

    python benchmarks/accuracy.py                 # vic-elec, taylor (both built in), PJM East (if ../shared is there)
    python benchmarks/accuracy.py --only vic-elec
    python benchmarks/accuracy.py --only pjm-east-2016   # the development year (not in the default run)

Protocols (forecasts from 00:00 local, observed weather used as known future exogenous):
  vic-elec   last 90 days of 2014 (from 2014-10-03), refit every 7 days
  taylor     England & Wales 2000, 12 weeks: the last 28 days (from 2000-07-31), refit every 7 days, on the
             model defaults; a short series, where history is scarce
  PJM East   2017 (365 days), refit every 28 days, NERC holidays (the six US ones) as the calendar input
  PJM East 2016, the same protocol a year earlier: where settings are chosen, so that 2017 stays a test
Writes benchmarks/results/accuracy.md (and a CSV per dataset) with the date it was measured.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd

from stef_ray.config import TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.data import load_hourly
from stef_ray.data.builtin import write_dataset
from stef_ray.evaluation.backtest import run_backtest
from stef_ray.evaluation.peers import available_peers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
PJME = ROOT.parent / "shared" / "data" / "pjme" / "PJME_hourly.csv"
PEERS = ["ridge_residual", "lightgbm", "mstl", "seasonal_naive_week", "seasonal_naive_day"]


def datasets(development: bool = False) -> dict[str, dict]:
    vic = Path(tempfile.gettempdir()) / "stef_ray_vic_elec.csv"
    if not vic.exists():
        write_dataset("vic-elec", vic)
    taylor = Path(tempfile.gettempdir()) / "stef_ray_taylor_hourly.csv"
    if not taylor.exists():
        write_dataset("taylor", taylor)
    out = {"vic-elec": {"path": vic, "config": ROOT / "configs" / "vic_elec.yaml",
                        "start": "2014-10-03", "days": 90, "refit": 7},
           "taylor": {"path": taylor, "config": ROOT / "configs" / "taylor.yaml",
                      "start": "2000-07-31", "days": 28, "refit": 7}}
    if development:
        # 13 origins before the test's, the first with the 43 days of history the hybrid needs.
        out["taylor-dev"] = out["taylor"] | {"start": "2000-07-18", "days": 13}
    if PJME.exists():
        out["pjm-east"] = {"path": PJME, "config": ROOT / "configs" / "pjme.yaml",
                           "start": "2017-01-01", "days": 365, "refit": 28}
        if development:
            out["pjm-east-2016"] = out["pjm-east"] | {"start": "2016-01-01"}
    else:
        print(f"PJM East skipped: {PJME} not found")
    return out


def ablations(config: TrainConfig) -> dict[str, object]:
    """Model configs from the simplest to the final hybrid."""
    model = config.model
    no_exog = model.model_copy(deep=True)
    no_exog.seasonality.use_exog = False
    base = model.model_copy(deep=True)
    ridges_only = model.model_copy(deep=True)
    ridges_only.residual.enabled = False
    ridges_only.residual.boosted_weight = 0.0
    linear_only = model.model_copy(deep=True)
    linear_only.residual.enabled = False
    lstm_only = model.model_copy(deep=True)
    lstm_only.residual.linear = False
    return {
        "trend + Fourier": ("trend_fourier", no_exog),
        "+ exogenous inputs (weather, calendar: what the data has)": ("trend_fourier", base),
        "+ linear residual (ridge on 168 h)": ("hybrid", ridges_only),
        "+ gradient-boosted trees next to the ridges": ("hybrid", linear_only),
        "+ LSTM residual, no linear part": ("hybrid", lstm_only),
        "final: + linear, trees and LSTM residual": ("hybrid", model),
    }


def run(name: str, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    config = load_config(TrainConfig, spec["config"])
    data = load_hourly(config.data, spec["path"])
    start = pd.Timestamp(spec["start"])
    rows = []
    final_seconds = 0.0
    for label, (model_name, model_config) in ablations(config).items():
        started = time.perf_counter()
        result = run_backtest(data, model_config, start, spec["days"], spec["refit"], [model_name])
        seconds = time.perf_counter() - started
        if label.startswith("final"):
            final_seconds = seconds
            final = result
        rows.append({"dataset": name, **result.overall.iloc[0].to_dict(), "model": label, "seconds": seconds})
        print(f"  {name}: {label}: MAPE {rows[-1]['MAPE']:.3f} % ({seconds:.0f} s)", flush=True)
    ablation = pd.DataFrame(rows)
    peers = run_backtest(data, config.model, start, spec["days"], spec["refit"], PEERS, peers=available_peers(PEERS))
    table = pd.concat([final.overall.assign(model="hybrid"), peers.overall], ignore_index=True)
    table.insert(0, "dataset", name)
    return table, ablation, final_seconds


def markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    present = [c for c in columns if c in frame.columns]
    lines = ["| " + " | ".join(present) + " |", "|" + "---|" * len(present)]
    for _, row in frame[present].iterrows():
        cells = [f"{v:,.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="one dataset: vic-elec, taylor, pjm-east, or a development period: "
                        "pjm-east-2016, taylor-dev")
    args = parser.parse_args()
    specs = datasets(development=args.only in ("pjm-east-2016", "taylor-dev"))
    if args.only:
        if args.only not in specs:
            parser.error(f"--only {args.only}: not a dataset here; available: {', '.join(specs)} "
                         f"(the PJM East ones need {PJME})")
        specs = {args.only: specs[args.only]}
    RESULTS.mkdir(exist_ok=True)
    header = (f"Measured with `python benchmarks/accuracy.py`, on {platform.machine()} "
              f"({__import__('os').cpu_count()} cores, CPU only). MAPE/SMAPE in %, coverage of P10–P90 in %.")
    for name, spec in specs.items():
        text = []
        print(f"{name}: backtest from {spec['start']} for {spec['days']} days, refit every {spec['refit']}", flush=True)
        table, ablation, seconds = run(name, spec)
        table.to_csv(RESULTS / f"accuracy_{name}.csv", index=False)
        ablation.to_csv(RESULTS / f"ablation_{name}.csv", index=False)
        text += [
            "", f"### {name}: from {spec['start']}, {spec['days']} days, refit every {spec['refit']} days", "",
            markdown(table.sort_values("MAPE"), ["model", "MAPE", "SMAPE", "MAE", "RMSE", "R2", "coverage_p10_p90", "pinball"]),
            "", f"Ablation ({name}); the final hybrid's backtest took {seconds:.0f} s:", "",
            markdown(ablation, ["model", "MAPE", "SMAPE", "RMSE", "coverage_p10_p90", "seconds"]),
            "", f"(measured {date.today()})",
        ]
        (RESULTS / f"accuracy_{name}.md").write_text("\n".join(text) + "\n")
        print("\n".join(text))
    # One page with every dataset measured so far, each section dated.
    sections = [path.read_text() for path in sorted(RESULTS.glob("accuracy_*.md"))]
    (RESULTS / "accuracy.md").write_text(header + "\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
