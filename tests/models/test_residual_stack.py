"""The residual stack (``models/residual_stack.py``): ridges cross-fitted walking forward, trees beside them
where there is weather, the neural residual kept only when the validation days say it helps, and what each
sees of the seasonality's choices. Fitted through the hybrid, as it is in use."""

from __future__ import annotations

import numpy as np
import pytest

from stef_ray.config import DataConfig, ModelConfig, ResidualConfig, SeasonalityConfig
from stef_ray.data import frame_to_hourly
from stef_ray.models.hybrid import HybridModel
from stef_ray.spec import ForecastSpec


def _trend_and_seasonality_fitted(config: ModelConfig, data) -> tuple[HybridModel, np.ndarray, np.ndarray]:
    """A hybrid with trend and seasonality fitted on ``data``, and the log seasonality and residual the
    residual stack is fitted on."""
    model = HybridModel(config, data.exog)
    _, season_log, residual_log = model.fit_base(data)
    return model, season_log, residual_log


def _record_linear_fits(monkeypatch) -> list[tuple[np.ndarray, np.ndarray | None]]:
    from stef_ray.models.residual_linear import LinearResidual

    fits: list[tuple[np.ndarray, np.ndarray | None]] = []
    real_fit = LinearResidual.fit
    monkeypatch.setattr(LinearResidual, "fit", lambda self, series, origins, weight=None:
                        fits.append((origins, weight)) or real_fit(self, series, origins, weight))
    return fits


@pytest.mark.parametrize("neural", [True, False])
def test_residual_stack__each_fold_is_forecast_by_ridges_fitted_on_the_windows_before_it(synthetic_hourly, monkeypatch, neural):
    # Walking forward: no window a fit's ridges learnt from is later than, or shares a row (history or
    # target) with, a window they forecast. Each validation block is forecast by ridges fitted on everything
    # before the block (as fresh as the served ones). With the neural residual, each whole fold is forecast
    # too, by ridges fitted before the fold: the errors the net learns from on the fold's other windows.
    # A block or fold with too little history before it is left out. The served ridges come last.
    from stef_ray.models.crossfit import GAP, VALID
    from stef_ray.models.linear_layers import MIN_FORWARD_DAYS

    fits = _record_linear_fits(monkeypatch)
    config = ModelConfig(residual=ResidualConfig(enabled=neural, validation_days=5, max_epochs=1, boosted_weight=0,
                                                 linear_train_days=50))
    model, season_log, residual_log = _trend_and_seasonality_fitted(config, synthetic_hourly)
    windows = model.residual.plan(synthetic_hourly.frame, season_log, residual_log, model.seasonality.dropped_exog,
                                  model.training)
    model.residual.cross_fit(windows, synthetic_hourly.frame.index, model.training)
    plan = windows.plan
    valid, kept = plan.role == VALID, plan.role != GAP
    block_folds = [k for k in range(plan.folds) if (valid & (plan.fold == k)).any()]
    fold_folds = [k for k in range(plan.folds) if (kept & ~valid & (plan.fold == k)).any()] if neural else []
    assert plan.folds == 4 and len(block_folds) >= 2 and len(fits) == len(block_folds) + len(fold_folds)
    assert block_folds == list(range(plan.folds - len(block_folds), plan.folds))  # only the first lack history
    window_rows = 168 + 24 - 1  # two windows closer than this share a row
    block_fits, fold_fits = fits[: len(block_folds)], fits[len(block_folds) :]
    for (fit_on, _), k in zip(block_fits, block_folds, strict=True):
        block = plan.origins[valid & (plan.fold == k)]
        assert (block[:, None] - fit_on[None, :]).min() > window_rows  # all before, none sharing a row
        assert len(fit_on) >= 24 * MIN_FORWARD_DAYS and np.isin(fit_on, windows.linear_origins).all()
    assert (windows.block_forecast[valid] != 0).any(axis=1).all()
    if not neural:
        assert windows.out_of_fold is windows.block_forecast
    else:
        assert len(fold_folds) >= 1
        for (fit_on, _), k in zip(fold_fits, fold_folds, strict=True):
            fold = plan.origins[plan.fold == k]
            assert (fold[:, None] - fit_on[None, :]).min() > window_rows
            if k in block_folds:  # the block's ridges are fresher: they also saw the fold before the block
                assert block_fits[block_folds.index(k)][0].max() > fit_on.max() + 24 * 7
        assert (windows.out_of_fold[kept & ~valid] != 0).any(axis=1).all()
    model.residual.fit_served(windows)
    np.testing.assert_array_equal(fits[-1][0], windows.linear_origins)
    assert windows.linear_origins[0] >= len(synthetic_hourly.frame) - 24 - 50 * 24


