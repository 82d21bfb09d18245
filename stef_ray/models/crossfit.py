"""Where the residual models are judged: validation blocks spread over the last year, and the folds of a
time-blocked cross-fit around them. Plain numpy on row numbers; the hybrid does the fitting.

The last ``train_days`` of window origins are split into ``blocks`` contiguous folds. Each fold ends with a
validation block (the last one where the data ends) and holds a few early-stopping days in its middle, weeks
away from any block: load errs in spells, so stopping days next to a block would share its weather, and the
epoch they pick would look good on the block by that alone (on BigDEAL's 2005, with the stopping days just
before each block, the gate kept the net in 7 of 13 refits and the kept nets lost 1.3 % MAPE on the test
weeks). The rest of the fold is training windows for the neural residual. The ridges and trees walk forward:
each fold's are fitted only on the windows before it (the fold's lookback and horizon kept clear), as a refit
on that day would have been, so every window of the period gets an out-of-sample forecast of the linear layers:
what the neural residual learns to correct, and what the validation blocks score. Blocks spread over the year see every season: one block of the last weeks judges a model on one
weather regime only (blocked cross-validation of this kind is sound for autoregressive models: Bergmeir,
Hyndman and Koo 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRAIN, STOP, VALID, GAP = 0, 1, 2, -1
HOURS_PER_DAY = 24


@dataclass
class FoldPlan:
    """Per window origin of the cross-fitted period: its fold and its role (TRAIN, STOP, VALID or GAP)."""

    origins: np.ndarray
    fold: np.ndarray
    role: np.ndarray
    fold_bounds: list[tuple[int, int]]  # row range [start, stop) of each fold's origins
    block_bounds: list[tuple[int, int]]  # row range [start, stop) of each fold's validation block

    @property
    def folds(self) -> int:
        return len(self.fold_bounds)

    def of(self, role: int) -> np.ndarray:
        return self.origins[self.role == role]

    def held_out(self, fold: int, whole_fold: bool, lookback: int, horizon: int) -> tuple[int, int]:
        """Rows [lo, hi) of origins a fit for ``fold`` must not train on: the fold (or only its validation
        block) and every window sharing a row with it, history or target."""
        start, stop = self.fold_bounds[fold] if whole_fold else self.block_bounds[fold]
        return start - lookback - horizon + 1, stop + lookback + horizon - 1


def plan_folds(origins: np.ndarray, end: int, train_days: int, blocks: int, block_days: int, stop_days: int,
               lookback: int, horizon: int) -> FoldPlan:
    """Plan the folds over the origins in the last ``train_days`` before row ``end`` (the first origin whose
    forecast would run past the data). With less history than ``blocks`` folds of twice ``block_days`` each,
    fewer blocks are used (at least one)."""
    span = 24 * train_days
    first = max(int(origins[0]) if len(origins) else end, end - span)
    available_days = (end - first) // HOURS_PER_DAY
    blocks = max(1, min(blocks, available_days // (2 * block_days)))
    fold_hours = (end - first) // blocks
    block_hours = min(24 * block_days, fold_hours // 2)
    stop_hours = min(24 * stop_days, max(fold_hours - block_hours - 4 * horizon, 0) // 3)
    period = origins[(origins >= first) & (origins < end)]
    fold = np.full(len(period), -1)
    role = np.full(len(period), TRAIN)
    fold_bounds, block_bounds = [], []
    for k in range(blocks):
        stop = end - (blocks - 1 - k) * fold_hours
        start = stop - fold_hours if k else first
        block_start = stop - block_hours
        fold[(period >= start) & (period < stop)] = k
        fold_bounds.append((start, stop))
        block_bounds.append((block_start, stop))
        # No training or stopping window shares a target hour with a validation window (their history may
        # hold validation hours: those are known when a forecast is made, as they would be in service), and
        # no training window one with a stopping window.
        near = (period > block_start - horizon) & (period < stop + horizon - 1)
        role[near] = GAP
        if stop_hours:
            middle = (start + block_start - horizon) // 2
            stop_start, stop_end = middle - stop_hours // 2, middle - stop_hours // 2 + stop_hours
            role[(period > stop_start - horizon) & (period < stop_end + horizon - 1)] = GAP
            role[(period >= stop_start) & (period < stop_end)] = STOP
        role[(period >= block_start) & (period < stop)] = VALID
    return FoldPlan(period, fold, role, fold_bounds, block_bounds)


@dataclass
class ResidualWindows:
    """The residual models' training material: the scaled input array, the cross-fitted period (folds,
    roles, the linear layers' out-of-fold forecasts) and the served ridges' windows."""

    series: np.ndarray  # (hours, channels) float32
    plan: FoldPlan
    linear_origins: np.ndarray  # the served ridges' and trees' training origins
    linear_weight: np.ndarray | None = None  # per window of linear_origins; None: equal
    out_of_fold: np.ndarray | None = None  # (len(plan.origins), horizon) scaled; zeros without linear layers
    # The validation blocks' forecasts by ridges fitted on everything before the block (as fresh as the served
    # ones): what the gate and the calibration score. The same array as out_of_fold when the ridges were
    # fitted per block anyway (no neural residual).
    block_forecast: np.ndarray | None = None
    neural: np.ndarray | None = None  # (len(plan.origins), horizon): each validation block's walked-forward net
    neural_scored: np.ndarray | None = None  # (len(plan.origins),) which rows a walked-forward net forecast
    days: np.ndarray | None = None  # local day number of every row (the gate pairs by validation day)

    def rows(self, role: int) -> np.ndarray:
        return np.flatnonzero(self.plan.role == role)

    def targets(self, origins: np.ndarray, horizon: int) -> np.ndarray:
        """The scaled residual the ``horizon`` hours after each origin: what every residual model is scored on."""
        return self.series[origins[:, None] + np.arange(horizon), 0].astype(np.float64)
