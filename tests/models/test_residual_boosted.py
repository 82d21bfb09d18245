from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from stef_ray.models.residual_boosted import HISTORY_HOURS, BoostedResidual
from stef_ray.models.residual_linear import LinearResidual

CHANNELS = ["residual", "seasonal_level", "temperature", "workday", "hour_sin", "hour_cos", "week_sin", "week_cos"]


def _series(hours: int, seed: int = 0) -> np.ndarray:
    """A residual that answers a smoothed temperature non-linearly (cooling above a threshold only), plus
    a daily seasonal level, a working-day flag and the calendar channels, as the hybrid builds them."""
    rng = np.random.default_rng(seed)
    h = np.arange(hours)
    weather = np.convolve(rng.normal(size=hours + 48), np.ones(48) / 48 ** 0.5, mode="valid")[:hours]
    temperature = weather + 0.8 * np.sin(2 * np.pi * h / 24)
    warm = np.convolve(np.maximum(temperature - 0.5, 0), np.ones(12) / 12, mode="full")[:hours]
    residual = 1.5 * warm - 0.3 + rng.normal(0, 0.1, hours)
    return np.column_stack([
        residual, np.sin(2 * np.pi * h / 24), temperature, (h // 24 % 7 < 5).astype(float),
        np.sin(2 * np.pi * h / 24), np.cos(2 * np.pi * h / 24), np.sin(2 * np.pi * h / 168), np.cos(2 * np.pi * h / 168),
    ]).astype(np.float32)


def test_boosted_residual__node_arrays_predict_what_scikit_learn_predicts():
    # The bundle keeps the trees as arrays read from the estimator's private attributes: this is the check
    # that a scikit-learn release which changes them is caught here, not by wrong forecasts.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6))
    x[::11, 2] = np.nan  # missing values take the side learnt for them
    y = np.sin(x[:, 0]) + np.nan_to_num(x[:, 2]) ** 2 + 0.1 * rng.normal(size=3000)
    regressor = HistGradientBoostingRegressor(loss="absolute_error", max_iter=40, random_state=0).fit(x, y)
    model = BoostedResidual(24, CHANNELS)
    model._take_trees(regressor)
    test = rng.normal(size=(500, 6))
    test[::7, 2] = np.nan
    np.testing.assert_allclose(model.predict_rows(test, chunk=64), regressor.predict(test), rtol=0, atol=1e-9)


def test_boosted_residual__learns_a_non_linear_weather_response_the_ridge_misses():
    series = _series(6000)
    train, test = np.arange(HISTORY_HOURS, 4800), np.arange(4800, 5900, 3)
    actual = series[test[:, None] + np.arange(24), 0]
    trees = BoostedResidual(24, CHANNELS, iterations=150).fit(series, train)
    ridge = LinearResidual(168, 24).fit(series, train)
    tree_error = np.mean(np.abs(trees.predict(series, test) - actual))
    ridge_error = np.mean(np.abs(ridge.predict(series, test) - actual))
    assert tree_error < 0.8 * ridge_error


def test_boosted_residual__reads_load_only_before_each_origin():
    series = _series(2000)
    model = BoostedResidual(24, CHANNELS, iterations=30).fit(series, np.arange(HISTORY_HOURS, 1500))
    origin = np.array([1700])
    before = model.predict(series, origin)
    changed = series.copy()
    changed[1700:, 0] += 5.0  # the load from the origin on is what is forecast: it must not matter
    np.testing.assert_array_equal(model.predict(changed, origin), before)
    changed[1699, 0] += 5.0  # the last observed hour must
    assert not np.array_equal(model.predict(changed, origin), before)


def test_boosted_residual__parts_round_trip_and_seeded_fits_repeat():
    series = _series(2000)
    origins = np.arange(HISTORY_HOURS, 1500)
    model = BoostedResidual(24, CHANNELS, iterations=30, max_rows=500).fit(series, origins)
    again = BoostedResidual.from_parts(*model.to_parts())
    test = np.arange(1500, 1900, 5)
    np.testing.assert_array_equal(again.predict(series, test), model.predict(series, test))
    repeat = BoostedResidual(24, CHANNELS, iterations=30, max_rows=500).fit(series, origins)
    np.testing.assert_array_equal(repeat.predict(series, test), model.predict(series, test))
    assert model.continuous == [CHANNELS.index("temperature")]  # the working-day flag gets no smoothed means
    rows = model._rows(series, test, np.zeros(len(test), dtype=int))
    assert rows.shape[1] == len(model.feature_names()) > model.feature.max()  # the names match the columns


def test_boosted_residual__too_little_history_before_an_origin_is_refused():
    with pytest.raises(ValueError, match="168 hours before its origin"):
        BoostedResidual(24, CHANNELS).fit(_series(500), np.arange(100, 300))