def test_residual_stack__trees_take_boosted_weight_of_the_ridges_residual_forecast(synthetic_hourly):
    # Without the cross-validation, which leaves this winter fixture's temperature out (and the trees with it).
    config = ModelConfig(seasonality=SeasonalityConfig(cross_validate=False),
                         residual=ResidualConfig(enabled=False, validation_days=7, boosted_weight=0.3,
                                                 boosted_iterations=30))
    model = HybridModel(config, synthetic_hourly.exog).fit(synthetic_hourly)
    frame = synthetic_hourly.frame
    positions = np.array([len(frame) - 72, len(frame) - 24])
    trend_log, season_log = model.base_components(frame)
    series = np.nan_to_num(model.residual_series(frame, np.log(frame["load"].to_numpy()) - trend_log - season_log, season_log))
    ridges, trees = model.residual.linear.predict(series, positions), model.residual.boosted.predict(series, positions)
    assert np.abs(ridges - trees).mean() > 0.01  # two different opinions, so the blend below is a real check
    expected = (0.7 * ridges + 0.3 * trees) * model.residual.scaler["residual_std"] + model.residual.scaler["residual_mean"]
    np.testing.assert_allclose(model.predict_components(frame, positions).residual, expected, rtol=1e-9)


@pytest.mark.parametrize(("weight", "lookback", "exog", "why"), [
    (0.0, 168, ["temperature", "workday"], None),
    (0.2, 48, ["temperature", "workday"], "lookback_hours 48 < 168"),
    (0.2, 168, ["workday"], "no non-binary exogenous input"),
])
def test_residual_stack__trees_only_at_a_share_with_a_week_of_lookback_and_weather(synthetic_frame, weight, lookback, exog, why):
    data = frame_to_hourly(synthetic_frame, DataConfig(exog=exog))
    config = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=7, boosted_weight=weight),
                         forecast=ForecastSpec(lookback_hours=lookback))
    model = HybridModel(config, data.exog).fit(data)
    assert model.residual.boosted is None and model.residual.linear is not None
    assert model.training.boosted is None if why is None else why in model.training.boosted


@pytest.mark.parametrize("kept", [True, False])
def test_residual_stack__a_dropped_neural_residual_is_not_run_and_changes_nothing(synthetic_hourly, monkeypatch, kept):
    from stef_ray.models.residual_neural import NeuralResidual

    config = ModelConfig(residual=ResidualConfig(enabled=True, validation_days=5, validation_blocks=2, max_epochs=1,
                                                 boosted_weight=0.0))
    model = HybridModel(config, synthetic_hourly.exog).fit(synthetic_hourly)
    model.training.neural.kept = model.residual.neural_kept = kept
    torch = pytest.importorskip("torch")
    with torch.no_grad():  # non-zero last layers, as trained weights have
        model.residual.neural.nets[0].highway.bias.fill_(0.1)
    frame, positions = synthetic_hourly.frame, np.array([len(synthetic_hourly.frame) - 24])
    with_net = model.predict_components(frame, positions).residual
    calls = []
    real_predict = NeuralResidual.predict
    monkeypatch.setattr(NeuralResidual, "predict", lambda self, *a: calls.append(1) or real_predict(self, *a))
    neural, model.residual.neural = model.residual.neural, None
    without = model.predict_components(frame, positions).residual
    model.residual.neural = neural
    again = model.predict_components(frame, positions).residual
    np.testing.assert_array_equal(again, with_net)
    assert bool(calls) is kept
    assert np.array_equal(again, without) is not kept


