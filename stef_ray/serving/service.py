"""The forecast service behind the HTTP API, free of Ray: request body -> validated frame -> components
-> answer. The Ray Serve deployments call its pieces (trend, seasonality and residual each in their own
replicas); the plain FastAPI app calls ``ForecastService.forecast`` in one process. Both therefore share
every validation rule and every number.

The frame handed to the components is exactly the one ``stef_ray.forecasting.forecast_from_frames``
builds (the model's ``history_hours`` plus ``horizon`` future rows), so an HTTP answer equals the CLI's, and
both equal the backtest's forecast from the whole history (``HybridModel.predict_components``).

Torch is imported only where the residual model is loaded: trend and seasonality replicas stay small.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from stef_ray.data.holidays import HOLIDAY_COLUMN, holiday_flags
from stef_ray.data.hourly import LOAD
from stef_ray.exceptions import BundleError, ConfigError
from stef_ray.manifest import BundleManifest
from stef_ray.models.seasonality import FourierSeasonality
from stef_ray.models.trend import LogLinearTrend
from stef_ray.quantiles import DEFAULT_LEVELS, quantile_column, quantile_columns
from stef_ray.serving.schemas import (
    ModelInfo,
    RequestError,
    TrainingWindow,
    error_from_validation,
    field_path,
    request_model,
)

logger = logging.getLogger(__name__)

REGISTRY_PREFIX = "models:/"
HOUR_NS = 3_600_000_000_000
HOURS_PER_WEEK = 168
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?$")


# ------------------------------------------------------------------------------------- model source
@dataclass(frozen=True)
class ModelKey:
    """Names one loaded model across replicas: where its bundle lies and which version it is."""

    path: str
    version: str


def registry_parts(source: str) -> dict[str, str]:
    """``{"name", "alias"}`` or ``{"name", "version"}`` of a ``models:/`` URI; ``{}`` for a bundle path.

    Raises:
        ConfigError: a malformed ``models:/`` URI.
    """
    if not source.startswith(REGISTRY_PREFIX):
        return {}
    match = _REGISTRY_URI.match(source)
    if match is None:
        raise ConfigError(f"model source {source!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return {k: v for k, v in match.groupdict().items() if v}


def _registry() -> Any:
    try:
        from stef_ray.integrations import registry  # mlflow only when a URI is used
    except ImportError as err:
        raise ConfigError(
            f"a models:/ source needs the MLflow registry adapter (stef_ray.integrations.registry), which "
            f"cannot be imported ({err}); pass a bundle path instead"
        ) from None
    return registry


def alias_version(name: str, alias: str, tracking_uri: str | None = None) -> str:
    """The registry version ``models:/NAME@ALIAS`` points at now.

    Raises:
        ModelNotFoundError: no such model or alias (or the registry cannot be reached).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from stef_ray.exceptions import ModelNotFoundError

    uri, _ = _registry().tracking_uri(tracking_uri)
    try:
        found = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(name, alias)
    except MlflowException as err:
        first = str(err).splitlines()[0][:200]
        raise ModelNotFoundError(f"models:/{name}@{alias} at {uri}: {first}") from None
    return str(found.version)


def resolve_source(source: str, tracking_uri: str | None = None) -> tuple[Path, dict]:
    """A local bundle folder for ``source`` (a path or ``models:/NAME@ALIAS``) and what the URI says.

    Raises:
        ConfigError: a registry URI while the registry adapter is not installed, or a malformed URI.
    """
    parts = registry_parts(source)
    if not parts:
        return Path(source).expanduser().resolve(), {}
    return Path(_registry().resolve_model_uri(source, tracking=tracking_uri)).resolve(), parts


