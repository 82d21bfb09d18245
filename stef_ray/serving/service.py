"""The forecast service behind the HTTP API, free of Ray: request body -> validated frame -> components
-> answer. The Ray Serve deployments call its pieces (trend, seasonality and residual each in their own
replicas); the plain FastAPI app calls ``ForecastService.forecast`` in one process. Both therefore share
every validation rule and every number.

The frame handed to the components is exactly the one ``stef_ray.forecasting.forecast_from_frames``
builds (the model's ``history_hours`` plus ``horizon`` future rows), so an HTTP answer equals the CLI's, and
both equal the backtest's forecast from the whole history (``HybridModel.predict_components``).

This module holds the request rules (parsing, gap repair, known future inputs) and the answer's assembly;
where the model comes from is ``model_source``, the component computations ``components``, and the prepared
request ``prepared``. Torch is imported only where the residual model is loaded: trend and seasonality
replicas stay small.
"""

from __future__ import annotations

import functools
from operator import attrgetter
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from stef_ray.data.holidays import HOLIDAY_COLUMN, holiday_flags
from stef_ray.data.hourly import LOAD
from stef_ray.quantiles import DEFAULT_LEVELS, quantile_column, quantile_columns
from stef_ray.serving.components import ComponentBatch, batch_residuals, season_log, trend_log
from stef_ray.serving.model_source import LoadedModel, ModelKey, load_model
from stef_ray.serving.prepared import (
    HOUR_NS,
    PreparedForecast,
    check_hourly,
    epoch_ns,
    local_index,
    local_stamp,
)
from stef_ray.serving.schemas import RequestError, error_from_validation, field_path, request_model

HOURS_PER_WEEK = 168


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
        stamps = epoch_ns(request.history)
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
        return PreparedForecast(index_ns, values, (LOAD, *model.exog), tz, local_stamp(origin_ns, tz),
                                request.horizon, flags, notes, older)

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
            gap_start = local_stamp(last_ns - (width - 1 - max(start, first)) * HOUR_NS, tz)
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
            stamps = epoch_ns(request.future)
            check_hourly(stamps, "future", tz)
            steps = (stamps - origin_ns) // HOUR_NS
            outside = np.flatnonzero((stamps < origin_ns) | (steps >= horizon) | ((stamps - origin_ns) % HOUR_NS != 0))
            if len(outside):
                i = int(outside[0])
                raise RequestError(
                    422, f"{local_stamp(stamps[i], tz)} is outside the forecast window "
                    f"{local_stamp(origin_ns, tz)} .. {local_stamp(origin_ns + (horizon - 1) * HOUR_NS, tz)} "
                    "(the hours after the last history row)",
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
