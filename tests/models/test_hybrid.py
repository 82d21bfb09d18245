from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.config import DataConfig, ModelConfig, ResidualConfig, SeasonalityConfig
from stef_ray.data import frame_to_hourly
from stef_ray.exceptions import InsufficientHistoryError
from stef_ray.models.hybrid import HybridModel
from stef_ray.spec import ForecastSpec


def test_hybrid__components_add_up_to_the_forecast(fitted_model, synthetic_hourly):
    frame = synthetic_hourly.frame
    positions = np.array([len(frame) - 48, len(frame) - 24])
    mw = fitted_model.to_megawatts(fitted_model.predict_components(frame, positions))
    np.testing.assert_allclose(mw["trend"] + mw["seasonality"] + mw["residual"], mw["forecast"], rtol=1e-12)
    assert mw["forecast"].shape == (2, 24)
    assert (mw["p10"] <= mw["p50"]).all() and (mw["p50"] <= mw["p90"]).all()


def test_hybrid__forecast_reads_no_load_at_or_after_its_origin(fitted_model, synthetic_hourly):
    frame = synthetic_hourly.frame.copy()
    position = len(frame) - 24
    before = fitted_model.predict_components(frame, np.array([position])).final
    frame.iloc[position:, frame.columns.get_loc("load")] *= 3.0  # the future changes wildly
    after = fitted_model.predict_components(frame, np.array([position])).final
    np.testing.assert_array_equal(before, after)


def test_hybrid__beats_seasonal_naive_on_synthetic_data(synthetic_hourly):
    config = ModelConfig(residual=ResidualConfig(enabled=True, hidden_size=16, max_epochs=6, validation_days=7,
                                                 validation_blocks=2, device="cpu"))
    train = synthetic_hourly.window(end=synthetic_hourly.frame.index[-24 * 7])
    model = HybridModel(config, synthetic_hourly.exog).fit(train)
    frame = synthetic_hourly.frame
    positions = np.arange(len(frame) - 24 * 7, len(frame) - 23, 24)
    forecast = model.to_megawatts(model.predict_components(frame, positions))["forecast"]
    actual = frame["load"].to_numpy()[positions[:, None] + np.arange(24)]
    naive = frame["load"].to_numpy()[positions[:, None] + np.arange(24) - 168]
    mape = np.mean(np.abs(forecast - actual) / actual)
    # AR(1) noise of ~1.7 % leaves little to predict a day ahead; the hybrid must still clearly win.
    assert mape < 0.85 * np.mean(np.abs(naive - actual) / actual)
    assert mape < 0.02


def test_hybrid__too_little_history_is_a_clear_error(synthetic_frame, tiny_model_config):
    short = frame_to_hourly(synthetic_frame.iloc[: 24 * 10], DataConfig())
    with pytest.raises(InsufficientHistoryError, match="hours of load to train on"):
        HybridModel(tiny_model_config).fit(short)


def test_hybrid__residual_disabled_still_calibrates_quantiles(synthetic_hourly):
    config = ModelConfig(residual=ResidualConfig(enabled=False, linear=False, validation_days=7), point_forecast="median")
    model = HybridModel(config, synthetic_hourly.exog).fit(synthetic_hourly)
    assert model.neural is None and set(model.quantile_offsets) == {"0.1", "0.5", "0.9"}
    assert "point_log_adjust" not in model.training  # point_forecast: median
    frame = synthetic_hourly.frame
    mw = model.to_megawatts(model.predict_components(frame, np.array([len(frame) - 24])))
    np.testing.assert_allclose(mw["residual"], 0.0, atol=1e-9)


