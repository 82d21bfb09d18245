"""Closed-form linear residual model: ridge regression of the next ``horizon`` scaled residuals on the
last ``lookback`` residuals and the known future features. It carries the linear part of the residual
dynamics (persistence, linear weather response), so the neural residual only has to learn what is left
(out of sample: see ``crossfit.py``).

How the last week's residuals map to the next day depends on the hour the forecast starts (lead 1 is the
night after a 00:00 origin, the afternoon after a 12:00 one), so by default there is one ridge per local
origin hour, each fitted on the windows whose origin lies within ``hour_width`` hours of it."""

from __future__ import annotations

import logging

import numpy as np
from scipy.linalg import blas

logger = logging.getLogger(__name__)

HOURS_PER_DAY = 24
MIN_WINDOWS_PER_FEATURE = 2


def origin_hours(series: np.ndarray, origins: np.ndarray, hour_channels: tuple[int, int]) -> np.ndarray:
    """The local hour of day (0-23) of each origin, read from the series' hour sin and cos columns."""
    sin, cos = (series[origins, channel].astype(np.float64) for channel in hour_channels)
    return np.rint(np.arctan2(sin, cos) * HOURS_PER_DAY / (2 * np.pi)).astype(int) % HOURS_PER_DAY


class LinearResidual:
    """``predict(series, origins)`` -> (len(origins), horizon) scaled residuals.

    Args:
        hour_width: fit one ridge per local origin hour on the windows within this many hours of it
            (circularly); None fits one ridge for all origins.
        hour_channels: the columns of ``series`` holding sin and cos of the local hour of day, from which
            each origin's hour is read; needed with ``hour_width``.
        robust_iterations: reweighting passes (see ``fit``); 0 = plain ridge.
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        alpha: float = 1.0,
        robust_iterations: int = 0,
        hour_width: int | None = None,
        hour_channels: tuple[int, int] | None = None,
    ) -> None:
        if hour_width is not None and hour_channels is None:
            raise ValueError("hour_width needs hour_channels: the series columns of the hour's sin and cos")
        self.lookback = lookback
        self.horizon = horizon
        self.alpha = alpha
        self.robust_iterations = robust_iterations
        self.hour_width = hour_width
        self.hour_channels = hour_channels
        models = 1 if hour_width is None else HOURS_PER_DAY
        self.coef = np.empty((models, 0, horizon))
        self.intercept = np.zeros((models, horizon))
        self.feature_mean = np.empty((models, 0))
        self.feature_scale = np.empty((models, 0))

    def _features(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        back = series[origins[:, None] + np.arange(-self.lookback, 0), 0]
        ahead = series[origins[:, None] + np.arange(self.horizon), 1:].reshape(len(origins), -1)
        return np.hstack([back, ahead]).astype(np.float64)

    def _model_of(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """Which ridge serves each origin: its local hour of day (0 when there is one ridge)."""
        if self.hour_width is None:
            return np.zeros(len(origins), dtype=int)
        return origin_hours(series, origins, self.hour_channels)

    def fit(self, series: np.ndarray, origins: np.ndarray, weight: np.ndarray | None = None) -> LinearResidual:
        """Fit on the windows starting at ``origins``. Per-hour ridges need history: where the smallest
        hour's share holds fewer than ``MIN_WINDOWS_PER_FEATURE`` windows per feature (some 4-5 months of
        windows for a 168 h lookback, a few known inputs and ±2 h), one ridge for all origins is fitted
        instead, for good. ``weight`` (one per origin, >= 0, default 1) is how much each window counts."""
        x = self._features(series, origins)
        y = series[origins[:, None] + np.arange(self.horizon), 0].astype(np.float64)
        groups = [np.ones(len(origins), dtype=bool)]
        if self.hour_width is not None:
            hours = self._model_of(series, origins)
            distance = np.abs(hours[None, :] - np.arange(HOURS_PER_DAY)[:, None])
            groups = list(np.minimum(distance, HOURS_PER_DAY - distance) <= self.hour_width)
            if min(int(rows.sum()) for rows in groups) < MIN_WINDOWS_PER_FEATURE * x.shape[1]:
                logger.info("too few windows for one linear residual ridge per origin hour: one for all")
                self.hour_width = None
                groups = [np.ones(len(origins), dtype=bool)]
        weight = np.ones(len(origins)) if weight is None else np.asarray(weight, dtype=np.float64)
        if self.hour_width is None:
            fitted = [self._fit_one(x[rows], y[rows], weight[rows]) for rows in groups]
        else:
            moments = HourMoments(x, y, weight, hours)
            fitted = [self._fit_one(x[rows], y[rows], weight[rows], moments.pooled(np.unique(hours[rows])))
                      for rows in groups]
        parts = (np.stack(part) for part in zip(*fitted, strict=True))
        self.coef, self.intercept, self.feature_mean, self.feature_scale = parts
        return self

    def _fit_one(
        self, x: np.ndarray, y: np.ndarray, prior: np.ndarray, pooled: tuple | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # Standardised by the weighted moments, so a window of weight zero has no say at all. ``x`` is the
        # caller's copy of the group's rows: it becomes z in place (arrays of ~15,000 x 300 on PJM).
        total = prior.sum()
        mean = prior @ x / total
        z = np.subtract(x, mean, out=x)
        scale = np.sqrt(prior @ np.square(z) / total)
        scale = np.where(scale > 1e-9, scale, 1.0)
        z /= scale
        weight = prior
        counted = prior > 0
        windows = prior.sum()  # the prior weights count windows (1 = a whole one) against the penalty
        for step in range(self.robust_iterations + 1):
            if step == 0 and pooled is not None:
                coef, intercept = self._solve_pooled(pooled, mean, scale, windows)
            else:
                coef, intercept = self._solve(z, y, weight, windows)
            # Iteratively reweighted: each window by 1 / its mean absolute error, which turns the squared
            # loss into (about) an absolute one, the loss that MAPE is, and lets spells of extreme days
            # (heat waves, holidays) pull the coefficients less.
            window_error = np.abs(z @ coef + intercept - y).mean(axis=1)
            weight = prior / np.maximum(window_error, np.median(window_error[counted]) * 0.1)
        return coef, intercept, mean, scale

    def _solve(
        self, z: np.ndarray, y: np.ndarray, weight: np.ndarray, windows: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted ridge, the weights rescaled to sum to ``windows``; the intercept is not penalised
        (features and targets centred by the weights)."""
        weight = weight / weight.sum()
        z_mean, y_mean = weight @ z, weight @ y
        root = np.sqrt(weight * windows)[:, None]
        rooted = np.subtract(z, z_mean)
        rooted *= root
        # The Gram matrix by a symmetric rank-k update (BLAS syrk): half the multiplications of a general
        # product, and the bulk of a fit (24 ridges x 4 reweighting passes on up to 70,000 windows).
        gram = blas.dsyrk(1.0, rooted.T, trans=0, lower=0)  # rooted.T is Fortran-ordered: no copy
        gram = np.triu(gram) + np.triu(gram, 1).T + self.alpha * np.eye(z.shape[1])
        coef = np.linalg.solve(gram, rooted.T @ ((y - y_mean) * root))
        return coef, y_mean - z_mean @ coef

    def _solve_pooled(
        self, pooled: tuple, mean: np.ndarray, scale: np.ndarray, windows: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``_solve`` with the prior weights, from the group's moments (``HourMoments.pooled``) instead of its
        rows: the same Gram matrix and right-hand side (the weighted covariances, standardised), in a
        24th of the multiplications for hour groups that overlap five-fold."""
        total, x_sum, y_sum, xx, xy, x_ref, y_ref = pooled
        x_mean, y_mean = x_sum / total, y_sum / total  # about the reference point, as the sums are
        covariance = xx / total - np.outer(x_mean, x_mean)
        cross = xy / total - np.outer(x_mean, y_mean)
        gram = windows * covariance / np.outer(scale, scale) + self.alpha * np.eye(len(scale))
        coef = np.linalg.solve(gram, windows * cross / scale[:, None])
        # The group's z has mean zero under the prior weights: the intercept is the targets' mean.
        return coef, y_mean + y_ref - ((x_mean + x_ref - mean) / scale) @ coef

    def predict(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray:
        if len(origins) == 0:
            return np.empty((0, self.horizon))
        model = self._model_of(series, origins)
        x = self._features(series, origins)
        out = np.empty((len(origins), self.horizon))
        for m in np.unique(model):
            rows = model == m
            out[rows] = (x[rows] - self.feature_mean[m]) / self.feature_scale[m] @ self.coef[m] + self.intercept[m]
        return out

    ARRAYS = ("coef", "intercept", "feature_mean", "feature_scale")

    def to_state(self) -> dict:
        """Everything as JSON-able values (bundle format 1 stored this; ``to_parts`` is what bundles store now)."""
        meta, arrays = self.to_parts()
        return meta | {name: value.tolist() for name, value in arrays.items()}

    def to_parts(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The settings (small, JSON) and the fitted arrays (24 ridges of ~10,000 coefficients each: an
        .npz file, a quarter of the JSON's size and read without parsing)."""
        meta = {
            "lookback": self.lookback, "horizon": self.horizon, "alpha": self.alpha,
            "robust_iterations": self.robust_iterations, "hour_width": self.hour_width,
            "hour_channels": None if self.hour_channels is None else list(self.hour_channels),
        }
        return meta, {name: np.asarray(getattr(self, name), dtype=float) for name in self.ARRAYS}

    @classmethod
    def from_state(cls, state: dict) -> LinearResidual:
        return cls.from_parts(state, {name: state[name] for name in cls.ARRAYS})

    @classmethod
    def from_parts(cls, meta: dict, arrays: dict) -> LinearResidual:
        channels = meta.get("hour_channels")
        model = cls(int(meta["lookback"]), int(meta["horizon"]), float(meta["alpha"]),
                    int(meta.get("robust_iterations", 0)), meta.get("hour_width"),
                    None if channels is None else (int(channels[0]), int(channels[1])))
        # States written before the per-hour ridges hold one ridge's 2-D coefficients: add the model axis.
        coef = np.asarray(arrays["coef"], dtype=float)
        model.coef = coef.reshape(-1, *coef.shape[-2:])
        model.intercept = np.asarray(arrays["intercept"], dtype=float).reshape(len(model.coef), -1)
        model.feature_mean = np.asarray(arrays["feature_mean"], dtype=float).reshape(len(model.coef), -1)
        model.feature_scale = np.asarray(arrays["feature_scale"], dtype=float).reshape(len(model.coef), -1)
        return model


class HourMoments:
    """Weighted sums of the windows of each origin hour (about a common reference point, so that the
    covariances taken from them keep their precision): a ridge for the hours h-w..h+w sums 2w+1 hours' moments
    instead of multiplying out its rows. The first solve of each per-hour ridge (the prior weights) comes
    from these; the reweighted passes weigh each ridge's windows differently and solve on its rows."""

    def __init__(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray, hours: np.ndarray) -> None:
        total = weight.sum()
        self.x_ref = weight @ x / total if total > 0 else np.zeros(x.shape[1])
        self.y_ref = weight @ y / total if total > 0 else np.zeros(y.shape[1])
        p, h = x.shape[1], y.shape[1]
        self.total = np.zeros(HOURS_PER_DAY)
        self.x_sum, self.y_sum = np.zeros((HOURS_PER_DAY, p)), np.zeros((HOURS_PER_DAY, h))
        self.xx, self.xy = np.zeros((HOURS_PER_DAY, p, p)), np.zeros((HOURS_PER_DAY, p, h))
        for hour in np.unique(hours):
            rows = hours == hour
            w = weight[rows]
            root = np.sqrt(w)[:, None]
            xc, yc = x[rows] - self.x_ref, y[rows] - self.y_ref
            rooted = np.asfortranarray((xc * root).T)
            xx = blas.dsyrk(1.0, rooted, trans=0, lower=0)
            self.xx[hour] = np.triu(xx) + np.triu(xx, 1).T
            self.xy[hour] = xc.T @ (yc * w[:, None])
            self.total[hour], self.x_sum[hour], self.y_sum[hour] = w.sum(), w @ xc, w @ yc

    def pooled(self, hours: np.ndarray) -> tuple:
        """(total weight, sum of x, sum of y, sum of x x', sum of x y', x reference, y reference) over ``hours``."""
        return (self.total[hours].sum(), self.x_sum[hours].sum(axis=0), self.y_sum[hours].sum(axis=0),
                self.xx[hours].sum(axis=0), self.xy[hours].sum(axis=0), self.x_ref, self.y_ref)
