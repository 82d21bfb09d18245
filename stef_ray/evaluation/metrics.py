"""Point and probabilistic forecast metrics, as the seed reported them (MAPE and SMAPE in percent)."""

from __future__ import annotations

import numpy as np

POINT_METRICS = ("MAE", "MSE", "RMSE", "R2", "MAPE", "SMAPE")


def point_metrics(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    """MAE, MSE, RMSE, R2, MAPE (%), SMAPE (%) over the finite pairs."""
    actual, forecast = np.asarray(actual, dtype=float).ravel(), np.asarray(forecast, dtype=float).ravel()
    keep = np.isfinite(actual) & np.isfinite(forecast)
    a, f = actual[keep], forecast[keep]
    if a.size == 0:
        return dict.fromkeys(POINT_METRICS, float("nan"))
    error = f - a
    mse = float(np.mean(error**2))
    total = float(np.sum((a - a.mean()) ** 2))
    return {
        "MAE": float(np.mean(np.abs(error))),
        "MSE": mse,
        "RMSE": float(np.sqrt(mse)),
        "R2": float(1 - np.sum(error**2) / total) if total > 0 else float("nan"),
        "MAPE": float(np.mean(np.abs(error) / np.abs(a)) * 100),
        "SMAPE": float(np.mean(2 * np.abs(error) / (np.abs(a) + np.abs(f))) * 100),
    }


def pinball_loss(actual: np.ndarray, quantile_forecast: np.ndarray, q: float) -> float:
    """Mean pinball (quantile) loss of one quantile forecast."""
    actual, quantile_forecast = np.asarray(actual, float).ravel(), np.asarray(quantile_forecast, float).ravel()
    keep = np.isfinite(actual) & np.isfinite(quantile_forecast)
    diff = actual[keep] - quantile_forecast[keep]
    return float(np.mean(np.maximum(q * diff, (q - 1) * diff)))


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share (%) of actuals inside [lower, upper]."""
    actual, lower, upper = (np.asarray(x, float).ravel() for x in (actual, lower, upper))
    keep = np.isfinite(actual) & np.isfinite(lower) & np.isfinite(upper)
    return float(np.mean((actual[keep] >= lower[keep]) & (actual[keep] <= upper[keep])) * 100)
