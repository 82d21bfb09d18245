"""Peer models for backtests, each forecasting from one origin with the same information as the hybrid
(load up to the origin, known future exogenous values). Arrays are (origins, horizon) in MW."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stef_ray.data.hourly import LOAD


def seasonal_naive(frame: pd.DataFrame, positions: np.ndarray, horizon: int, season_hours: int) -> np.ndarray:
    """Load ``season_hours`` before each target hour, repeating the last season when the horizon is longer."""
    load = frame[LOAD].to_numpy(dtype=float)
    lead = np.arange(horizon)
    # Target hour o+h looks back to o+h-season; if that is not yet observed (h >= season), go one more season.
    back = season_hours * (lead // season_hours + 1)
    return load[positions[:, None] + lead[None, :] - back[None, :]]
