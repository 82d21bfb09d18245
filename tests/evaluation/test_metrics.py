from __future__ import annotations

import numpy as np
import pytest

from stef_ray.evaluation.metrics import coverage, pinball_loss, point_metrics


def test_metrics__known_values():
    m = point_metrics(np.array([100.0, 200.0]), np.array([110.0, 180.0]))
    assert m["MAE"] == 15 and m["MSE"] == 250 and m["RMSE"] == pytest.approx(np.sqrt(250))
    assert m["MAPE"] == pytest.approx(10.0)
    assert m["SMAPE"] == pytest.approx(100 * (20 / 210 + 40 / 380) / 2)
    assert m["R2"] == pytest.approx(1 - 500 / 5000)


def test_metrics__nan_pairs_are_ignored():
    m = point_metrics(np.array([100.0, np.nan, 50.0]), np.array([100.0, 3.0, 55.0]))
    assert m["MAE"] == 2.5


def test_metrics__pinball_and_coverage():
    actual = np.array([0.0, 10.0])
    assert pinball_loss(actual, np.array([5.0, 5.0]), 0.9) == pytest.approx((0.1 * 5 + 0.9 * 5) / 2)
    assert coverage(actual, np.array([-1.0, 11.0]), np.array([1.0, 12.0])) == 50.0