def test_hybrid__mape_point_forecast_is_the_median_moved_down_by_the_squared_spread(fitted_model, synthetic_hourly):
    frame = synthetic_hourly.frame
    components = fitted_model.predict_components(frame, np.array([len(frame) - 48, len(frame) - 24]))
    components.interval_scale = np.array([1.0, 1.5])  # a spell of large errors widens, and moves, the second
    mw = fitted_model.to_megawatts(components)
    # -s² per lead hour (s: see the calibration test below), times the interval scale squared.
    adjust = np.asarray(fitted_model.training.point_log_adjust)
    assert adjust.shape == (24,) and (adjust < 0).all()
    median = np.exp(components.final)
    np.testing.assert_allclose(mw["forecast"], median * np.exp(np.array([[1.0], [2.25]]) * adjust), rtol=1e-12)
    assert (mw["forecast"] < median).all()
    # The move is the residual's share.
    np.testing.assert_allclose(mw["trend"] + mw["seasonality"] + mw["residual"], mw["forecast"], rtol=1e-12)
    # A bundle from before (or `point_forecast: median`) records no move: the forecast is the median.
    adjust_kept, fitted_model.training.point_log_adjust = fitted_model.training.point_log_adjust, None
    try:
        before = fitted_model.to_megawatts(components)
    finally:
        fitted_model.training.point_log_adjust = adjust_kept
    np.testing.assert_allclose(before["forecast"], median, rtol=1e-12)
    # A degraded Serve answer (no residual) asks for the median too.
    np.testing.assert_allclose(fitted_model.to_megawatts(components, point_move=False)["forecast"], median, rtol=1e-12)
    for column in ("p10", "p50", "p90", "trend", "seasonality"):  # the quantiles stay where they were
        np.testing.assert_array_equal(before[column], mw[column])


def _afternoon_noise_data(seed: int = 2):
    """Synthetic load whose noise is four times larger from 12:00 to 17:00 than at other hours."""
    from stef_ray.data.synthetic import synthetic_load

    frame = synthetic_load(hours=24 * 70, seed=seed, noise=0.002)
    hours = pd.DatetimeIndex(frame["timestamp"]).hour
    noise = np.random.default_rng(seed).normal(0, 0.01, len(frame)) * np.where((hours >= 12) & (hours < 18), 4, 1)
    frame["load"] = frame["load"] * np.exp(noise)
    return frame_to_hourly(frame, DataConfig(exog=["temperature", "workday"]))


def test_hybrid__quantile_bands_are_calibrated_per_origin_hour_around_a_pooled_centre():
    # A 00:00 origin's lead 15 is 14:00 (noisy), a 12:00 origin's lead 15 is 02:00 (quiet): per origin hour
    # their P10-P90 bands differ by about the noise ratio; pooled (width -1) they are one band.
    data = _afternoon_noise_data()
    models = {}
    for width in (2, -1):
        config = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=14), calibration_hour_width=width)
        models[width] = HybridModel(config, data.exog).fit(data)
    frame = data.frame
    midnight = np.flatnonzero(frame.index.hour == 0)[-3]
    positions = np.array([midnight, midnight + 12])  # 00:00 and 12:00 origins
    per_hour, pooled = (models[w].to_megawatts(models[w].predict_components(frame, positions)) for w in (2, -1))
    lead_15 = 14
    band = np.log(per_hour["p90"] / per_hour["p10"])[:, lead_15]
    assert band[0] > 2 * band[1]
    assert np.asarray(models[2].quantile_offsets["0.1"]).shape == (24, 24)
    assert np.asarray(models[-1].quantile_offsets["0.1"]).shape == (24,)
    pooled_band = np.log(pooled["p90"] / pooled["p10"])[:, lead_15]
    assert pooled_band[0] / pooled_band[1] == pytest.approx(1.0, abs=0.2)  # only the interval scale differs
    # The centre and the point move stay pooled: the same P50 and forecast either way.
    np.testing.assert_allclose(per_hour["p50"], pooled["p50"], rtol=1e-12)
    np.testing.assert_allclose(per_hour["forecast"], pooled["forecast"], rtol=1e-12)
    # The point move: -s², s the pooled validation errors' P10-P90 width read as a normal's (2.5631 sigmas).
    offsets = {key: np.asarray(value) for key, value in models[-1].quantile_offsets.items()}
    adjust = -(((offsets["0.9"] - offsets["0.1"]) / 2.5631) ** 2)
    for model in models.values():
        np.testing.assert_allclose(model.training.point_log_adjust, adjust, rtol=1e-9)


