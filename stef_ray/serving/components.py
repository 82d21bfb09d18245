"""The three forecast components as the Serve deployments run them: each replica's cache of loaded
models (by ``ModelKey``, so that a hot swap never mixes versions), the trend and seasonality read from an
already validated bundle without torch, and the batched computations over a ``ComponentBatch`` (several
requests' rows stacked as numpy, which is what crosses between deployments). ``ForecastService.forecast``
calls the same functions in one process, so the plain app and the composed Serve app give the same numbers.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stef_ray.exceptions import BundleError
from stef_ray.models.seasonality import FourierSeasonality
from stef_ray.models.trend import LogLinearTrend
from stef_ray.serving.model_source import ModelKey
from stef_ray.serving.prepared import PreparedForecast, local_index


# --------------------------------------------------------------------------------- component caches
class ComponentCache:
    """The last few models a component replica has loaded, by key; loads on a miss (thread-safe).

    ``keep`` 4: an A/B split serves two models, and each may be mid-swap (old and new) at once.

    Requests name the model they were validated against, so during a hot swap an answer is computed
    by one model version throughout, whichever replicas it passes.
    """

    def __init__(self, loader: Callable[[str], Any], keep: int = 4) -> None:
        self._loader = loader
        self._keep = keep
        self._items: OrderedDict[ModelKey, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: ModelKey) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        # Loaded outside the lock: during a swap, requests for the model in use must not wait for the new
        # one to load (two threads loading the same key at once keep the first).
        item = self._loader(key.path)
        with self._lock:
            item = self._items.setdefault(key, item)
            self._items.move_to_end(key)
            while len(self._items) > self._keep:
                self._items.popitem(last=False)
            return item


def load_trend(path: str) -> LogLinearTrend:
    """The trend of an already validated bundle (no torch)."""
    return LogLinearTrend.from_state(_read_state(path, "trend.json"))


def load_seasonality(path: str) -> FourierSeasonality:
    """The seasonality of an already validated bundle (no torch)."""
    import scipy.signal  # noqa: F401  the batch smoothing's filter: 1.5 s to import, paid here, not per request

    return FourierSeasonality.from_state(_read_state(path, "seasonality.json"))


def load_full_model(path: str) -> Any:
    import scipy.signal  # noqa: F401  as in load_seasonality

    from stef_ray.bundle import load_bundle

    return load_bundle(path, device="cpu")[0]


def _read_state(path: str, name: str) -> dict:
    try:
        return json.loads((Path(path) / name).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"bundle {path}: cannot read {name} ({err}); retrain it") from None


# ------------------------------------------------------------------------------------- computations
def trend_log(trend: LogLinearTrend, index: pd.DatetimeIndex) -> np.ndarray:
    return trend.predict(index)


def season_log(seasonality: FourierSeasonality, exog_frame: pd.DataFrame | None) -> np.ndarray:
    """``exog_frame``: the forecast frame's exog columns (or an empty frame with its index)."""
    exog = exog_frame if exog_frame is not None and len(exog_frame.columns) else None
    return seasonality.predict(exog_frame.index, exog)


