"""The HTTP API's request and response models (pydantic), shared by the Ray Serve app and the plain app.

A request's rows carry the model's own exogenous columns as fields, so the request model is built per
model (``request_model(exog, horizon_hours)``): every field is named, typed and finite, and anything
else is an error that names the field. Validation errors become one-line messages such as
``history[3].load: must be a finite number``.
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
LoadMW = Annotated[float, Field(gt=0, allow_inf_nan=False)]

QUALITY_HELP = (
    "'ok'; 'interpolated' when a short gap in the history was filled; 'degraded' when the residual "
    "model failed or timed out and the answer is trend + seasonality only (residual 0, no quantiles)"
)


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("timestamp", check_fields=False)
    @classmethod
    def _plausible_year(cls, value: datetime) -> datetime:
        # pandas' nanosecond timestamps end in 2262; no load data predates 1900.
        if not 1900 <= value.year <= 2200:
            raise ValueError("year must be between 1900 and 2200")
        return value


class HistoryRowBase(_Row):
    """One observed hour. The model's exogenous columns are added as further fields."""

    timestamp: AwareDatetime = Field(
        description="start of the hour, ISO 8601 with a UTC offset, e.g. 2024-05-01T13:00:00+02:00"
    )
    load: LoadMW | None = Field(
        description="observed load (MW, > 0); null marks a missing reading (gaps of up to 3 h are interpolated)"
    )


class FutureRowBase(_Row):
    """One hour ahead with its known exogenous values (e.g. a temperature forecast)."""

    timestamp: AwareDatetime = Field(description="start of the hour, ISO 8601 with a UTC offset")


class ForecastRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", title="ForecastRequest")


def _field_name(column: str, taken: set[str]) -> tuple[str, str | None]:
    """A Python field name for a data column, and the alias when the column is not a valid one."""
    if column.isidentifier() and not keyword.iskeyword(column) and column not in taken and not column.startswith("_"):
        return column, None
    return f"exog_{len(taken)}", column


@functools.lru_cache(maxsize=16)
def request_model(exog: tuple[str, ...], horizon_hours: int, max_rows: int = 24 * 366) -> type[BaseModel]:
    """The ForecastRequest model for a model with these exogenous columns and horizon."""
    history_fields: dict[str, Any] = {}
    future_fields: dict[str, Any] = {}
    taken = {"timestamp", "load"}
    for column in exog:
        name, alias = _field_name(column, taken)
        taken.add(name)
        history_fields[name] = (
            FiniteFloat, Field(alias=alias, description=f"observed {column} at that hour (finite number)")
        )
        future_fields[name] = (
            FiniteFloat | None,
            Field(None, alias=alias, description=f"known {column} for that hour; null or absent: the same "
                  "hour one week earlier is used (noted in the answer), or for a 'holiday' input made from a "
                  "holiday calendar, that calendar's flag"),
        )
    history_row = create_model("HistoryRow", __base__=HistoryRowBase, **history_fields)
    future_row = create_model("FutureRow", __base__=FutureRowBase, **future_fields)
    return create_model(
        "ForecastRequest",
        __base__=ForecastRequestBase,
        history=(
            list[history_row],
            Field(min_length=1, max_length=max_rows,
                  description="recent hourly observations, oldest first; at least the model's history_hours "
                  "(GET /model; 168 h without smoothed weather inputs)"),
        ),
        future=(
            list[future_row],
            Field(default_factory=list, max_length=horizon_hours,
                  description="known exogenous values for the hours after the last history row, oldest first"),
        ),
        horizon=(
            int,
            Field(horizon_hours, ge=1, le=horizon_hours, description=f"hours to forecast, 1..{horizon_hours}"),
        ),
    )


class ActualRow(_Row):
    """One measured hour."""

    timestamp: AwareDatetime = Field(description="start of the hour, ISO 8601 with a UTC offset")
    load: LoadMW = Field(description="measured load (MW, > 0)")


class ActualsRequest(BaseModel):
    """Measured load for ``POST /actuals``: stored as ``power_demand_actual``, keyed by the hour."""

    model_config = ConfigDict(extra="forbid")

    actuals: list[ActualRow] = Field(min_length=1, max_length=24 * 366,
                                     description="measured hours, oldest first, each hour at most once")


class ActualsResponse(BaseModel):
    accepted: int = Field(description="hours written to the spool of the time-series store")
    first: datetime = Field(description="the first hour")
    last: datetime = Field(description="the last hour")