def test_hybrid__linear_residual_alone_beats_trend_and_fourier():
    # Persistent deviations (AR 0.98 per hour) are what a residual model can carry into the next day.
    from stef_ray.data.synthetic import synthetic_load

    data = frame_to_hourly(synthetic_load(hours=24 * 120, seed=4, ar_coefficient=0.98, noise=0.004),
                           DataConfig(exog=["temperature", "workday"]))
    config = ModelConfig(residual=ResidualConfig(enabled=False, linear=True, validation_days=7))
    model = HybridModel(config, data.exog).fit(data.window(end=data.frame.index[-24 * 14]))
    frame = data.frame
    positions = np.arange(len(frame) - 24 * 14, len(frame) - 23, 24)
    components = model.predict_components(frame, positions)
    actual = np.log(frame["load"].to_numpy()[positions[:, None] + np.arange(24)])
    base_error = np.mean(np.abs(components.trend + components.seasonality - actual))
    assert np.mean(np.abs(components.final - actual)) < 0.8 * base_error
    assert model.linear is not None and model.neural is None


def _record_linear_fits(monkeypatch) -> list[tuple[np.ndarray, np.ndarray | None]]:
    from stef_ray.models.residual_linear import LinearResidual

    fits: list[tuple[np.ndarray, np.ndarray | None]] = []
    real_fit = LinearResidual.fit
    monkeypatch.setattr(LinearResidual, "fit", lambda self, series, origins, weight=None:
                        fits.append((origins, weight)) or real_fit(self, series, origins, weight))
    return fits


@pytest.mark.parametrize("neural", [True, False])
def test_hybrid__each_fold_is_forecast_by_ridges_fitted_on_the_windows_before_it(synthetic_hourly, monkeypatch, neural):
    # Walking forward: no window a fold's ridges learnt from is later than, or shares a row (history or
    # target) with, a window they forecast. With the neural residual, every window of the fold needs that
    # forecast (the net's targets); without it, only the validation blocks. A fold with too little history
    # before it is left out. The served ridges come last, on every window of their span.
    from stef_ray.models.crossfit import GAP, VALID
    from stef_ray.models.linear_layers import MIN_FORWARD_DAYS

    fits = _record_linear_fits(monkeypatch)
    config = ModelConfig(residual=ResidualConfig(enabled=neural, validation_days=5, max_epochs=1, boosted_weight=0,
                                                 linear_train_days=50))
    model = HybridModel(config, synthetic_hourly.exog)
    _, season_log, residual_log = model.fit_base(synthetic_hourly)
    windows = model.residual_windows(synthetic_hourly, season_log, residual_log)
    model.cross_fit(windows, synthetic_hourly.frame.index)
    plan = windows.plan
    fitted_folds = [k for k in range(plan.folds) if (plan.role[plan.fold == k] != GAP).any()]
    assert len(fits) == len(fitted_folds) >= 2 and plan.folds == 4
    window_rows = 168 + 24 - 1  # two windows closer than this share a row
    for (fit_on, _), k in zip(fits, fitted_folds, strict=True):
        forecast = plan.origins[(plan.fold == k) & ((plan.role == VALID) | neural)]
        assert (forecast[:, None] - fit_on[None, :]).min() > window_rows  # all before, none sharing a row
        assert len(fit_on) >= 24 * MIN_FORWARD_DAYS and np.isin(fit_on, windows.linear_origins).all()
    skipped = [k for k in range(plan.folds) if k not in fitted_folds]
    assert skipped == list(range(len(skipped)))  # only the first folds lack the history
    scored = (plan.role == VALID) if not neural else (plan.role != GAP)
    assert (windows.out_of_fold[scored] != 0).any(axis=1).all()
    model._fit_served_linear(windows)
    np.testing.assert_array_equal(fits[-1][0], windows.linear_origins)
    assert windows.linear_origins[0] >= len(synthetic_hourly.frame) - 24 - 50 * 24


