"""Writes tests/golden/bundle_v1 and its expected forecast. Run once per bundle format version; the
test suite then checks that every later stef_ray still loads it and forecasts the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

from stef_ray.bundle import save_bundle
from stef_ray.config import DataConfig, ModelConfig, ResidualConfig
from stef_ray.data import frame_to_hourly
from stef_ray.data.synthetic import synthetic_load
from stef_ray.forecasting import forecast_from_frames
from stef_ray.models.hybrid import HybridModel

HERE = Path(__file__).parent

if __name__ == "__main__":
    data = frame_to_hourly(synthetic_load(hours=24 * 60, seed=1), DataConfig(exog=["temperature", "workday"]))
    config = ModelConfig(residual=ResidualConfig(hidden_size=8, max_epochs=2, patience=2, validation_days=7,
                                                 batch_size=256, device="cpu", window_stride_hours=2))
    model = HybridModel(config, data.exog).fit(data)
    save_bundle(model, HERE / "bundle_v1", DataConfig(exog=data.exog))
    result = forecast_from_frames(model, data.frame.iloc[-200:-24], data.frame.iloc[-24:]).frame
    (HERE / "bundle_v1_forecast.json").write_text(json.dumps({"forecast": result["forecast"].tolist()}))
