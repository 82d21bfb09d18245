from __future__ import annotations

import numpy as np

from stef_ray.models.residual_linear import LinearResidual


def _series(hours: int, seed: int = 0) -> np.ndarray:
    """Channel 0: an AR(1) residual; channel 1: a known future input that adds to it."""
    rng = np.random.default_rng(seed)
    known = rng.normal(size=hours)
    residual = np.zeros(hours)
    for t in range(1, hours):
        residual[t] = 0.8 * residual[t - 1] + 0.5 * known[t] + rng.normal(0, 0.1)
    return np.column_stack([residual, known])


def test_linear_residual__learns_persistence_and_the_known_input():
    series = _series(3000)
    origins = np.arange(48, 2900)
    model = LinearResidual(lookback=48, horizon=6, alpha=1e-3).fit(series, origins)
    predicted = model.predict(series, origins)
    actual = series[origins[:, None] + np.arange(6), 0]
    # The first lead is 0.8 * last residual + 0.5 * known input: only the noise (sd 0.1) is left.
    assert np.std(predicted[:, 0] - actual[:, 0]) < 0.11


def test_linear_residual__robust_passes_resist_a_spell_of_outliers():
    series = _series(3000, seed=1)
    clean = series.copy()
    series[1500:1548, 0] += 8.0  # two days of a spike that the inputs do not explain
    origins = np.arange(48, 2900)
    test = np.arange(2000, 2900)
    actual = clean[test[:, None] + np.arange(6), 0]
    errors = {}
    for passes in (0, 5):
        model = LinearResidual(lookback=48, horizon=6, alpha=1e-3, robust_iterations=passes).fit(series, origins)
        errors[passes] = np.mean(np.abs(model.predict(clean, test) - actual))
    assert errors[5] < 0.9 * errors[0]


def test_linear_residual__state_round_trip_and_old_states_load_as_plain_ridge():
    series = _series(1000)
    origins = np.arange(48, 900)
    model = LinearResidual(48, 6, robust_iterations=2).fit(series, origins)
    again = LinearResidual.from_state(model.to_state())
    np.testing.assert_array_equal(again.predict(series, origins), model.predict(series, origins))
    plain = LinearResidual(48, 6).fit(series, origins)
    # A state as written before the robust passes and the per-hour ridges: one ridge's 2-D coefficients.
    state = plain.to_state()
    for key in ("robust_iterations", "hour_width", "hour_channels"):
        del state[key]
    for key in ("coef", "intercept", "feature_mean", "feature_scale"):
        state[key] = state[key][0]
    old = LinearResidual.from_state(state)
    assert old.robust_iterations == 0 and old.hour_width is None
    np.testing.assert_array_equal(old.predict(series, origins), plain.predict(series, origins))


def _hourly_persistence_series(hours: int) -> np.ndarray:
    """A residual that persists at night and flips sign by day; channels: residual, hour sin, hour cos."""
    rng = np.random.default_rng(2)
    hour = np.arange(hours) % 24
    residual = np.zeros(hours)
    for t in range(1, hours):
        residual[t] = (0.9 if hour[t] < 12 else -0.9) * residual[t - 1] + rng.normal(0, 0.1)
    angle = 2 * np.pi * hour / 24
    return np.column_stack([residual, np.sin(angle), np.cos(angle)])


def test_linear_residual__one_ridge_per_origin_hour_learns_hour_dependent_persistence():
    series = _hourly_persistence_series(24 * 400)
    origins = np.arange(48, 24 * 300)
    test = np.arange(24 * 300, 24 * 399)
    actual = series[test, 0]
    errors = {}
    for width in (None, 0):
        model = LinearResidual(48, 1, alpha=1e-3, hour_width=width, hour_channels=(1, 2)).fit(series, origins)
        errors[width] = np.std(model.predict(series, test)[:, 0] - actual)
    assert errors[0] < 0.12  # the noise alone: 0.1
    assert errors[None] > 1.5 * errors[0]


def test_linear_residual__reads_the_origin_hour_from_the_hour_channels():
    series = _hourly_persistence_series(24 * 10)
    model = LinearResidual(24, 1, hour_width=2, hour_channels=(1, 2))
    origins = np.array([24, 30, 47, 48 + 23])
    assert model._model_of(series, origins).tolist() == [0, 6, 23, 23]


def test_linear_residual__per_hour_state_round_trips():
    series = _hourly_persistence_series(24 * 60)
    origins = np.arange(48, 24 * 55)
    model = LinearResidual(48, 3, hour_width=1, hour_channels=(1, 2)).fit(series, origins)
    assert model.coef.shape == (24, 48 + 3 * 2, 3)
    again = LinearResidual.from_state(model.to_state())
    np.testing.assert_array_equal(again.predict(series, origins), model.predict(series, origins))