def test_hybrid__calibration_reads_the_out_of_fold_errors_of_the_validation_blocks(synthetic_hourly):
    from stef_ray.models.crossfit import VALID

    config = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=5, boosted_weight=0),
                         calibration_hour_width=-1, point_forecast="median")
    model = HybridModel(config, synthetic_hourly.exog)
    _, season_log, residual_log = model.fit_base(synthetic_hourly)
    windows = model.residual_windows(synthetic_hourly, season_log, residual_log)
    model.cross_fit(windows, synthetic_hourly.frame.index)
    model._fit_served_linear(windows)
    model.calibrate(windows)
    rows = windows.plan.role == VALID
    origins = windows.plan.origins[rows]
    errors = model._unscale(windows.targets(origins, model.horizon)) - model._unscale(windows.out_of_fold[rows].astype(np.float64))
    np.testing.assert_allclose(model.quantile_offsets["0.9"], np.quantile(errors, 0.9, axis=0))
    # Not the served ridges' errors there: they learnt those windows.
    in_sample = model._unscale(windows.targets(origins, model.horizon)) - model._predict_residual_log(windows.series, origins)
    assert np.abs(in_sample).mean() < np.abs(errors).mean()


def test_hybrid__trees_take_boosted_weight_of_the_ridges_residual_forecast(synthetic_hourly):
    # Without the cross-validation, which leaves this winter fixture's temperature out (and the trees with it).
    config = ModelConfig(seasonality=SeasonalityConfig(cross_validate=False),
                         residual=ResidualConfig(enabled=False, validation_days=7, boosted_weight=0.3,
                                                 boosted_iterations=30))
    model = HybridModel(config, synthetic_hourly.exog).fit(synthetic_hourly)
    frame = synthetic_hourly.frame
    positions = np.array([len(frame) - 72, len(frame) - 24])
    trend_log, season_log = model.base_components(frame)
    series = np.nan_to_num(model.residual_series(frame, np.log(frame["load"].to_numpy()) - trend_log - season_log, season_log))
    ridges, trees = model.linear.predict(series, positions), model.boosted.predict(series, positions)
    assert np.abs(ridges - trees).mean() > 0.01  # two different opinions, so the blend below is a real check
    expected = (0.7 * ridges + 0.3 * trees) * model.scaler["residual_std"] + model.scaler["residual_mean"]
    np.testing.assert_allclose(model.predict_components(frame, positions).residual, expected, rtol=1e-9)


@pytest.mark.parametrize(("weight", "lookback", "exog", "why"), [
    (0.0, 168, ["temperature", "workday"], None),
    (0.2, 48, ["temperature", "workday"], "lookback_hours 48 < 168"),
    (0.2, 168, ["workday"], "no non-binary exogenous input"),
])
def test_hybrid__trees_only_at_a_share_with_a_week_of_lookback_and_weather(synthetic_frame, weight, lookback, exog, why):
    data = frame_to_hourly(synthetic_frame, DataConfig(exog=exog))
    config = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=7, boosted_weight=weight),
                         forecast=ForecastSpec(lookback_hours=lookback))
    model = HybridModel(config, data.exog).fit(data)
    assert model.boosted is None and model.linear is not None
    assert model.training.boosted is None if why is None else why in model.training.boosted


@pytest.mark.parametrize("kept", [True, False])
def test_hybrid__a_dropped_neural_residual_is_not_run_and_changes_nothing(synthetic_hourly, monkeypatch, kept):
    from stef_ray.models.residual_neural import NeuralResidual

    config = ModelConfig(residual=ResidualConfig(enabled=True, validation_days=5, validation_blocks=2, max_epochs=1,
                                                 boosted_weight=0.0))
    model = HybridModel(config, synthetic_hourly.exog).fit(synthetic_hourly)
    model.training.neural.kept = kept
    torch = pytest.importorskip("torch")
    with torch.no_grad():  # non-zero last layers, as trained weights have
        model.neural.nets[0].highway.bias.fill_(0.1)
    frame, positions = synthetic_hourly.frame, np.array([len(synthetic_hourly.frame) - 24])
    with_net = model.predict_components(frame, positions).residual
    calls = []
    real_predict = NeuralResidual.predict
    monkeypatch.setattr(NeuralResidual, "predict", lambda self, *a: calls.append(1) or real_predict(self, *a))
    neural, model.neural = model.neural, None
    without = model.predict_components(frame, positions).residual
    model.neural = neural
    again = model.predict_components(frame, positions).residual
    np.testing.assert_array_equal(again, with_net)
    assert bool(calls) is kept
    assert np.array_equal(again, without) is not kept


