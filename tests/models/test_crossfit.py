from __future__ import annotations

import numpy as np
import pytest

from stef_ray.models.crossfit import GAP, STOP, TRAIN, VALID, plan_folds

LOOKBACK, HORIZON = 168, 24


def _plan(days: int, train_days: int = 364, blocks: int = 4, block_days: int = 14, stop_days: int = 7):
    origins = np.arange(LOOKBACK, 24 * days - HORIZON + 1)
    end = 24 * days - HORIZON + 1
    return plan_folds(origins, end, train_days, blocks, block_days, stop_days, LOOKBACK, HORIZON), end


def test_plan_folds__blocks_spread_over_the_year_the_last_ending_with_the_data():
    plan, end = _plan(3 * 365)
    assert plan.folds == 4
    starts = [start for start, _ in plan.block_bounds]
    assert plan.block_bounds[-1][1] == end
    assert np.diff(starts).tolist() == [91 * 24] * 3  # a season apart
    assert all(stop - start == 14 * 24 for start, stop in plan.block_bounds)
    assert plan.origins[0] >= end - 364 * 24  # only the last train_days
    for k, (start, stop) in enumerate(plan.block_bounds):
        assert (plan.role[(plan.origins >= start) & (plan.origins < stop)] == VALID).all()
        assert (plan.fold[(plan.origins >= start) & (plan.origins < stop)] == k).all()


def test_plan_folds__no_training_or_stopping_window_shares_a_target_hour_with_a_validation_window():
    plan, _ = _plan(2 * 365)
    valid = plan.of(VALID)
    for role in (TRAIN, STOP):
        others = plan.of(role)
        assert len(others) > 0
        assert np.abs(others[:, None] - valid[None, :]).min() >= HORIZON
    # Early stopping reads a week in the middle of each fold: seasons spread as the blocks are, but weeks
    # from any block, so the epoch it picks is not picked on the blocks' weather.
    stop = plan.of(STOP)
    assert np.abs(stop[:, None] - valid[None, :]).min() >= 24 * 30
    for k, (start, block_start) in enumerate(zip((b for b, _ in plan.fold_bounds), (b for b, _ in plan.block_bounds),
                                                 strict=True)):
        mine = stop[(stop >= start) & (stop < block_start)]
        assert len(mine) == 24 * 7, k
        train = plan.of(TRAIN)
        assert np.abs(train[:, None] - mine[None, :]).min() >= HORIZON


def test_plan_folds__the_held_out_range_covers_every_window_sharing_a_row():
    plan, _ = _plan(2 * 365)
    for k in range(plan.folds):
        for whole in (True, False):
            lo, hi = plan.held_out(k, whole, LOOKBACK, HORIZON)
            start, stop = plan.fold_bounds[k] if whole else plan.block_bounds[k]
            assert lo == start - LOOKBACK - HORIZON + 1 and hi == stop + LOOKBACK + HORIZON - 1


@pytest.mark.parametrize(("days", "blocks"), [(70, 2), (45, 1), (200, 4)])
def test_plan_folds__fewer_blocks_on_short_history(days, blocks):
    plan, _ = _plan(days)
    assert plan.folds == blocks
    assert len(plan.of(VALID)) > 0 and set(np.unique(plan.role)) <= {TRAIN, STOP, VALID, GAP}
