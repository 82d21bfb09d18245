from __future__ import annotations

import numpy as np
import pytest

from stef_ray.config import ResidualConfig
from stef_ray.models.residual_neural import NeuralResidual, valid_origins
from stef_ray.spec import ForecastSpec

HOUR_CHANNELS = (1, 2)


def _ar_series(hours: int = 24 * 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    residual = np.zeros(hours)
    for i in range(1, hours):
        residual[i] = 0.97 * residual[i - 1] + rng.normal(0, 0.3)
    hour = np.arange(hours) % 24
    return np.column_stack([residual, np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)]).astype(np.float32)


def _config(**overrides) -> ResidualConfig:
    base = {"hidden_size": 16, "max_epochs": 8, "patience": 3, "batch_size": 64, "learning_rate": 5e-3, "device": "cpu",
            "loss": "mse"}
    return ResidualConfig(**(base | overrides))


SPEC = ForecastSpec(lookback_hours=48, horizon_hours=12)


def _origins(series: np.ndarray) -> np.ndarray:
    return valid_origins(np.ones(len(series), bool), 48, 12)


@pytest.mark.parametrize("architecture", ["lstm", "mlp"])
def test_neural_residual__learns_persistence_better_than_zero(architecture):
    series = _ar_series()
    origins = _origins(series)
    train, stop = origins[origins < 900], origins[origins >= 912]
    model = NeuralResidual(_config(architecture=architecture), SPEC, series.shape[1], HOUR_CHANNELS).fit(series, train, stop)
    predicted = model.predict(series, stop)
    actual = series[stop[:, None] + np.arange(12), 0]
    assert np.mean((predicted - actual) ** 2) < 0.6 * np.mean(actual**2)


def test_neural_residual__learns_what_the_baseline_misses():
    # The baseline already forecasts half of each target: the net learns the other half, not the whole.
    series = _ar_series()
    origins = _origins(series)
    train, stop = origins[:900], origins[-200:]
    target = lambda o: series[o[:, None] + np.arange(12), 0]  # noqa: E731
    model = NeuralResidual(_config(), SPEC, 3, HOUR_CHANNELS).fit(series, train, stop, 0.5 * target(train), 0.5 * target(stop))
    plain = NeuralResidual(_config(), SPEC, 3, HOUR_CHANNELS).fit(series, train, stop)
    assert np.mean(model.predict(series, stop) ** 2) < 0.5 * np.mean(plain.predict(series, stop) ** 2)


def test_neural_residual__reports_each_epoch_of_each_member_and_keeps_best_weights():
    series = _ar_series()
    origins = _origins(series)
    reports = []
    model = NeuralResidual(_config(max_epochs=4, patience=10, ensemble=2), SPEC, series.shape[1], HOUR_CHANNELS)
    model.fit(series, origins[:600], origins[-200:], callbacks=[lambda r, m: reports.append(r)])
    assert [(r.member, r.epoch) for r in reports] == [(m, e) for m in (0, 1) for e in (1, 2, 3, 4)]
    for member in (0, 1):
        mine = [r for r in reports if r.member == member]
        assert all(r.best_val_loss == min(x.val_loss for x in mine[: r.epoch]) for r in mine)
    assert model.best_val_loss == pytest.approx(np.mean([min(r.val_loss for r in reports if r.member == m)
                                                         for m in (0, 1)]))
    assert model.epochs_run == 8 and len(model.nets) == 2


def test_neural_residual__ensemble_averages_its_members():
    series = _ar_series()
    origins = _origins(series)
    pair = NeuralResidual(_config(max_epochs=2, ensemble=2), SPEC, 3, HOUR_CHANNELS).fit(series, origins[:300], origins[-100:])
    first = NeuralResidual(_config(max_epochs=2), SPEC, 3, HOUR_CHANNELS).fit(series, origins[:300], origins[-100:])
    second = NeuralResidual(_config(max_epochs=2, seed=1), SPEC, 3, HOUR_CHANNELS).fit(series, origins[:300], origins[-100:])
    expected = (first.predict(series, origins[-100:]) + second.predict(series, origins[-100:])) / 2
    np.testing.assert_allclose(pair.predict(series, origins[-100:]), expected, rtol=1e-5, atol=1e-6)


