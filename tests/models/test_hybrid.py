from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.config import DataConfig, ModelConfig, ResidualConfig
from stef_ray.data import frame_to_hourly
from stef_ray.exceptions import InsufficientHistoryError
from stef_ray.models.hybrid import HybridModel


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
    assert model.residual.neural is None and set(model.quantile_offsets) == {"0.1", "0.5", "0.9"}
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
    assert model.residual.linear is not None and model.residual.neural is None


def test_hybrid__calibration_reads_the_out_of_fold_errors_of_the_validation_blocks(synthetic_hourly):
    from stef_ray.models.crossfit import VALID

    config = ModelConfig(residual=ResidualConfig(enabled=False, validation_days=5, boosted_weight=0),
                         calibration_hour_width=-1, point_forecast="median")
    model = HybridModel(config, synthetic_hourly.exog)
    _, season_log, residual_log = model.fit_base(synthetic_hourly)
    windows = model.residual.plan(synthetic_hourly.frame, season_log, residual_log, model.seasonality.dropped_exog,
                                     model.training)
    model.residual.cross_fit(windows, synthetic_hourly.frame.index, model.training)
    model.residual.fit_served(windows)
    model.calibrate(windows)
    rows = windows.plan.role == VALID
    origins = windows.plan.origins[rows]
    errors = model.residual.unscale(windows.targets(origins, model.horizon)) - model.residual.unscale(windows.out_of_fold[rows].astype(np.float64))
    np.testing.assert_allclose(model.quantile_offsets["0.9"], np.quantile(errors, 0.9, axis=0))
    # Not the served ridges' errors there: they learnt those windows.
    in_sample = model.residual.unscale(windows.targets(origins, model.horizon)) - model.residual.predict(windows.series, origins)
    assert np.abs(in_sample).mean() < np.abs(errors).mean()


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