def test_hybrid__the_gate_keeps_a_neural_residual_that_helps_and_records_why():
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
    assert not strict.training.neural.kept and not strict.neural_kept
    assert "dropped by the validation blocks" in strict.residual_summary()


def test_hybrid__training_summary_is_recorded(fitted_model):
    training = fitted_model.training
    assert training.hours == 24 * 60 and training.fourier_orders == [3, 7, 0]
    assert training.neural.epochs_run >= 1 and np.isfinite(training.neural.stop_loss)
    assert len(training.validation.blocks) >= 2
    assert pd.Timestamp(training.start) < pd.Timestamp(training.end)


def test_hybrid__interval_scale_widens_after_days_of_large_errors(fitted_model, synthetic_hourly):
    frame = synthetic_hourly.frame.copy()
    position = len(frame) - 24
    calm = fitted_model.predict_components(frame, np.array([position]))
    # The week before the origin turns erratic (outside the lookback's last day, which the forecast
    # itself reads): past forecasts miss by far more than on validation, so the band must widen.
    rows = np.arange(position - 24 * 7, position - 24)
    frame.iloc[rows, frame.columns.get_loc("load")] *= np.where(np.arange(len(rows)) % 2, 1.15, 0.85)
    stormy = fitted_model.predict_components(frame, np.array([position]))
    low, high = fitted_model.config.interval_scale_range
    assert calm.interval_scale[0] >= low
    assert stormy.interval_scale[0] == pytest.approx(high)
    calm_mw, stormy_mw = fitted_model.to_megawatts(calm), fitted_model.to_megawatts(stormy)
    calm_width = np.log(calm_mw["p90"] / calm_mw["p10"])
    stormy_width = np.log(stormy_mw["p90"] / stormy_mw["p10"])
    np.testing.assert_allclose(stormy_width, calm_width * high / calm.interval_scale[0], rtol=1e-9)


def test_hybrid__interval_scale_is_one_without_enough_history_or_when_off(fitted_model, synthetic_hourly):
    frame = synthetic_hourly.frame
    short = frame.iloc[-(fitted_model.lookback + 24) :]
    assert fitted_model.predict_components(short, np.array([fitted_model.lookback])).interval_scale[0] == 1.0
    off = HybridModel(fitted_model.config.model_copy(update={"interval_adapt_days": 0}), fitted_model.exog)
    off.__dict__.update({k: v for k, v in fitted_model.__dict__.items() if k != "config"})
    assert off.predict_components(frame, np.array([len(frame) - 24])).interval_scale[0] == 1.0


def test_hybrid__calibration_records_the_validation_error_scale(fitted_model):
    assert 0 < fitted_model.training.val_mean_abs_log_error < 0.1


def test_hybrid__linear_model_weights_its_windows_by_season_given_the_years(synthetic_hourly, monkeypatch):
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


def test_hybrid__an_input_the_seasonality_leaves_out_is_a_zero_channel_for_the_residual_models():
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
    channels = model.channel_names
    assert np.all(series[:, channels.index("wander")] == 0)
    assert series[:, channels.index("temperature")].std() > 0.5
    # So the forecast does not move with it.
    origins = np.array([len(frame) - 48, len(frame) - 24])
    moved = frame.assign(wander=frame["wander"] + 5.0)
    np.testing.assert_allclose(model.predict_components(moved, origins).final,
                               model.predict_components(frame, origins).final)


def test_hybrid__no_trees_when_the_cross_validation_leaves_out_every_weather_input():
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
    assert model.boosted is None
    assert model.training.boosted.startswith("off: the seasonality's cross-validation left out every weather")
