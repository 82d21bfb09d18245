"""Research harness, stage 1: per refit of a rolling backtest, cache what a neural-residual experiment needs.

For each refit (origin T, data before T) it fits the shipped hybrid without the neural part (trend, seasonality,
per-hour ridges, trees where on) and stores, in one .npz per refit:
  - the residual-channel array over the whole frame (scaled with the refit's scaler),
  - the served ridge (+trees) residual forecast and the served MW forecast for the test block's 00:00 origins,
  - out-of-sample ridge (+trees) forecasts for V validation blocks spread over the last year before T, each
    from ridges fitted without that block (and the lookback/horizon around it), weighted toward its season.
Stage 2 (neural_dev.py) trains neural variants on these arrays without refitting the linear layers.

    python benchmarks/research/neural_cache.py --dataset pjm-east-2016 --out /tmp/neural_cache
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stef_ray.config import TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.data import load_hourly
from stef_ray.data.hourly import LOAD
from stef_ray.features import season_weights
from stef_ray.models.hybrid import HybridModel
from stef_ray.models.residual_boosted import BoostedResidual
from stef_ray.models.residual_linear import LinearResidual
from stef_ray.models.residual_neural import valid_origins

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def specs() -> dict[str, dict]:
    vic = Path("/tmp/stef_ray_vic_elec.csv")
    pjm = {"path": SHARED / "pjme" / "PJME_hourly.csv", "config": ROOT / "configs" / "pjme.yaml", "refit": 28}
    out = {
        "vic-elec-dev": {"path": vic, "config": ROOT / "configs" / "vic_elec.yaml", "start": "2014-07-05",
                         "days": 90, "refit": 7},
        "vic-elec": {"path": vic, "config": ROOT / "configs" / "vic_elec.yaml", "start": "2014-10-03",
                     "days": 90, "refit": 7},
        "pjm-east-2016": pjm | {"start": "2016-01-01", "days": 364},
        "pjm-east": pjm | {"start": "2017-01-01", "days": 365},
    }
    return out


def block_starts(end: int, hours_per_block: int, blocks: int, spacing_hours: int) -> list[int]:
    """Row numbers where V validation blocks start: the last ends at ``end``, the others every ``spacing``."""
    return [end - hours_per_block - k * spacing_hours for k in range(blocks)][::-1]


def fit_linear_layers(model: HybridModel, series: np.ndarray, origins: np.ndarray, weight: np.ndarray | None):
    c, shape = model.config.residual, model.config.forecast
    linear = LinearResidual(shape.lookback_hours, shape.horizon_hours, c.linear_alpha, c.linear_robust_iterations,
                            c.linear_hour_width if c.linear_hour_width >= 0 else None, model.residual.hour_channels)
    linear.fit(series, origins, weight)
    boosted = None
    if model.residual.boosted is not None:
        boosted = BoostedResidual(shape.horizon_hours, model.residual.channel_names,
                                  (model.residual.scaler["residual_std"], model.residual.scaler["season_std"]),
                                  c.boosted_iterations, max_rows=c.boosted_max_rows, seed=c.seed)
        boosted.fit(series, origins, weight)
    return linear, boosted


def linear_part(model: HybridModel, linear, boosted, series, origins) -> np.ndarray:
    out = linear.predict(series, origins)
    if boosted is not None:
        share = model.config.residual.boosted_weight
        out = (1 - share) * out + share * boosted.predict(series, origins)
    return out


def cache_refit(data, config, first_origin: pd.Timestamp, positions: np.ndarray, out: Path,
                blocks: int, block_days: int, folds: int) -> None:
    started = time.perf_counter()
    frame = data.frame
    train = data.window(end=first_origin)
    cfg = config.model.model_copy(deep=True)
    cfg.residual.enabled = False
    model = HybridModel(cfg, data.exog).fit(train)  # the served model without the neural part
    comp = model.predict_components(frame, positions)
    mw = model.to_megawatts(comp)
    trend_log, season_log = model.base_components(frame)
    residual_log = np.log(frame[LOAD].to_numpy(dtype=float)) - trend_log - season_log
    series = model.residual_series(frame, residual_log, season_log)
    c, shape = cfg.residual, cfg.forecast
    n_train = len(train.frame)
    # Windows fully inside the training rows (targets before T), as the residual stack's own plan.
    valid = np.isfinite(series[:n_train]).all(axis=1)
    origins = valid_origins(valid, shape.lookback_hours, shape.horizon_hours)
    # Cross-fitting over the neural period (the last train_days): contiguous folds, each predicted by ridges
    # (and trees) fitted without it and the lookback/horizon around it, weighted toward the fold's season,
    # on the same span of windows as the served ridges. Validation blocks then read these forecasts.
    linear_days = c.linear_train_days
    end = n_train - shape.horizon_hours + 1
    period = origins[origins >= end - 24 * (c.train_days or 100_000)]
    linear_pool = origins if not linear_days else origins[origins >= end - 24 * linear_days]
    edges = np.linspace(period[0], period[-1] + 1, folds + 1).astype(int)
    oos = np.full((len(period), shape.horizon_hours), np.nan)
    fold_of = np.zeros(len(period), dtype=int)
    for k in range(folds):
        rows = (period >= edges[k]) & (period < edges[k + 1])
        lo, hi = edges[k] - shape.lookback_hours - shape.horizon_hours, edges[k + 1] + shape.lookback_hours + shape.horizon_hours
        fit_on = linear_pool[(linear_pool < lo) | (linear_pool >= hi)]
        reference = frame.index[(edges[k] + edges[k + 1]) // 2]
        weight = None
        if c.linear_season_days:
            years = (frame.index[fit_on[-1]] - frame.index[fit_on[0]]) / pd.Timedelta(days=365.25)
            if years >= c.linear_season_min_years:
                weight = season_weights(frame.index[fit_on], reference, c.linear_season_days, c.linear_season_floor)
        linear, boosted = fit_linear_layers(model, series, fit_on, weight)
        oos[rows] = linear_part(model, linear, boosted, series, period[rows])
        fold_of[rows] = k
    # Validation blocks: V blocks of block_days, the last ending at T, spread evenly over the last year.
    hours = 24 * block_days
    spacing = (24 * 364) // blocks
    starts = block_starts(end, hours, blocks, spacing)
    val_origins, val_block = [], []
    for b, start in enumerate(starts):
        in_block = period[(period >= start) & (period < start + hours)]
        val_origins.append(in_block)
        val_block.append(np.full(len(in_block), b))
    val_oos = [oos[np.searchsorted(period, np.concatenate(val_origins))]]
    served_val = linear_part(model, model.residual.linear, model.residual.boosted, series, np.concatenate(val_origins))
    ahead = positions[:, None] + np.arange(shape.horizon_hours)
    np.savez_compressed(
        out,
        series=series.astype(np.float32), n_train=n_train, origins=origins, positions=positions,
        timestamps=frame.index.as_unit("ns").asi8,
        trend_test=trend_log[ahead], season_test=season_log[ahead], ridge_test=comp.residual,
        served_test=mw["forecast"], p10_test=mw["p10"], p90_test=mw["p90"],
        actual_test=frame[LOAD].to_numpy(dtype=float)[ahead],
        val_origins=np.concatenate(val_origins), val_block=np.concatenate(val_block),
        val_oos=np.concatenate(val_oos), val_served_in_sample=served_val,
        period=period, period_oos=oos, fold_of=fold_of,
        period_served=linear_part(model, model.residual.linear, model.residual.boosted, series, period),
        residual_mean=model.residual.scaler["residual_mean"], residual_std=model.residual.scaler["residual_std"],
        channel_names=np.array(model.residual.channel_names), linear_train_days=linear_days,
        train_days=c.train_days,
    )
    print(f"  cached {out.name}: {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=list(specs()))
    parser.add_argument("--out", default="/tmp/neural_cache")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--block-days", type=int, default=14)
    parser.add_argument("--folds", type=int, default=8)
    args = parser.parse_args()
    spec = specs()[args.dataset]
    if not Path(spec["path"]).exists() and "vic" in args.dataset:
        from stef_ray.data.builtin import write_dataset
        write_dataset("vic-elec", spec["path"])
    config = load_config(TrainConfig, spec["config"])
    data = load_hourly(config.data, spec["path"])
    folder = Path(args.out) / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    tz = data.frame.index.tz
    origins = [pd.Timestamp(spec["start"]).tz_localize(tz) + pd.DateOffset(days=d) for d in range(spec["days"])]
    positions = data.frame.index.get_indexer(origins)
    for first in range(0, len(origins), spec["refit"]):
        out = folder / f"refit_{first:03d}.npz"
        if out.exists():
            continue
        cache_refit(data, config, origins[first], positions[first : first + spec["refit"]], out,
                    args.blocks, args.block_days, args.folds)


if __name__ == "__main__":
    main()