def bundle_fingerprint(path: Path) -> str:
    """A short content hash of a bundle: the same files give the same version, a retrained one another."""
    digest = hashlib.sha256()
    for name in ("manifest.json", "trend.json", "seasonality.json", "residual_scaler.json", "quantiles.json",
                 "residual_linear.json", "residual_linear.npz", "residual_boosted.json", "residual_boosted.npz",
                 "residual_neural.pt", "residual_lstm.pt"):
        part = path / name
        if part.is_file():
            digest.update(name.encode())
            digest.update(part.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class LoadedModel:
    """A model read from a bundle, with what the API reports about it."""

    model: Any  # stef_ray.models.hybrid.HybridModel (kept untyped: importing it imports torch)
    manifest: BundleManifest
    info: ModelInfo
    key: ModelKey

    @property
    def timezone(self) -> str:
        return self.info.timezone


def load_model(source: str, tracking_uri: str | None = None, version: str | None = None) -> LoadedModel:
    """Load the model at ``source`` (bundle path or registry URI) for serving.

    For ``models:/NAME@ALIAS`` the alias is first resolved to its registry version (``version``, when
    given, is that version already, e.g. as alias polling saw it) and that version is downloaded, so the
    reported version is the registry's and an alias moving during the download cannot mix two versions.
    """
    from stef_ray.bundle import load_bundle

    uri_parts = registry_parts(source)
    if "alias" in uri_parts:
        uri_parts["version"] = version or alias_version(uri_parts["name"], uri_parts["alias"], tracking_uri)
        path, _ = resolve_source(f"{REGISTRY_PREFIX}{uri_parts['name']}/{uri_parts['version']}", tracking_uri)
    else:
        path, uri_parts = resolve_source(source, tracking_uri)
    model, manifest = load_bundle(path, device="cpu")
    training = manifest.training
    info = ModelInfo(
        name=uri_parts.get("name") or manifest.model_name or path.name,
        version=str(uri_parts.get("version") or manifest.model_version or bundle_fingerprint(path)),
        alias=uri_parts.get("alias"),
        source=source,
        created_at=manifest.created_at,
        training_window=TrainingWindow(start=training.start, end=training.end, hours=training.hours),
        holdout_mape=manifest.holdout_mape,
        validation_mape_log_approx=training.val_mape_log_approx,
        residual_models=model.residual_summary(),
        neural_residual=training.neural,
        lookback_hours=model.lookback,
        history_hours=model.history_hours,
        horizon_hours=model.horizon,
        exog=list(model.exog),
        timezone=manifest.timezone,
    )
    return LoadedModel(model, manifest, info, ModelKey(str(path), info.version))


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


# ------------------------------------------------------------------------------------ request parsing
@dataclass
class PreparedForecast:
    """A validated request: the model's input rows (history_hours + model horizon) as numpy arrays, and
    what was repaired or assumed. ``frame`` is the same rows as the DataFrame the CLI builds."""

    utc_ns: np.ndarray  # (n,) int64: UTC instants of the rows, hourly: history_hours + horizon
    values: np.ndarray  # (n, 1 + k): load (NaN from the origin on), then the exog columns
    columns: tuple[str, ...]  # load and the exog names, in the order of ``values``
    timezone: str
    origin: pd.Timestamp
    horizon: int
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The hours before history_hours that the client sent, up to the model's interval_history_hours:
    # (utc_ns, values) in the same layout, or None. They only scale the quantile band.
    older: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=local_index(self.utc_ns, self.timezone), columns=list(self.columns))

    @property
    def long_frame(self) -> pd.DataFrame | None:
        """The older hours followed by ``frame``'s rows, where there are older hours."""
        if self.older is None:
            return None
        utc_ns, values = np.concatenate([self.older[0], self.utc_ns]), np.concatenate([self.older[1], self.values])
        return pd.DataFrame(values, index=local_index(utc_ns, self.timezone), columns=list(self.columns))


