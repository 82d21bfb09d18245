"""The residual models' input array: the scaled log residual, the scaled seasonal level, the scaled exogenous
inputs and the calendar channels, one row per hour. Plain numpy; the scaler is the bundle's
``residual_scaler.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from stef_ray.features import CALENDAR_CHANNELS, calendar_inputs


def channel_names(exog: Sequence[str]) -> list[str]:
    return ["residual", "seasonal_level", *exog, *CALENDAR_CHANNELS]


def fit_scaler(residual_log: np.ndarray, frame: pd.DataFrame, season_log: np.ndarray, exog: Sequence[str]) -> dict:
    """Means and standard deviations of the channels, ignoring missing hours (a zero spread reads as 1)."""
    values = frame[list(exog)].to_numpy(dtype=float) if exog else np.empty((len(frame), 0))
    return {
        "residual_mean": float(np.nanmean(residual_log)),
        "residual_std": float(np.nanstd(residual_log)) or 1.0,
        "exog_mean": np.nanmean(values, axis=0).tolist() if values.size else [],
        "exog_std": [float(s) or 1.0 for s in np.nanstd(values, axis=0)] if values.size else [],
        "season_mean": float(np.nanmean(season_log)),
        "season_std": float(np.nanstd(season_log)) or 1.0,
    }


def residual_series(scaler: dict, frame: pd.DataFrame, residual_log: np.ndarray, season_log: np.ndarray,
                    exog: Sequence[str], dropped_exog: Sequence[str]) -> np.ndarray:
    """(hours, channels) float32 in the order of ``channel_names``."""
    columns = [
        (residual_log - scaler["residual_mean"]) / scaler["residual_std"],
        (season_log - scaler["season_mean"]) / scaler["season_std"],
    ]
    for i, name in enumerate(exog):
        if name in dropped_exog:
            # An input the seasonality's cross-validation found to carry nothing about load would only give the
            # ridges and trees chance patterns to fit; a zero channel keeps the array's shape.
            columns.append(np.zeros(len(frame)))
            continue
        columns.append((frame[name].to_numpy(dtype=float) - scaler["exog_mean"][i]) / scaler["exog_std"][i])
    return np.column_stack([*columns, calendar_inputs(frame.index)]).astype(np.float32)
