"""Research harness: can one network shared across the nine PJM series correct what the hybrid gets wrong?

Issue 21 found that a neural residual trained per series gains nothing over the per-hour ridges on PJM East,
and issue 24 asks whether one shared across series can. This harness tests the idea cheaply, on the hybrid's
own out-of-sample day-ahead errors:

1. ``--run``: ``stef-ray backtest --fleet`` of the nine series (configs/pjm_fleet.yaml's model with
   ``residual.enabled: false``) for 2016 and 2017, day-ahead from each 00:00, refitted every 28 days; each
   series' ``forecasts.csv`` is kept (about an hour on 2 cores).
2. (default) For each origin, the correctors see what is known at 00:00: the hybrid's log errors of the last
   7 days (168 values), its forecast for the day against the last week's mean load (24), the day of week and
   the season; they predict the day's 24 log errors, and the corrected forecast is the hybrid's times
   ``exp(correction)`` (the P10/P90 move with it). Walking forward in 28-day blocks as the refits do, each
   block's corrector is trained only on the days before the block. Models: per-series ridge, one ridge
   pooled over the series (series as an input), per-series MLP, one MLP shared over the series.
   Settings are chosen on the development blocks (2016-07-01 to 2016-12-30, trained on 2016 before them);
   ``--test`` then runs 2017 once with the chosen settings.

    python benchmarks/research/shared_residual.py --run            # stage 1 (about an hour)
    python benchmarks/research/shared_residual.py                  # development blocks, every setting
    python benchmarks/research/shared_residual.py --test \\
        --ridge-alpha 100 --mlp-hidden 64 --mlp-epochs 40          # 2017, once
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE.parent / "results"
DEFAULT_FOLDER = Path("/tmp/stef_ray_shared_residual")
BACK_DAYS = 7


def run_backtests(folder: Path) -> int:
    """Stage 1: the nine series' 2016-2017 backtest without the neural residual, forecasts kept."""
    import pjm_zones

    folder.mkdir(parents=True, exist_ok=True)
    path = pjm_zones.fleet_file(folder)
    fleet = yaml.safe_load(path.read_text())
    fleet["model"].setdefault("residual", {})["enabled"] = False
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    command = [str(Path(sys.executable).parent / "stef-ray"), "backtest", "--fleet", str(path), "--start",
               "2016-01-01", "--days", "730", "--refit-every", "28", "--models", "hybrid", "--out",
               str(folder / "out")]
    print(" ".join(command[1:]), flush=True)
    return subprocess.run(command, env=os.environ | {"RAY_AUTH_MODE": "disabled"}).returncode


def daily_arrays(path: Path) -> dict[str, np.ndarray]:
    """One series' backtest as (days, 24) arrays: actual, forecast, p10, p90; and the origins."""
    table = pd.read_csv(path, usecols=["origin", "lead_hour", "actual", "forecast", "p10", "p90"])
    table["origin"] = pd.to_datetime(table["origin"], utc=True)
    wide = table.pivot(index="origin", columns="lead_hour")
    out = {name: wide[name].to_numpy(dtype=float) for name in ("actual", "forecast", "p10", "p90")}
    out["origin"] = wide.index.tz_convert("US/Eastern").tz_localize(None).normalize().to_numpy()
    return out