@dataclass
class ComponentBatch:
    """The inputs of several requests to one model, stacked: what crosses between deployments.

    Numpy arrays pickle in microseconds, while shipping a tz-aware DataFrame costs more than computing
    the trend; and one call per batch, not per request, is what lets the composed app keep up.
    """

    utc_ns: np.ndarray  # (B, n) int64
    values: np.ndarray  # (B, n, 1 + k): load, exog
    columns: tuple[str, ...]
    timezone: str
    # flat_frame() once per batch: Residual reads it for the seasonality and for the residual inputs.
    _flat: pd.DataFrame | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def stack(cls, prepared: Sequence[PreparedForecast]) -> ComponentBatch:
        first = prepared[0]
        return cls(np.stack([p.utc_ns for p in prepared]), np.stack([p.values for p in prepared]), first.columns,
                   first.timezone)

    @classmethod
    def concat(cls, batches: Sequence[ComponentBatch]) -> ComponentBatch:
        first = batches[0]
        if len(batches) == 1:
            return first
        return cls(np.concatenate([b.utc_ns for b in batches]), np.concatenate([b.values for b in batches]),
                   first.columns, first.timezone)

    @property
    def rows_per_request(self) -> int:
        return self.utc_ns.shape[1]

    def flat_frame(self) -> pd.DataFrame:
        """Every request's rows end to end in one DataFrame (for row-wise work; callers must not modify it)."""
        if self._flat is None:
            self._flat = pd.DataFrame(self.values.reshape(-1, self.values.shape[2]),
                                      index=local_index(self.utc_ns.ravel(), self.timezone), columns=list(self.columns))
        return self._flat

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_flat": None}  # what crosses between deployments stays numpy

    def __len__(self) -> int:
        return len(self.utc_ns)


def trend_log_batch(trend: LogLinearTrend, batch: ComponentBatch) -> np.ndarray:
    """(B, n): the trend needs only the instants, all requests in one call."""
    return trend.predict(local_index(batch.utc_ns.ravel(), "UTC")).reshape(batch.utc_ns.shape)


def season_log_batch(seasonality: FourierSeasonality, batch: ComponentBatch) -> np.ndarray:
    """(B, n) in one design over the batch's rows end to end; the smoothed exogenous terms restart at
    each request's first row, so each request gets what it would alone."""
    frame = batch.flat_frame()
    exog = frame.iloc[:, 1:] if len(batch.columns) > 1 else None
    season = seasonality.predict(frame.index, exog, segment_rows=batch.rows_per_request)
    return season.reshape(batch.utc_ns.shape)


def residual_log_batch(model: Any, frame: pd.DataFrame, trend: np.ndarray, season: np.ndarray,
                       rows_per_request: int) -> tuple[np.ndarray, np.ndarray]:
    """Residual (log) forecasts ``(B, horizon)`` and interval scales ``(B,)`` for B requests laid end to
    end in ``frame`` (``rows_per_request`` rows each, as ``ComponentBatch.flat_frame`` gives), computed as
    ``predict_components`` does. The LSTM's inputs are row-wise (scaling, calendar), so one call builds
    them for every request and one LSTM pass reads each request's own window. No window reads another
    request's rows: each request ends in ``horizon`` rows of unknown (NaN) load, which the interval scale
    skips and the residual models never read."""
    origins = np.arange(len(frame) // rows_per_request) * rows_per_request + rows_per_request - model.horizon
    return model.residual_components(frame, trend, season, origins)


def batch_residuals(
    model: Any, batch: ComponentBatch, trend: np.ndarray, season: np.ndarray,
    long_frames: Sequence[pd.DataFrame | None],
) -> tuple[np.ndarray, np.ndarray]:
    """The Residual deployment's work for a batch: residual (log) forecasts ``(B, horizon)`` and the
    quantile band's scale ``(B,)``, from the components' ``(B, n)`` trend and seasonality, and for
    requests that sent older hours (``long_frames[i]`` not None) the scale from those."""
    residual, scale = residual_log_batch(model, batch.flat_frame(), trend.ravel(), season.ravel(),
                                         batch.rows_per_request)
    older = [i for i, frame in enumerate(long_frames) if frame is not None]
    if older:
        scale = scale.copy()
        scale[older] = interval_scales(model, [long_frames[i] for i in older])
    return residual, scale


def interval_scales(model: Any, long_frames: Sequence[pd.DataFrame]) -> np.ndarray:
    """The quantile band's scale for requests that sent hours before ``history_hours``, as
    ``forecast_from_frames`` computes it: from the whole longer frame. One model pass per request."""
    return np.array([model.predict_components(frame, np.array([len(frame) - model.horizon])).interval_scale[0]
                     for frame in long_frames])
