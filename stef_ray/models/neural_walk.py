"""The neural residual's fair trial: nets trained walking forward on the linear layers' out-of-sample errors,
and the paired comparison on the validation days that keeps or drops the net.

For each validation block, a net trained (and early-stopped) on the windows before it only, warm-started
from the previous block's, forecasts the block; the net of the last block is the one served. The gate
compares, per validation day, the |log error| of the forecast issued that day (``forecast.issue_hours``)
by the linear layers alone and with the net, the linear layers fitted on everything before the block (as
fresh as the served ones, which are refitted at every refit; the net learned the errors of ridges fitted
before its fold, weeks staler).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from stef_ray.config import ResidualConfig
from stef_ray.models.crossfit import STOP, TRAIN, VALID, ResidualWindows
from stef_ray.models.residual_linear import origin_hours
from stef_ray.models.residual_neural import EpochCallback, NeuralResidual
from stef_ray.models.training_record import NeuralRecord
from stef_ray.spec import ForecastSpec

MIN_NEURAL_WINDOWS = 24 * 7  # hours of training origins before a validation block, at least, for a net to forecast it


def not_trained(config: ResidualConfig, why: str) -> NeuralRecord:
    """The bundle's record of a neural residual that was never trained, and why."""
    return NeuralRecord(architecture=config.architecture, ensemble=config.ensemble, why=why)


def walk_forward(windows: ResidualWindows, config: ResidualConfig, spec: ForecastSpec, hour_channels: tuple[int, int],
                 callbacks: Sequence[EpochCallback], block_names: Sequence[str],
                 say: Callable[[str], None]) -> tuple[NeuralResidual | None, int]:
    """Train one net per validation block on the windows before it; fills ``windows.neural`` (each block's
    forecast, scaled) and ``windows.neural_scored``. Returns the last block's net (None when no block had
    ``MIN_NEURAL_WINDOWS`` hours of training windows before it) and the epochs run in all."""
    plan, c = windows.plan, config
    horizon = spec.horizon_hours
    windows.neural = np.zeros((len(plan.origins), horizon), dtype=np.float32)
    windows.neural_scored = np.zeros(len(plan.origins), dtype=bool)
    neural, state, trained = None, None, 0
    for k, (block_start, _block_stop) in enumerate(plan.block_bounds):
        block = np.flatnonzero((plan.fold == k) & (plan.role == VALID))
        before = plan.origins < block_start - horizon + 1
        train = np.flatnonzero((plan.role == TRAIN) & before)
        stop = np.flatnonzero((plan.role == STOP) & before)
        if not len(block) or len(train) * c.window_stride_hours < MIN_NEURAL_WINDOWS:
            continue
        candidate = NeuralResidual(c, spec, windows.series.shape[1], hour_channels)
        candidate.fit(windows.series, plan.origins[train], plan.origins[stop], windows.out_of_fold[train],
                      windows.out_of_fold[stop], callbacks, state)
        state = candidate.state_dict()
        windows.neural[block] = candidate.predict(windows.series, plan.origins[block])
        windows.neural_scored[block] = True
        trained += candidate.epochs_run
        neural = candidate
        say(f"  block {k + 1}/{plan.folds} (from {block_names[k]}): {len(train):,} training windows, "
            f"{candidate.epochs_run} epochs, early-stopping loss {candidate.best_val_loss:.4f}")
    return neural, trained


def paired_gate(actual: np.ndarray, without: np.ndarray, with_net: np.ndarray, days: np.ndarray,
                gate_z: float) -> dict:
    """Keep-or-drop evidence: per day (``days``, one per window), the mean |log error| without and with the
    net, paired; kept where the mean gain exceeds ``gate_z`` standard errors."""
    daily = pd.DataFrame({"day": days, "without": np.abs(actual - without).mean(axis=1),
                          "with": np.abs(actual - with_net).mean(axis=1)}).groupby("day").mean()
    gain = daily["without"] - daily["with"]
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("inf")
    kept = bool(gain.mean() > 0 and gain.mean() > gate_z * se)
    return {"kept": kept, "days": len(gain), "gain": float(gain.mean()), "gain_se": se,
            "mae_without": float(daily["without"].mean()), "mae_with": float(daily["with"].mean())}


def train_and_gate(windows: ResidualWindows, config: ResidualConfig, spec: ForecastSpec,
                   hour_channels: tuple[int, int], callbacks: Sequence[EpochCallback],
                   block_names: Sequence[str], unscale: Callable[[np.ndarray], np.ndarray],
                   say: Callable[[str], None]) -> tuple[NeuralResidual | None, NeuralRecord]:
    """``walk_forward``, then the paired gate on the validation days the walked-forward nets forecast: the
    last block's net (None when none was trained) and the bundle's record of the trial (``unscale``: scaled
    residual to log)."""
    plan, c = windows.plan, config
    say(f"TRAINING NEURAL RESIDUAL ({c.architecture.upper()}{f' x{c.ensemble}' if c.ensemble > 1 else ''}) "
        f"walking forward over {plan.folds} validation block(s): each block is forecast by a net trained on "
        "the windows before it (targets: the ridges' and trees' out-of-sample errors)")
    neural, trained = walk_forward(windows, c, spec, hour_channels, callbacks, block_names, say)
    if neural is None:
        record = not_trained(c, "less than a week of training windows before every block")
        say(f"  note: no neural residual: {record.why}")
        return None, record
    # Judged where the product is scored: the validation windows whose origin is an issue hour (00:00 by
    # default), one per validation day. Averaged over every origin hour, a net that helps at noon can pass
    # the gate while it hurts the forecasts issued at midnight.
    issued = np.isin(origin_hours(windows.series, plan.origins, hour_channels), spec.issue_hours)
    rows = np.flatnonzero((plan.role == VALID) & windows.neural_scored & issued)
    if len(rows) < 2:
        record = not_trained(c, "fewer than two validation windows at an issue hour (forecast.issue_hours)")
        say(f"  note: no neural residual: {record.why}")
        return None, record
    origins = plan.origins[rows]
    actual = unscale(windows.targets(origins, spec.horizon_hours))
    without = windows.block_forecast[rows].astype(np.float64)  # ridges as fresh as the served ones
    gate = paired_gate(actual, unscale(without), unscale(without + windows.neural[rows]), windows.days[origins],
                       c.gate_z)
    record = NeuralRecord(
        architecture=c.architecture, ensemble=c.ensemble, parameters=neural.parameter_count, epochs_run=trained,
        stopped_early=neural.stopped_early, stop_loss=neural.best_val_loss,
        blocks=len({int(f) for f in plan.fold[windows.neural_scored]}), **gate)
    verdict = "kept" if gate["kept"] else "dropped (adds zero)"
    say(f"  gate: {verdict}: on {gate['days']} validation days the net moves the mean |log error| "
        f"{gate['mae_without']:.5f} -> {gate['mae_with']:.5f}, a paired gain of {gate['gain']:+.5f} ± "
        f"{gate['gain_se']:.5f} (kept where gain > {c.gate_z:g} x its standard error: residual.gate_z)")
    return neural, record