def test_residual_stack__the_gate_keeps_a_neural_residual_that_helps_and_records_why():
    # Spells that last days (as weather's do) on top of synthetic load: without ridges the net alone faces
    # their persistence, which it learns, a clear paired gain on the validation days. With `gate_z` out of
    # reach the same net is dropped, and the forecast says so.
    from stef_ray.data.synthetic import synthetic_load

    synthetic_frame = synthetic_load(hours=24 * 240, seed=1)
    rng = np.random.default_rng(7)
    spell = np.zeros(len(synthetic_frame))
    for i in range(1, len(spell)):
        spell[i] = 0.995 * spell[i - 1] + rng.normal(0, 0.004)
    data = frame_to_hourly(synthetic_frame.assign(load=synthetic_frame["load"] * np.exp(spell)),
                           DataConfig(exog=["temperature", "workday"]))
    config = ModelConfig(residual=ResidualConfig(enabled=True, linear=False, validation_days=5, max_epochs=10, hidden_size=16,
                                                 batch_size=16, learning_rate=5e-3, patience=10, device="cpu"))
    said: list[str] = []
    model = HybridModel(config, data.exog).fit(data, on_stage=said.append)
    neural = model.training.neural
    assert neural.kept and neural.gain > neural.gain_se > 0 and neural.days >= 10
    assert neural.mae_with < neural.mae_without
    assert any(line.startswith("  gate: kept") for line in said)
    assert "neural residual (LSTM)" in model.residual_summary()

    config.residual.gate_z = 1e6
    strict = HybridModel(config, data.exog).fit(data)
    assert not strict.training.neural.kept and not strict.residual.neural_kept
    assert "dropped by the validation blocks" in strict.residual_summary()


def test_residual_stack__linear_model_weights_its_windows_by_season_given_the_years(synthetic_hourly, monkeypatch):
    # The served ridges weight their windows toward the season the forecasts are in (the end of the data);
    # each fold's ridges toward that fold's (here: its validation block's) middle.
    from stef_ray.features import season_weights

    fits = _record_linear_fits(monkeypatch)
    residual = ResidualConfig(enabled=False, validation_days=5, linear_season_days=10, linear_season_min_years=0,
                              boosted_weight=0)
    model = HybridModel(ModelConfig(residual=residual), synthetic_hourly.exog).fit(synthetic_hourly)
    index = synthetic_hourly.frame.index
    *folds, (served_on, served_weight) = fits
    np.testing.assert_allclose(served_weight, season_weights(index[served_on], index[-1], 10))
    assert served_weight[-1] > 0.99 and served_weight[0] < 0.01  # 60 days: the first weeks count little
    fold_on, fold_weight = folds[0]
    assert fold_weight is not None and not np.allclose(fold_weight, season_weights(index[fold_on], index[-1], 10))
    assert model.training.linear_season_weighting.startswith("on")

    fits.clear()  # 60 days are fewer than the years asked for: equal weights
    residual.linear_season_min_years = 2
    said: list[str] = []
    model = HybridModel(ModelConfig(residual=residual), synthetic_hourly.exog).fit(synthetic_hourly, on_stage=said.append)
    assert all(weight is None for _, weight in fits) and model.training.linear_season_weighting.startswith("off: 0.1 years")
    assert any("day of the year: off: 0.1 years" in line for line in said)  # `stef-ray train` says so


def test_residual_stack__an_input_the_seasonality_leaves_out_is_a_zero_channel_for_the_residual_models():
    from stef_ray.data.synthetic import synthetic_load

    # Summer, so that the cooling response above 20 °C is there to be learnt (the fixture's winter has none).
    synthetic_frame = synthetic_load(hours=24 * 90, start="2020-06-01", seed=1, temperature_effect=0.01)
    rng = np.random.default_rng(4)
    wander = np.zeros(len(synthetic_frame))
    for i in range(1, len(wander)):  # slow and persistent, and unrelated to load
        wander[i] = 0.98 * wander[i - 1] + rng.normal(0, 0.5)
    data = frame_to_hourly(synthetic_frame.assign(wander=wander), DataConfig(exog=["temperature", "wander"]))
    config = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=7, boosted_iterations=30))
    model = HybridModel(config, data.exog).fit(data)
    assert model.seasonality.dropped_exog == ["wander"]
    assert model.training.exog_left_out == ["wander"]
    frame = data.frame
    trend_log, season_log = model.base_components(frame)
    series = model.residual_series(frame, np.log(frame["load"].to_numpy()) - trend_log - season_log, season_log)
    channels = model.residual.channel_names
    assert np.all(series[:, channels.index("wander")] == 0)
    assert series[:, channels.index("temperature")].std() > 0.5
    # So the forecast does not move with it.
    origins = np.array([len(frame) - 48, len(frame) - 24])
    moved = frame.assign(wander=frame["wander"] + 5.0)
    np.testing.assert_allclose(model.predict_components(moved, origins).final,
                               model.predict_components(frame, origins).final)