def test_neural_residual__same_seed_same_weights():
    series = _ar_series()
    origins = _origins(series)
    first = NeuralResidual(_config(max_epochs=2), SPEC, 3, HOUR_CHANNELS).fit(series, origins[:300], origins[-100:])
    second = NeuralResidual(_config(max_epochs=2), SPEC, 3, HOUR_CHANNELS).fit(series, origins[:300], origins[-100:])
    for key, value in first.state_dict().items():
        assert (value == second.state_dict()[key]).all()


def test_neural_residual__reads_the_origin_hour():
    # Targets that depend on the origin hour alone (+1 from even hours, -1 from odd ones), nothing else:
    # only a net that knows the hour it starts from can learn them.
    hours = 24 * 40
    hour = np.arange(hours) % 24
    series = np.column_stack([np.where(hour % 2 == 0, 1.0, -1.0), np.sin(2 * np.pi * hour / 24),
                              np.cos(2 * np.pi * hour / 24)]).astype(np.float32)
    origins = _origins(series)
    base = np.where((origins % 24) % 2 == 0, 1.0, -1.0)[:, None] * np.ones(12)
    series[:, 0] = 0.0  # no history to read it from
    config = _config(architecture="mlp", max_epochs=30, learning_rate=1e-2, patience=30, hidden_size=32)
    model = NeuralResidual(config, SPEC, 3, HOUR_CHANNELS).fit(series, origins, origins[-100:], -base, -base[-100:])
    assert np.mean(np.abs(model.predict(series, origins[-100:]) - base[-100:])) < 0.2
    # The one-hot input is the origin's local hour, read from the hour channels as the ridges read it.
    import torch

    data, hour_of_row = model._tensors(series)
    _, _, onehot, _ = model._gather(data, hour_of_row, torch.as_tensor(origins[:48]))
    np.testing.assert_array_equal(onehot.argmax(1).numpy(), origins[:48] % 24)


def test_valid_origins__skip_windows_touching_a_gap():
    valid = np.ones(100, bool)
    valid[50] = False
    origins = valid_origins(valid, lookback=10, horizon=5)
    assert all(not (o - 10 <= 50 < o + 5) for o in origins)
    assert 46 not in origins and 60 not in origins and 45 in origins and 61 in origins


def test_neural_residual__a_warm_start_that_hurts_falls_back_to_its_zero_start():
    # A rolling refit starts from weights that forecast the opposite of what happens (a trained net with its
    # output layers negated); one tiny step cannot repair them, and early stopping scores the starting point
    # too, so the refit keeps the warm start only if it is better than where it began.
    series = _ar_series()
    origins = _origins(series)
    train, stop = origins[:900], origins[-200:]
    good = NeuralResidual(_config(), SPEC, 3, HOUR_CHANNELS).fit(series, train, stop)
    wrong = {k: -v if k.split(".", 1)[1].startswith(("head.3.", "highway.")) else v for k, v in good.state_dict().items()}
    refit = NeuralResidual(_config(max_epochs=1, learning_rate=1e-7), SPEC, 3, HOUR_CHANNELS).fit(series, train, stop,
                                                                                            init_state=wrong)
    actual = series[stop[:, None] + np.arange(12), 0].astype(np.float64)
    assert refit.best_val_loss > np.mean(actual**2)  # worse than adding nothing: the gate's job, not this one's


def test_neural_residual__state_round_trip_and_legacy_lstm_weights():
    series = _ar_series()
    origins = _origins(series)
    model = NeuralResidual(_config(max_epochs=1, ensemble=2), SPEC, 3, HOUR_CHANNELS).fit(series, origins[:300], origins[-50:])
    copy = NeuralResidual(_config(ensemble=2), SPEC, 3, HOUR_CHANNELS).load_state_dict(model.state_dict())
    np.testing.assert_array_equal(copy.predict(series, origins[-50:]), model.predict(series, origins[-50:]))
    with pytest.raises(ValueError, match="member"):
        NeuralResidual(_config(), SPEC, 3, HOUR_CHANNELS).load_state_dict(model.state_dict())
    # A bundle before format 7 holds one LSTM's state dict without an origin-hour input.
    legacy = NeuralResidual(_config(), SPEC, 3, HOUR_CHANNELS, origin_hour=False)
    one_net = {k.split(".", 1)[1]: v for k, v in legacy.state_dict().items()}
    NeuralResidual(_config(), SPEC, 3, HOUR_CHANNELS, origin_hour=False).load_state_dict(one_net, members_prefixed=False)
