"""Writes tests/golden/bundle_v<N> and its expected forecast, N the bundle format this stef_ray writes. Run it
once per new format version, with the code of that version, and commit both; the test suite then checks
that every later stef_ray still loads each and forecasts the same numbers (tests/test_bundle.py).

    python tests/golden/make_golden.py

Formats 2 to 8 were written by the commits that introduced them, with this script (PYTHONPATH=<a checkout
of that commit>). bundle_v1 came from the first version of this script (history: its last 200 rows).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from stef_ray.bundle import FORMAT_VERSION, save_bundle
from stef_ray.config import DataConfig, ModelConfig, ResidualConfig
from stef_ray.data import frame_to_hourly
from stef_ray.data.synthetic import synthetic_load
from stef_ray.forecasting import forecast_from_frames
from stef_ray.models.hybrid import HybridModel

HERE = Path(__file__).parent
HISTORY_ROWS = 776  # the test forecasts from the same rows: enough for every format's smoothing warm-up

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    torch.manual_seed(0)
    data = frame_to_hourly(synthetic_load(hours=24 * 60, seed=1), DataConfig(exog=["temperature", "workday"]))
    wanted = {"enabled": True, "hidden_size": 8, "max_epochs": 2, "patience": 2, "validation_days": 7,
              "validation_blocks": 2, "batch_size": 256, "device": "cpu", "window_stride_hours": 2}
    fields = ResidualConfig.model_fields  # the settings each format's code had
    config = ModelConfig(residual=ResidualConfig(**{k: v for k, v in wanted.items() if k in fields}))
    model = HybridModel(config, data.exog).fit(data)
    save_bundle(model, out / f"bundle_v{FORMAT_VERSION}", DataConfig(exog=data.exog))
    history = data.frame.iloc[-(HISTORY_ROWS + 24):-24]
    result = forecast_from_frames(model, history, data.frame.iloc[-24:]).frame
    (out / f"bundle_v{FORMAT_VERSION}_forecast.json").write_text(json.dumps({"forecast": result["forecast"].tolist()}))