def local_index(utc_ns: np.ndarray, timezone: str) -> pd.DatetimeIndex:
    """The hourly index of UTC instants ``utc_ns`` on the local clock of ``timezone``."""
    return pd.DatetimeIndex(utc_ns.astype("datetime64[ns]"), name="timestamp").tz_localize("UTC").tz_convert(timezone)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _epoch_ns(rows: Sequence[BaseModel]) -> np.ndarray:
    """UTC instants of the rows' (offset-aware) timestamps as int64 nanoseconds, exactly."""
    return np.fromiter(((row.timestamp - _EPOCH) // _MICROSECOND for row in rows), dtype=np.int64,
                       count=len(rows)) * 1000


def _stamp(ns: int, timezone: str) -> pd.Timestamp:
    return pd.Timestamp(int(ns), tz="UTC").tz_convert(timezone)


def check_hourly(stamps: np.ndarray, section: str, timezone: str) -> None:
    """Rows ``section[i]`` at these epoch nanoseconds are hourly, increasing, each hour once; else a 422
    naming the first row at fault."""
    steps = np.diff(stamps)
    bad = np.flatnonzero((steps <= 0) | (steps % HOUR_NS != 0))
    if not len(bad):
        return
    i = int(bad[0]) + 1
    where, this, before = f"{section}[{i}].timestamp", _stamp(stamps[i], timezone), _stamp(stamps[i - 1], timezone)
    if steps[i - 1] == 0:
        raise RequestError(422, f"{this} appears twice (also {section}[{i - 1}]); remove the duplicate", where)
    if steps[i - 1] < 0:
        raise RequestError(422, f"{this} comes before {section}[{i - 1}] ({before}); sort the rows by time, "
                           "oldest first", where)
    raise RequestError(422, f"{this} is not a whole number of hours after {section}[{i - 1}]; rows must be "
                       "hourly (start of each hour)", where)


@functools.lru_cache(maxsize=256)
def _calendar_flags(calendar: str, origin_ns: int, horizon: int, timezone: str) -> np.ndarray:
    """The calendar's holiday flags for the ``horizon`` hours from ``origin_ns`` (cached: requests come back
    to the same origins, and building a calendar costs milliseconds)."""
    flags = holiday_flags(local_index(origin_ns + HOUR_NS * np.arange(horizon, dtype=np.int64), timezone), calendar)
    flags.flags.writeable = False
    return flags


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], mask, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s), int(e - s)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def _interpolate_run(values: np.ndarray, start: int, length: int) -> None:
    """Fill the NaNs of rows ``start .. start+length-1`` (rows with a gap; the rows around them are
    complete) by linear interpolation between each column's own neighbours, in place: pandas'
    ``interpolate(method="linear", limit_area="inside")`` on an evenly spaced grid, as the data layer does."""
    for column in range(values.shape[1]):
        series = values[:, column]
        for offset, n in _runs(np.isnan(series[start:start + length])):
            a = start + offset
            left, right = series[a - 1], series[a + n]
            series[a:a + n] = left + (right - left) * np.arange(1, n + 1) / (n + 1)