def features(day: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs known at each origin's 00:00, the day's log errors (targets), and which rows are usable."""
    error = np.log(day["actual"]) - np.log(day["forecast"])
    n = len(error)
    usable = np.zeros(n, dtype=bool)
    rows = []
    for i in range(n):
        past = error[max(0, i - BACK_DAYS):i]
        ok = i >= BACK_DAYS and np.isfinite(past).all() and np.isfinite(day["forecast"][i]).all()
        usable[i] = ok
        if not ok:
            rows.append(np.zeros(BACK_DAYS * 24 + 24 + 9))
            continue
        week_mean = np.log(day["actual"][i - BACK_DAYS:i]).mean()
        when = pd.Timestamp(day["origin"][i])
        calendar = np.zeros(9)
        calendar[when.dayofweek] = 1
        angle = 2 * np.pi * when.dayofyear / 365.25
        calendar[7:] = np.sin(angle), np.cos(angle)
        rows.append(np.concatenate([past.ravel(), np.log(day["forecast"][i]) - week_mean, calendar]))
    return np.asarray(rows, dtype=np.float32), error.astype(np.float32), usable & np.isfinite(error).all(1)


class Corrector(nn.Module):
    """An MLP with a linear skip path; the output layers start at zero, so an untrained net corrects nothing."""

    def __init__(self, width: int, hidden: int, horizon: int = 24):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(0.1),
                                  nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon))
        self.skip = nn.Linear(width, horizon)
        for layer in (self.body[-1], self.skip):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.body(x) + self.skip(x)


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, seeds: int = 3):
    """Seed ensemble of correctors on standardised inputs; returns a predict function."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    scale = float(y.std()) + 1e-9
    xt, yt = torch.as_tensor((x - mean) / std), torch.as_tensor(y / scale)
    nets = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        order_rng = np.random.default_rng(seed)
        net = Corrector(x.shape[1], hidden)
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
        for _ in range(epochs):
            net.train()
            order = order_rng.permutation(len(x))
            for start in range(0, len(order), 64):
                batch = order[start:start + 64]
                optimiser.zero_grad()
                loss = (net(xt[batch]) - yt[batch]).abs().mean()
                loss.backward()
                optimiser.step()
        net.eval()
        nets.append(net)

    def predict(xq: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = torch.as_tensor((xq - mean) / std)
            return np.mean([net(q).numpy() for net in nets], axis=0) * scale

    return predict


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float):
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    y_mean = y.mean(0)
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y_mean))

    def predict(xq: np.ndarray) -> np.ndarray:
        return ((xq - mean) / std) @ coef + y_mean

    return predict


def walk_forward(series: dict[str, dict], model: str, setting: float | int, block_starts, block_days: int,
                 train_from: np.datetime64, mlp_epochs: int) -> dict[str, np.ndarray]:
    """Each series' (days, 24) correction; each block's corrector trained on the usable days before it."""
    names = list(series)
    onehot = np.eye(len(names), dtype=np.float32)
    out = {name: np.full_like(series[name]["error"], np.nan) for name in names}
    for start in block_starts:
        end = start + np.timedelta64(block_days, "D")
        train = {n: (series[n]["origin"] >= train_from) & (series[n]["origin"] < start) & series[n]["usable"]
                 for n in names}
        test = {n: (series[n]["origin"] >= start) & (series[n]["origin"] < end) & series[n]["usable"]
                for n in names}
        if model.endswith("_shared"):
            x = np.vstack([np.hstack([series[n]["x"][train[n]], np.repeat(onehot[[k]], train[n].sum(), 0)])
                           for k, n in enumerate(names)])
            y = np.vstack([series[n]["error"][train[n]] for n in names])
            predict = fit_ridge(x, y, setting) if model.startswith("ridge") else fit_mlp(x, y, setting, mlp_epochs)
            for k, n in enumerate(names):
                if test[n].any():
                    xq = np.hstack([series[n]["x"][test[n]], np.repeat(onehot[[k]], test[n].sum(), 0)])
                    out[n][test[n]] = predict(xq)
        else:
            for n in names:
                if not test[n].any():
                    continue
                x, y = series[n]["x"][train[n]], series[n]["error"][train[n]]
                predict = (fit_ridge(x, y, setting) if model.startswith("ridge")
                           else fit_mlp(x, y, setting, mlp_epochs))
                out[n][test[n]] = predict(series[n]["x"][test[n]])
    return out


def score(series: dict[str, dict], corrections: dict[str, np.ndarray] | None, days) -> pd.DataFrame:
    """Daily MAPE and P10-P90 coverage per series over the given days (corrected when corrections are given)."""
    rows = []
    for n, s in series.items():
        keep = np.isin(s["origin"], days) & s["usable"]
        factor = np.exp(corrections[n][keep]) if corrections is not None else 1.0
        forecast, actual = s["forecast"][keep] * factor, s["actual"][keep]
        low, high = s["p10"][keep] * factor, s["p90"][keep] * factor
        ape = (np.abs(forecast - actual) / actual * 100).mean(1)
        inside = ((actual >= low) & (actual <= high)).mean(1) * 100
        rows.append(pd.DataFrame({"series_id": n, "origin": s["origin"][keep], "mape": ape, "coverage": inside}))
    return pd.concat(rows, ignore_index=True)