def test_residual_stack__no_trees_when_the_cross_validation_leaves_out_every_weather_input():
    # The trees are there to answer weather; with the only weather input left out they would have load and
    # calendar alone, which added noise on PJM (3.199 against 3.174 %), so they are off, and the model says why.
    from stef_ray.data.synthetic import synthetic_load

    frame = synthetic_load(hours=24 * 90, start="2020-06-01", seed=1)
    rng = np.random.default_rng(4)
    wander = np.zeros(len(frame))
    for i in range(1, len(wander)):  # slow and persistent, and unrelated to load
        wander[i] = 0.98 * wander[i - 1] + rng.normal(0, 0.5)
    data = frame_to_hourly(frame.assign(wander=wander), DataConfig(exog=["wander"]))
    config = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=7, boosted_iterations=30))
    model = HybridModel(config, data.exog).fit(data)
    assert model.seasonality.dropped_exog == ["wander"]
    assert model.residual.boosted is None
    assert model.training.boosted.startswith("off: the seasonality's cross-validation left out every weather")


def test_residual_stack__a_dropped_neural_residual_leaves_the_model_as_without_it(synthetic_hourly):
    # The net is judged on the blocks as the ridges without it forecast them: when the gate drops it, the
    # validation blocks, the calibration and so every forecast and quantile are those of the model without it.
    residual = {"validation_days": 5, "validation_blocks": 3, "max_epochs": 2, "boosted_weight": 0.0}
    without = HybridModel(ModelConfig(residual=ResidualConfig(enabled=False, **residual)), synthetic_hourly.exog)
    dropped = HybridModel(ModelConfig(residual=ResidualConfig(enabled=True, gate_z=1e9, **residual)),
                          synthetic_hourly.exog)
    without.fit(synthetic_hourly)
    dropped.fit(synthetic_hourly)
    assert dropped.residual.neural is not None and not dropped.residual.neural_kept
    assert dropped.training.neural.days >= 2 and dropped.training.validation == without.training.validation
    frame = synthetic_hourly.frame
    positions = np.arange(len(frame) - 24 * 6, len(frame) - 23, 24)
    a = without.to_megawatts(without.predict_components(frame, positions))
    b = dropped.to_megawatts(dropped.predict_components(frame, positions))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_residual_stack__the_gate_scores_the_forecasts_issued_at_the_issue_hours(synthetic_hourly):
    # One window per validation day at 00:00 (the default issue hour), not every hour's: the gate's days are
    # the validation days that have a 00:00 origin.
    from stef_ray.models.crossfit import VALID
    from stef_ray.models.residual_linear import origin_hours

    config = ModelConfig(residual=ResidualConfig(enabled=True, validation_days=5, validation_blocks=2, max_epochs=1,
                                                 boosted_weight=0.0))
    model, season_log, residual_log = _trend_and_seasonality_fitted(config, synthetic_hourly)
    windows = model.residual.fit(synthetic_hourly.frame, season_log, residual_log, model.seasonality.dropped_exog,
                                 model.training)
    plan = windows.plan
    scored = (plan.role == VALID) & windows.neural_scored
    midnight = origin_hours(windows.series, plan.origins, model.residual.hour_channels) == 0
    assert 2 <= model.training.neural.days == len(np.unique(windows.days[plan.origins[scored & midnight]]))
    assert model.training.neural.days < scored.sum() / 20  # not every hour's window
