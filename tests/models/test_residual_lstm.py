from __future__ import annotations

import numpy as np

from stef_ray.config import ResidualConfig
from stef_ray.models.residual_lstm import ResidualLSTM, valid_origins


def _ar_series(hours: int = 24 * 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    residual = np.zeros(hours)
    for i in range(1, hours):
        residual[i] = 0.97 * residual[i - 1] + rng.normal(0, 0.3)
    hour = np.arange(hours) % 24
    return np.column_stack([residual, np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)]).astype(np.float32)


def _config(**overrides) -> ResidualConfig:
    base = {"hidden_size": 16, "max_epochs": 8, "patience": 3, "batch_size": 64, "learning_rate": 5e-3, "device": "cpu",
                "lookback_hours": 48, "horizon_hours": 12, "loss": "mse"}
    return ResidualConfig(**(base | overrides))


def test_residual_lstm__learns_persistence_better_than_zero():
    series = _ar_series()
    origins = valid_origins(np.ones(len(series), bool), 48, 12)
    train, val = origins[origins < 900], origins[origins >= 912]
    model = ResidualLSTM(_config(), series.shape[1]).fit(series, train, val)
    predicted = model.predict(series, val)
    actual = series[val[:, None] + np.arange(12), 0]
    assert np.mean((predicted - actual) ** 2) < 0.6 * np.mean(actual**2)


def test_residual_lstm__reports_each_epoch_and_keeps_best_weights():
    series = _ar_series()
    origins = valid_origins(np.ones(len(series), bool), 48, 12)
    reports = []
    model = ResidualLSTM(_config(max_epochs=4, patience=10), series.shape[1])
    model.fit(series, origins[:600], origins[-200:], callbacks=[lambda r, m: reports.append(r)])
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert model.best_val_loss == min(r.val_loss for r in reports)
    assert all(r.best_val_loss == min(x.val_loss for x in reports[: r.epoch]) for r in reports)


def test_residual_lstm__same_seed_same_weights():
    series = _ar_series()
    origins = valid_origins(np.ones(len(series), bool), 48, 12)
    first = ResidualLSTM(_config(max_epochs=2), 3).fit(series, origins[:300], origins[-100:])
    second = ResidualLSTM(_config(max_epochs=2), 3).fit(series, origins[:300], origins[-100:])
    for key, value in first.state_dict().items():
        assert (value == second.state_dict()[key]).all()


def test_valid_origins__skip_windows_touching_a_gap():
    valid = np.ones(100, bool)
    valid[50] = False
    origins = valid_origins(valid, lookback=10, horizon=5)
    assert all(not (o - 10 <= 50 < o + 5) for o in origins)
    assert 46 not in origins and 60 not in origins and 45 in origins and 61 in origins


def test_residual_lstm__a_warm_start_that_hurts_is_dropped_for_zero_output():
    # A rolling refit starts from weights that forecast the opposite of what happens (a trained net with its
    # output layers negated); one tiny step cannot repair them, so adding nothing must win on validation.
    series = _ar_series()
    origins = valid_origins(np.ones(len(series), bool), 48, 12)
    train, val = origins[:900], origins[-200:]
    good = ResidualLSTM(_config(), 3).fit(series, train, val)
    assert good.kept
    wrong = {k: -v if k.startswith(("head.3.", "highway.")) else v for k, v in good.state_dict().items()}
    refit = ResidualLSTM(_config(max_epochs=1, learning_rate=1e-7), 3).fit(series, train, val, init_state=wrong)
    assert not refit.kept
    np.testing.assert_array_equal(refit.predict(series, val), 0.0)
    actual = series[val[:, None] + np.arange(12), 0]
    np.testing.assert_allclose(refit.best_val_loss, np.mean(actual.astype(np.float64) ** 2), rtol=1e-5)


def test_residual_lstm__min_gain_drops_a_net_that_helps_too_little():
    series = _ar_series()
    origins = valid_origins(np.ones(len(series), bool), 48, 12)
    helped = ResidualLSTM(_config(max_epochs=3), 3).fit(series, origins[:900], origins[-200:])
    assert helped.kept and np.abs(helped.predict(series, origins[-200:])).max() > 0
    strict = ResidualLSTM(_config(max_epochs=3, min_gain=0.95), 3).fit(series, origins[:900], origins[-200:])
    assert not strict.kept
    np.testing.assert_array_equal(strict.predict(series, origins[-200:]), 0.0)

    # Weights trained elsewhere (a Ray Tune trial's checkpoint) get the same check.
    loaded = ResidualLSTM(_config(min_gain=0.95), 3).load_state_dict(helped.state_dict())
    loaded.best_val_loss = helped.best_val_loss
    assert not loaded.keep_if_better(series, origins[-200:])
    np.testing.assert_array_equal(loaded.predict(series, origins[-200:]), 0.0)
    relaxed = ResidualLSTM(_config(min_gain=0.0), 3).load_state_dict(helped.state_dict())
    relaxed.best_val_loss = helped.best_val_loss
    assert relaxed.keep_if_better(series, origins[-200:])
    np.testing.assert_array_equal(relaxed.predict(series, origins[-200:]), helped.predict(series, origins[-200:]))