def load_series(folder: Path) -> dict[str, dict]:
    series = {}
    for path in sorted((folder / "out").glob("*/forecasts.csv")):
        day = daily_arrays(path)
        x, error, usable = features(day)
        series[path.parent.name] = day | {"x": x, "error": error, "usable": usable}
    if not series:
        sys.exit(f"no forecasts under {folder / 'out'}: run stage 1 first (--run)")
    return series


def paired_by_day(base: pd.DataFrame, other: pd.DataFrame) -> tuple[float, float]:
    """Mean and standard error of the daily MAPE difference, averaged over the series each day first (the
    series share weather, so their days are not independent)."""
    diff = (other.set_index(["series_id", "origin"])["mape"] - base.set_index(["series_id", "origin"])["mape"])
    per_day = diff.groupby(level="origin").mean()
    return float(per_day.mean()), float(per_day.std(ddof=1) / np.sqrt(len(per_day)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--run", action="store_true", help="stage 1: the nine series' backtests")
    parser.add_argument("--test", action="store_true", help="score 2017 once, with the settings given")
    parser.add_argument("--ridge-alpha", type=float, default=100.0)
    parser.add_argument("--mlp-hidden", type=int, default=64)
    parser.add_argument("--mlp-epochs", type=int, default=40)
    args = parser.parse_args()
    if args.run:
        sys.exit(run_backtests(args.folder))
    torch.set_num_threads(1)
    series = load_series(args.folder)
    if args.test:
        starts = np.arange(np.datetime64("2017-01-01"), np.datetime64("2017-12-31"), np.timedelta64(28, "D"))
        train_from, tag = np.datetime64("2016-01-01"), "test"
        grid = {"ridge_series": [args.ridge_alpha], "ridge_shared": [args.ridge_alpha],
                "mlp_series": [args.mlp_hidden], "mlp_shared": [args.mlp_hidden]}
        epochs = [args.mlp_epochs]
    else:
        starts = np.arange(np.datetime64("2016-07-01"), np.datetime64("2016-12-31"), np.timedelta64(28, "D"))
        train_from, tag = np.datetime64("2016-01-01"), "dev"
        grid = {"ridge_series": [10.0, 100.0, 1000.0], "ridge_shared": [10.0, 100.0, 1000.0],
                "mlp_series": [32, 128], "mlp_shared": [32, 128]}
        epochs = [20, 60]
    days = np.concatenate([np.arange(s, s + np.timedelta64(28, "D")) for s in starts]).astype("datetime64[ns]")
    days = days[days < np.datetime64("2017-12-31")]
    base = score(series, None, days)
    print(f"{tag}: {len(series)} series, {len(starts)} blocks of 28 days from {starts[0]}; hybrid alone "
          f"MAPE {base['mape'].mean():.3f} %, P10-P90 coverage {base['coverage'].mean():.1f} %", flush=True)
    rows, daily = [], {"hybrid": base}
    for model, settings in grid.items():
        for setting in settings:
            for epoch_count in (epochs if model.startswith("mlp") else [0]):
                started = time.perf_counter()
                corrections = walk_forward(series, model, setting, starts, 28, train_from, epoch_count)
                scored = score(series, corrections, days)
                diff, se = paired_by_day(base, scored)
                label = f"{model} {'alpha' if model.startswith('ridge') else 'hidden'}={setting:g}" + (
                    f" epochs={epoch_count}" if epoch_count else "")
                daily[label] = scored
                per_series = scored.groupby("series_id")["mape"].mean() - base.groupby("series_id")["mape"].mean()
                rows.append({"model": label, "mape": scored["mape"].mean(), "coverage": scored["coverage"].mean(),
                             "paired_diff": diff, "paired_se": se,
                             "relative_%": 100 * diff / base["mape"].mean(),
                             "series_better": int((per_series < 0).sum()),
                             "seconds": time.perf_counter() - started})
                print(f"  {label:38s} MAPE {rows[-1]['mape']:.3f}  {diff:+.3f} ± {se:.3f}  coverage "
                      f"{rows[-1]['coverage']:.1f}  better on {rows[-1]['series_better']}/{len(series)} series "
                      f"({rows[-1]['seconds']:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / f"shared_residual_{tag}.csv", index=False, float_format="%.4f")
    per_series = pd.concat({label: frame.groupby("series_id")["mape"].mean() for label, frame in daily.items()},
                           axis=1)
    per_series.to_csv(RESULTS / f"shared_residual_{tag}_series.csv", float_format="%.4f")
    print(per_series.round(3).to_string())


if __name__ == "__main__":
    main()