def test_linear_residual__short_history_falls_back_to_one_ridge():
    # 20 days: each hour's ridge would see ~100 windows for 54 features, too few to trust.
    series = _hourly_persistence_series(24 * 22)
    origins = np.arange(48, 24 * 21)
    model = LinearResidual(48, 3, hour_width=1, hour_channels=(1, 2)).fit(series, origins)
    assert model.hour_width is None and model.coef.shape == (1, 48 + 3 * 2, 3)
    assert LinearResidual.from_state(model.to_state()).hour_width is None


def test_linear_residual__a_window_of_weight_zero_has_no_say():
    # Season weighting rests on this: the weights scale each window's share, and zero means left out, in
    # the standardisation, the robust passes and the penalty alike.
    series = _hourly_persistence_series(24 * 80)
    origins = np.arange(48, 24 * 75)
    weight = np.where(origins < 24 * 40, 0.0, 1.0)
    kept = origins[weight > 0]
    for width in (None, 2):
        weighted = LinearResidual(48, 3, robust_iterations=3, hour_width=width, hour_channels=(1, 2))
        subset = LinearResidual(48, 3, robust_iterations=3, hour_width=width, hour_channels=(1, 2))
        weighted.fit(series, origins, weight)
        subset.fit(series, kept)
        np.testing.assert_allclose(weighted.predict(series, origins), subset.predict(series, origins), rtol=1e-9, atol=1e-12)
    halves = LinearResidual(48, 3).fit(series, origins, np.where(origins < 24 * 40, 0.5, 1.0))
    assert not np.allclose(halves.predict(series, origins), subset.predict(series, origins))


def _seasonal_persistence_series(days: int) -> np.ndarray:
    """A residual that persists in the first half of each 'year' of 100 days and flips sign in the second."""
    rng = np.random.default_rng(3)
    hours = days * 24
    first_half = (np.arange(hours) // 24) % 100 < 50
    residual = np.zeros(hours)
    for t in range(1, hours):
        residual[t] = (0.9 if first_half[t] else -0.9) * residual[t - 1] + rng.normal(0, 0.1)
    return residual[:, None]


def test_linear_residual__weighting_by_season_learns_that_season_dynamics():
    series = _seasonal_persistence_series(400)
    origins = np.arange(48, 24 * 300)
    test = np.arange(24 * 300 + 48, 24 * 345)  # a first half
    in_season = ((origins // 24) % 100 < 50).astype(float)
    actual = series[test, 0]
    errors = {}
    for name, weight in {"equal": None, "season": in_season}.items():
        model = LinearResidual(1, 1, alpha=1e-3).fit(series, origins, weight)  # lag 1: its sign is the season's
        errors[name] = np.std(model.predict(series, test)[:, 0] - actual)
    assert errors["season"] < 0.12  # the noise alone: 0.1
    assert errors["equal"] > 1.5 * errors["season"]


def test_linear_residual__pooled_hour_moments_solve_as_the_rows_do():
    # The first solve of each per-hour ridge comes from hour moments summed over its hours; it must be the
    # ridge a solve on the group's own rows gives, weights, a loud channel (offset and scale far from 0 and 1)
    # and a constant-within-hour channel included.
    from stef_ray.models.residual_linear import HourMoments, origin_hours

    series = _hourly_persistence_series(24 * 200)
    rng = np.random.default_rng(5)
    loud = 5_000 + 300 * rng.normal(size=len(series))
    series = np.column_stack([series, loud])
    origins = np.arange(48, 24 * 195)
    weight = rng.uniform(0, 2, size=len(origins))
    weight[::7] = 0.0
    model = LinearResidual(48, 4, alpha=0.3, hour_width=2, hour_channels=(1, 2))
    x = model._features(series, origins)
    y = series[origins[:, None] + np.arange(4), 0]
    hours = origin_hours(series, origins, (1, 2))
    moments = HourMoments(x, y, weight, hours)
    for hour in (0, 7, 23):
        distance = np.abs(hours - hour)
        rows = np.minimum(distance, 24 - distance) <= 2
        prior, windows = weight[rows], weight[rows].sum()
        mean = np.average(x[rows], axis=0, weights=prior)
        scale = np.sqrt(np.average((x[rows] - mean) ** 2, axis=0, weights=prior))
        scale = np.where(scale > 1e-9, scale, 1.0)
        z = (x[rows] - mean) / scale
        coef, intercept = model._solve(z, y[rows], prior, windows)
        pooled_coef, pooled_intercept = model._solve_pooled(moments.pooled(np.unique(hours[rows])), mean, scale, windows)
        np.testing.assert_allclose(pooled_coef, coef, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(pooled_intercept, intercept, rtol=1e-7, atol=1e-9)