class ForecastResponse(BaseModel):
    """A forecast in MW with its additive split: forecast = trend + seasonality + residual, and a p<level> list
    per quantile level the model issues (p10, p50, p90 by default)."""

    model_config = ConfigDict(protected_namespaces=(), extra="allow")  # extra: other quantile levels' p<level>

    model_name: str = Field(description="registered model name, or the bundle folder's name")
    model_version: str = Field(description="registry version, or a content fingerprint of the bundle")
    model_alias: str | None = Field(None, description="registry alias the model was served under (e.g. champion)")
    arm: Literal["champion", "challenger"] | None = Field(
        None, description="A/B arm that answered (Serve app): the configured model, or the challenger that "
        "takes challenger_fraction of the requests"
    )
    origin: datetime = Field(description="first forecast hour")
    timestamps: list[datetime] = Field(description="start of each forecast hour (model's time zone)")
    forecast: list[float] = Field(description="point forecast (MW)")
    trend: list[float] = Field(description="trend part (MW)")
    seasonality: list[float] = Field(description="seasonal and exogenous part (MW)")
    residual: list[float] = Field(description="the residual models' part (MW: ridges, trees and the neural residual where kept; see /model); 0 when degraded")
    p10: list[float] | None = Field(None, description="10 % quantile (MW); null when degraded. A model with other "
                                    "quantile levels (`model.forecast.quantiles`) answers p<level> for each instead, e.g. "
                                    "p5, p50, p95")
    p50: list[float] | None = Field(None, description="50 % quantile (MW); null when degraded")
    p90: list[float] | None = Field(None, description="90 % quantile (MW); null when degraded")
    quality: Literal["ok", "interpolated", "degraded"] = Field(description=QUALITY_HELP)
    quality_flags: list[str] = Field(description="every quality condition that applied, e.g. interpolated")
    notes: list[str] = Field(description="what was assumed or repaired, one line each")


class TrainingWindow(BaseModel):
    start: str | None = Field(None, description="first training hour")
    end: str | None = Field(None, description="last training hour")
    hours: int | None = Field(None, description="hours in the training window")


class ModelInfo(BaseModel):
    """What ``GET /model`` reports about the model being served."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="registered model name, or the bundle folder's name")
    version: str = Field(description="registry version, or a content fingerprint of the bundle")
    alias: str | None = Field(None, description="registry alias the source named (e.g. champion)")
    source: str = Field(description="model source as configured (bundle path or models:/ URI)")
    created_at: str | None = Field(None, description="when the bundle was written")
    training_window: TrainingWindow = Field(description="the data the model was fitted on")
    holdout_mape: float | None = Field(None, description="MAPE (%) on held-out data, if recorded at training")
    validation_mape_log_approx: float | None = Field(
        None, description="mean absolute log error (%) on the validation windows, from calibration"
    )
    residual_models: str = Field(
        "", description="which residual models are in the forecast and why the others are not (e.g. 'per-hour "
        "ridges; neural residual (LSTM) dropped by the validation blocks (gain -0.00012 ± 0.00020)')"
    )
    neural_residual: dict | None = Field(
        None, description="the neural residual's record: architecture, ensemble, whether it is kept, and the "
        "paired gain over the ridges and trees on the validation days that decided it"
    )
    lookback_hours: int = Field(description="hours of load before the origin that the model reads")
    history_hours: int = Field(description="hours before the origin a request must carry: the lookback, and "
                               "before it the warm-up of the smoothed weather inputs (their values; the load may "
                               "be null there)")
    horizon_hours: int = Field(description="hours the model forecasts")
    exog: list[str] = Field(description="exogenous columns each row must carry")
    timezone: str = Field(description="time zone of the model's calendar features")


class ErrorResponse(BaseModel):
    detail: str = Field(description="one line: what is wrong, where, and what to do")
    field: str | None = Field(None, description="the offending field, e.g. history[3].load")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model_version: str | None = None


# ----------------------------------------------------------------- error messages
class RequestError(Exception):
    """Bad input from a client: an HTTP status, the field at fault and a one-line message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field
        self.message = message

    def payload(self) -> dict:
        return {"detail": str(self), "field": self.field}


def field_path(loc: Sequence[str | int]) -> str:
    """('history', 3, 'load') -> 'history[3].load'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


_MESSAGES = {
    "extra_forbidden": "unknown field; allowed: {allowed}",
    "missing": "field required",
    "finite_number": "must be a finite number (NaN and infinity are rejected)",
    "timezone_aware": "timestamp has no UTC offset; add one, e.g. 2024-05-01T13:00:00+00:00",
}


def error_from_validation(err: ValidationError, allowed: dict[str, list[str]] | None = None) -> RequestError:
    """The first validation error as a RequestError naming its field (400 for malformed JSON, else 422)."""
    first = err.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return RequestError(400, f"malformed JSON ({first['msg']})", "body")
    if first["type"] == "model_type" and not first["loc"]:
        return RequestError(422, "the body must be a JSON object with history, future and horizon", "body")
    loc = [part for part in first["loc"] if part not in ("float", "int")]
    section = next((str(p) for p in loc if isinstance(p, str)), "body")
    allowed_here = ", ".join((allowed or {}).get(section if len(loc) > 1 else "body", []))
    template = _MESSAGES.get(first["type"])
    text = first["msg"].removeprefix("Value error, ")
    message = template.format(allowed=allowed_here) if template else text[0].lower() + text[1:]
    more = len(err.errors()) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return RequestError(422, message, field_path(loc))
