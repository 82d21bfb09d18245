"""Peer models for the backtest, each given the same information as the hybrid: load up to the origin
and the known future exogenous values. Signature: peer(train, frame, positions, horizon) -> MW array of
shape (origins, horizon), where ``train`` is the data before the current refit block and ``frame`` the
whole series (a peer must read load only before each origin; the backtest's leakage test covers the
built-in models, and each peer here slices by origin explicitly).

- ``ridge_residual``: ridge regression of the next 24 log residuals of trend + Fourier on the last 168
  residuals and the future exogenous values (a plain cousin of the hybrid's per-hour ridges).
- ``lightgbm``: gradient-boosted trees on lags (same hour yesterday and last week, last observed value),
  calendar and exogenous features, direct multi-horizon with the lead hour as a feature (OpenSTEF-style).
- ``mstl``: statsforecast's MSTL (daily + weekly seasonality, ETS trend) on the last eight weeks.

LightGBM and statsforecast are the optional 'peers' extra; a missing one is a one-line error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from stef_ray.config import ModelConfig, ResidualConfig
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import ConfigError
from stef_ray.features import exponential_smoothing, wall_clock_hours

PeerModel = Callable[[HourlyData, pd.DataFrame, np.ndarray, int], np.ndarray]


def ridge_residual(train: HourlyData, frame: pd.DataFrame, positions: np.ndarray, horizon: int) -> np.ndarray:
    from sklearn.linear_model import Ridge

    from stef_ray.models.hybrid import HybridModel

    lookback = 168
    model = HybridModel(ModelConfig(residual=ResidualConfig(enabled=False)), train.exog)
    model.fit_base(train)
    trend_log, season_log = model.base_components(frame)
    residual = np.log(frame[LOAD].to_numpy(dtype=float)) - trend_log - season_log
    exog = frame[train.exog].to_numpy(dtype=float) if train.exog else np.empty((len(frame), 0))

    def features(origins: np.ndarray) -> np.ndarray:
        back = residual[origins[:, None] + np.arange(-lookback, 0)]
        ahead = exog[origins[:, None] + np.arange(horizon)].reshape(len(origins), -1)
        return np.hstack([back, ahead])

    n_train = len(train.frame)
    candidates = np.arange(lookback, n_train - horizon + 1)
    targets = residual[candidates[:, None] + np.arange(horizon)]
    x = features(candidates)
    keep = np.isfinite(x).all(axis=1) & np.isfinite(targets).all(axis=1)
    regression = Ridge(alpha=1.0).fit(x[keep], targets[keep])
    x_test = np.nan_to_num(features(positions))
    ahead = positions[:, None] + np.arange(horizon)
    return np.exp(trend_log[ahead] + season_log[ahead] + regression.predict(x_test))


def _gbm_features(frame: pd.DataFrame, exog: Sequence[str], targets: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """Rows for target hours ``targets`` forecast from ``origins`` (row numbers)."""
    load = frame[LOAD].to_numpy(dtype=float)
    lead = targets - origins
    same_hour_yesterday = np.where(lead <= 24, load[np.maximum(targets - 24, 0)], load[np.maximum(targets - 48, 0)])
    wall = wall_clock_hours(frame.index)
    columns = [
        lead,
        load[origins - 1],
        same_hour_yesterday,
        load[targets - 168],
        np.nanmean(np.stack([load[origins - 24 + k] for k in range(24)]), axis=0),
        wall[targets] % 24,
        ((wall[targets] // 24 + 3) % 7),  # day of week, Monday = 0
        frame.index[targets].dayofyear.to_numpy(),
    ]
    for name in exog:
        values = frame[name].to_numpy(dtype=float)
        columns.append(values[targets])
        if not np.isin(values[np.isfinite(values)], (0.0, 1.0)).all():
            for span in (6, 24, 72):
                columns.append(exponential_smoothing(values, span)[targets])
    return np.column_stack(columns)


def lightgbm_peer(train: HourlyData, frame: pd.DataFrame, positions: np.ndarray, horizon: int) -> np.ndarray:
    try:
        import lightgbm
    except ImportError:
        raise ConfigError("the lightgbm peer needs the 'peers' extra: pip install 'stef-ray[peers]'") from None
    n_train = len(train.frame)
    # Training pairs mimic day-ahead use: each target hour forecast from the origin at its day's start.
    local_hour = (wall_clock_hours(frame.index[:n_train]) % 24).astype(int)
    targets = np.arange(24 * 9, n_train)
    origins = targets - local_hour[targets]
    x = _gbm_features(frame.iloc[:n_train], train.exog, targets, origins)
    y = np.log(frame[LOAD].to_numpy(dtype=float)[targets])
    keep = np.isfinite(y) & np.isfinite(x[:, 1:5]).all(axis=1)
    regressor = lightgbm.LGBMRegressor(n_estimators=400, learning_rate=0.05, num_leaves=31, min_child_samples=20,
                                       subsample=0.8, subsample_freq=1, colsample_bytree=0.8, verbose=-1, seed=0)
    regressor.fit(x[keep], y[keep])
    test_targets = (positions[:, None] + np.arange(horizon)).ravel()
    test_origins = np.repeat(positions, horizon)
    x_test = _gbm_features(frame, train.exog, test_targets, test_origins)
    return np.exp(regressor.predict(x_test)).reshape(len(positions), horizon)


MSTL_HISTORY_HOURS = 24 * 7 * 8


def mstl_peer(train: HourlyData, frame: pd.DataFrame, positions: np.ndarray, horizon: int) -> np.ndarray:
    try:
        from statsforecast.models import MSTL, AutoETS
    except ImportError:
        raise ConfigError("the mstl peer needs the 'peers' extra: pip install 'stef-ray[peers]'") from None
    load = frame[LOAD].to_numpy(dtype=float)
    out = np.full((len(positions), horizon), np.nan)
    for i, origin in enumerate(positions):
        # The last 8 weeks, or all there is: a negative start would slice from the end of the array.
        history = load[max(0, origin - MSTL_HISTORY_HOURS) : origin]
        history = pd.Series(history).interpolate(limit_direction="both").to_numpy()
        model = MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZZN"))
        out[i] = model.forecast(y=history, h=horizon)["mean"]
    return out


PEERS: dict[str, PeerModel] = {"ridge_residual": ridge_residual, "lightgbm": lightgbm_peer, "mstl": mstl_peer}


def available_peers(names: Sequence[str]) -> dict[str, PeerModel]:
    return {name: PEERS[name] for name in names if name in PEERS}