class ForecastService:
    """One loaded model and everything needed to answer a forecast request with it."""

    def __init__(self, loaded: LoadedModel, max_interpolate_hours: int | None = None) -> None:
        self.loaded = loaded
        model = loaded.model
        self.max_gap_hours = (max_interpolate_hours if max_interpolate_hours is not None
                              else loaded.manifest.data.max_interpolate_hours)
        self.request_model = request_model(tuple(model.exog), model.horizon)
        # A 'holiday' input made from a calendar (data.holidays) is known ahead: future hours a request
        # leaves out take the calendar's flags, not last week's.
        calendar = loaded.manifest.calendar
        self.calendar = calendar if calendar and HOLIDAY_COLUMN in model.exog else None
        self._exog_fields = self._field_names()
        self._allowed = {
            "body": ["history", "future", "horizon"],
            "history": ["timestamp", "load", *model.exog],
            "future": ["timestamp", *model.exog],
        }

    @classmethod
    def from_source(cls, source: str) -> ForecastService:
        return cls(load_model(source))

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def key(self) -> ModelKey:
        return self.loaded.key

    def _field_names(self) -> list[str]:
        """Python attribute of each exog column on a history row (an alias where the name is not valid)."""
        fields = self.request_model.model_fields["history"].annotation.__args__[0].model_fields
        by_column = {(info.alias or name): name for name, info in fields.items()}
        return [by_column[column] for column in self.model.exog]

    # ------------------------------------------------------------------- parsing
    def parse(self, body: bytes | str) -> PreparedForecast:
        """Validate a JSON body. Raises RequestError (400 malformed JSON, 422 anything else)."""
        try:
            request = self.request_model.model_validate_json(body)
        except ValidationError as err:
            raise error_from_validation(err, self._allowed) from None
        return self.prepare(request)

    def prepare(self, request: BaseModel) -> PreparedForecast:
        """The model's input frame for a validated request (numpy throughout: this runs per request).

        Equal, value for value, to the frame ``forecast_from_frames`` builds from the same history.
        """
        model, tz = self.model, self.loaded.timezone
        need, horizon = model.history_hours, model.horizon
        stamps = _epoch_ns(request.history)
        check_hourly(stamps, "history", tz)
        span_hours = int((stamps[-1] - stamps[0]) // HOUR_NS) + 1
        if span_hours < need:
            raise RequestError(422, f"covers {span_hours} hours; the model needs {model.history_needed()}", "history")
        # The model reads the last history_hours (the lookback and the smoothing's warm-up), and up to
        # interval_history_hours before them where the client sent them (its quantiles widen after days of
        # large errors); a few more rows anchor the interpolation of a short gap at the start.
        keep_hours = min(span_hours, need + int(getattr(model, "interval_history_hours", 0)))
        width = min(span_hours, keep_hours + self.max_gap_hours + 1)
        positions = (stamps - stamps[-1]) // HOUR_NS + width - 1
        keep = positions >= 0
        fields = self._exog_fields
        rows = [row for row, kept in zip(request.history, keep, strict=True) if kept]
        window = np.full((width, 1 + len(fields)), np.nan)
        values = attrgetter("load", *fields)  # a tuple per row, read in C; numpy turns a null load into NaN
        window[positions[keep]] = np.array([values(row) for row in rows], dtype=float).reshape(len(rows), 1 + len(fields))
        flags, notes = [], []
        if self._repair_gaps(window, stamps[-1], notes):
            flags.append("interpolated")
        recent = window[-need:]
        origin_ns = int(stamps[-1]) + HOUR_NS
        future = self._future(request, origin_ns, recent, notes)
        index_ns = origin_ns + HOUR_NS * np.arange(-need, horizon, dtype=np.int64)
        ahead = np.column_stack([np.full(horizon, np.nan), future]) if len(fields) else np.full((horizon, 1), np.nan)
        values = np.concatenate([recent, ahead])
        older = None
        if keep_hours > need:
            older = (origin_ns + HOUR_NS * np.arange(-keep_hours, -need, dtype=np.int64),
                     window[-keep_hours:-need].copy())
        return PreparedForecast(index_ns, values, (LOAD, *model.exog), tz, _stamp(origin_ns, tz), request.horizon,
                                flags, notes, older)

    def _repair_gaps(self, window: np.ndarray, last_ns: int, notes: list[str]) -> int:
        """Interpolate runs of up to ``max_gap_hours`` missing hours, as the data layer does for the CLI.
        Inside the lookback window a longer gap is an error; before it, it stays missing (NaN)."""
        lookback, width = self.model.lookback, len(window)
        first = width - lookback
        tz = self.loaded.timezone
        filled: list[tuple[int, int]] = []
        for start, length in _runs(np.isnan(window).any(axis=1)):
            if start + length <= first:  # before the hours the model's residual reads
                if start > 0 and length <= self.max_gap_hours:
                    filled.append((start, length))
                continue
            gap_start = _stamp(last_ns - (width - 1 - max(start, first)) * HOUR_NS, tz)
            if start + length == width:
                raise RequestError(422, "the last hour's load is null; the last row must be an observation",
                                   "history")
            if length > self.max_gap_hours or start == 0:
                raise RequestError(
                    422, f"{length if start else 'at least ' + str(length)} hour(s) missing from {gap_start} "
                    f"within the last {lookback} hours; gaps of up to {self.max_gap_hours} h are interpolated, "
                    "longer ones must be filled by the client", "history",
                )
            filled.append((start, length))
            notes.append(f"interpolated {length} missing hour(s) of history from {gap_start}")
        for start, length in filled:
            _interpolate_run(window, start, length)
        return sum(length for start, length in filled if start + length > first)

    def _future(self, request: BaseModel, origin_ns: int, recent: np.ndarray, notes: list[str]) -> np.ndarray:
        """Known exogenous values for the forecast hours; holes take the same hour one week earlier."""
        model, tz = self.model, self.loaded.timezone
        horizon, fields = model.horizon, self._exog_fields
        future = np.full((horizon, len(fields)), np.nan)
        if request.future:
            stamps = _epoch_ns(request.future)
            check_hourly(stamps, "future", tz)
            steps = (stamps - origin_ns) // HOUR_NS
            outside = np.flatnonzero((stamps < origin_ns) | (steps >= horizon) | ((stamps - origin_ns) % HOUR_NS != 0))
            if len(outside):
                i = int(outside[0])
                raise RequestError(
                    422, f"{_stamp(stamps[i], tz)} is outside the forecast window {_stamp(origin_ns, tz)} .. "
                    f"{_stamp(origin_ns + (horizon - 1) * HOUR_NS, tz)} (the hours after the last history row)",
                    field_path(["future", i, "timestamp"]),
                )
            future[steps] = np.array(
                [[np.nan if getattr(row, f) is None else getattr(row, f) for f in fields] for row in request.future],
                dtype=float,
            ).reshape(len(stamps), len(fields))
        if self.calendar is not None:
            column = list(model.exog).index(HOLIDAY_COLUMN)
            missing = np.isnan(future[:, column])
            if missing.any():
                future[missing, column] = _calendar_flags(self.calendar, origin_ns, horizon, tz)[missing]
        holes = np.isnan(future)
        if holes.any():
            # As forecast_from_frames: hour h falls back to h - 168 h when that hour is in the lookback window.
            week_before = np.full_like(future, np.nan)
            source = len(recent) - HOURS_PER_WEEK + np.arange(horizon)
            inside = (source >= 0) & (source < len(recent))
            week_before[inside] = recent[source[inside], 1:]
            future = np.where(holes, week_before, future)
            from stef_ray.forecasting import FALLBACK_NOTE  # the CLI's words (a lazy import: torch)

            fell_back = [name for i, name in enumerate(model.exog) if holes[:, i].any()]
            notes.append(FALLBACK_NOTE.format(columns=", ".join(fell_back)))
        return future

    # ----------------------------------------------------------------- computing
    def forecast(self, prepared: PreparedForecast) -> dict:
        """All three components in this process (the plain app, and the reference for Serve)."""
        model, frame = self.model, prepared.frame
        trend = trend_log(model.trend, frame.index)
        season = season_log(model.seasonality, frame[list(model.exog)])
        residual, scale = batch_residuals(model, ComponentBatch.stack([prepared]), trend[None], season[None],
                                          [prepared.long_frame])
        return self.assemble(prepared, trend, season, residual[0], scale=float(scale[0]))

    def assemble(
        self, prepared: PreparedForecast, trend: np.ndarray, season: np.ndarray, residual: np.ndarray | None,
        degraded_reason: str | None = None, scale: float = 1.0,
    ) -> dict:
        """The JSON answer from log components (``scale``: the interval scale of the quantile offsets);
        ``residual=None`` answers trend + seasonality (degraded)."""
        from stef_ray.models.hybrid import ComponentForecast

        model = self.model
        first = len(prepared.utc_ns) - model.horizon
        ahead = slice(first, first + model.horizon)
        flags, notes = list(prepared.flags), list(prepared.notes)
        degraded = residual is None
        if degraded:
            residual = np.zeros(model.horizon)
            flags.append("degraded")
            notes.append(f"residual model unavailable ({degraded_reason or 'failed'}): trend + seasonality only, "
                         "no quantiles")
        components = ComponentForecast(trend[None, ahead], season[None, ahead], np.asarray(residual)[None, :],
                                       np.array([scale]), np.array([prepared.origin.hour]))
        columns = model.to_megawatts(components, point_move=not degraded)
        n = prepared.horizon
        # datetime.isoformat is ten times cheaper than Timestamp.isoformat, and the same text for whole hours
        timestamps = [ts.isoformat() for ts in local_index(prepared.utc_ns[ahead][:n], prepared.timezone).to_pydatetime()]
        answer = {
            "model_name": self.loaded.info.name,
            "model_version": self.loaded.info.version,
            "model_alias": self.loaded.info.alias,
            "origin": prepared.origin.isoformat(),
            "timestamps": timestamps,
            **{name: columns[name][0, :n].tolist() for name in ("forecast", "trend", "seasonality", "residual")},
        }
        # Each quantile level the model issues, as p<level> (p10, p50, p90 with the default levels); null when
        # degraded (the residual's calibration is what sets them).
        for name in quantile_columns(columns) or [quantile_column(q) for q in DEFAULT_LEVELS]:
            answer[name] = None if degraded or name not in columns else columns[name][0, :n].tolist()
        answer["quality"] = "degraded" if degraded else ("interpolated" if "interpolated" in flags else "ok")
        answer["quality_flags"] = flags
        answer["notes"] = notes
        return answer
