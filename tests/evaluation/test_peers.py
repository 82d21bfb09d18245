"""Backtest peers: shapes, sanity against naive, and no reading of load at or after an origin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.evaluation.peers import PEERS


@pytest.mark.parametrize("name", ["ridge_residual", "lightgbm", "mstl"])
def test_peers__forecast_shape_and_no_leakage(name, synthetic_hourly):
    pytest.importorskip({"lightgbm": "lightgbm", "mstl": "statsforecast"}.get(name, "sklearn"))
    peer = PEERS[name]
    frame = synthetic_hourly.frame
    positions = np.array([len(frame) - 72, len(frame) - 48])
    train = synthetic_hourly.window(end=frame.index[positions[0]])
    forecast = peer(train, frame, positions, 24)
    assert forecast.shape == (2, 24) and np.isfinite(forecast).all()
    actual = frame["load"].to_numpy()[positions[:, None] + np.arange(24)]
    assert np.mean(np.abs(forecast - actual) / actual) < 0.08
    changed = frame.copy()
    changed.iloc[positions[0]:, changed.columns.get_loc("load")] *= 2.0
    again = peer(train, changed, positions[:1], 24)
    np.testing.assert_allclose(again, forecast[:1])


@pytest.mark.parametrize("name", ["ridge_residual", "lightgbm", "mstl"])
def test_peers__forecast_from_a_short_history(name, synthetic_hourly):
    # Seven weeks before the origin (the ridge peer builds on the hybrid, which needs 43 days): less than
    # the 8 weeks the MSTL peer reads, which once sliced from the end of the array and crashed statsforecast.
    pytest.importorskip({"lightgbm": "lightgbm", "mstl": "statsforecast"}.get(name, "sklearn"))
    frame = synthetic_hourly.frame
    positions = np.array([24 * 7 * 7])
    train = synthetic_hourly.window(end=frame.index[positions[0]])
    forecast = PEERS[name](train, frame, positions, 24)
    actual = frame["load"].to_numpy()[positions[0] : positions[0] + 24]
    assert np.isfinite(forecast).all()
    assert np.mean(np.abs(forecast[0] - actual) / actual) < 0.08


def test_configs__shipped_yaml_files_validate():
    from pathlib import Path

    from stef_ray.config import TrainConfig
    from stef_ray.config_loading import load_config, read_yaml
    from stef_ray.fleet import load_fleet

    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "configs").glob("*.yaml")):
        fleet = "series" in read_yaml(path)  # a fleet file: many series' data sections and a shared model
        config = load_fleet(path) if fleet else load_config(TrainConfig, path)
        assert config.model.forecast.horizon_hours == 24, path
    assert pd.Timestamp("2017-01-01")  # the PJM protocol year parses
