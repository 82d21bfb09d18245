"""The HTTP API as a FastAPI app, around a forecast backend; and that app in one plain process.

``build_http_app`` holds every route, the API key check, the body size limit and the mapping of bad
input to 4xx answers. The Ray Serve ingress (``stef_ray.serving.ingress``) builds its app with it and a
backend that reaches the component deployments through handles; ``create_app`` builds it with the
in-process ``ForecastService``, which is the latency floor the Serve app is benchmarked against:

    STEF_RAY_MODEL=models/production uvicorn --factory stef_ray.serving.plain_app:create_app --port 8001
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from stef_ray.exceptions import StefRayError
from stef_ray.quantiles import quantile_columns
from stef_ray.serving.prepared import PreparedForecast, check_hourly
from stef_ray.serving.schemas import (
    ActualsRequest,
    ActualsResponse,
    ErrorResponse,
    ForecastResponse,
    HealthResponse,
    ModelInfo,
    RequestError,
    error_from_validation,
)
from stef_ray.serving.service import ForecastService

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
DEFAULT_MAX_BODY_BYTES = 1 << 20
NO_STORE = ("this server stores no actuals: no time-series store is configured (set INFLUXDB_URL in the "
            "server's environment, or args.influx in serve_config.yaml)")
ERRORS = {
    400: "malformed JSON",
    401: "missing or wrong API key (only when one is configured)",
    413: "request body over the size limit",
    422: "invalid input; `field` names the offending field",
    503: "no model loaded yet, the trend/seasonality deployments are unavailable, or (/actuals) no store",
}


@dataclass(frozen=True)
class HttpSettings:
    """What the HTTP layer enforces, whatever computes the forecast."""

    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


# Returns the answer dict for a validated request; the Serve backend fans out to deployments.
ComputeFn = Callable[[ForecastService, PreparedForecast], Awaitable[dict]]
ObserveFn = Callable[[dict | None, float], None]
# The model that answers one request (an A/B split picks per request); None: no model loaded yet.
SelectFn = Callable[[Request], ForecastService | None]


def _error(err: RequestError) -> JSONResponse:
    return JSONResponse(err.payload(), status_code=err.status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {declared} bytes is over the limit of {limit} bytes; send less history",
                           "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes; send less history", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_actuals(body: bytes) -> ActualsRequest:
    """A ``POST /actuals`` body, validated (hourly, no repeated hour); else a 4xx naming what is wrong."""
    try:
        parsed = ActualsRequest.model_validate_json(body)
    except ValidationError as err:
        raise error_from_validation(err, {"body": ["actuals"], "actuals": ["timestamp", "load"]}) from None
    stamps = np.array([int(row.timestamp.timestamp()) * 10**9 for row in parsed.actuals], dtype=np.int64)
    check_hourly(stamps, "actuals", "UTC")
    return parsed


def actuals_frame(parsed: ActualsRequest):
    """The hours of a ``POST /actuals`` body as the sink takes them: a DataFrame of ``timestamp``, ``load``."""
    import pandas as pd

    return pd.DataFrame({"timestamp": [pd.Timestamp(row.timestamp) for row in parsed.actuals],
                         "load": [row.load for row in parsed.actuals]})


def actuals_answer(parsed: ActualsRequest, accepted: int) -> dict:
    return {"accepted": accepted, "first": parsed.actuals[0].timestamp.isoformat(),
            "last": parsed.actuals[-1].timestamp.isoformat()}


def check_api_key(request: Request, api_key: str | None) -> None:
    """A 401 unless the request carries ``api_key`` (any request passes where none is configured)."""
    if api_key is None:
        return
    given = request.headers.get(API_KEY_HEADER, "")
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise RequestError(401, f"missing or wrong {API_KEY_HEADER} header", API_KEY_HEADER)


def all_finite(answer: dict) -> bool:
    return all(
        math.isfinite(v) for key in ("forecast", "trend", "seasonality", "residual", *quantile_columns(answer))
        for v in (answer.get(key) or ())
    )


def build_http_app(
    get_service: Callable[[], ForecastService | None],
    compute: ComputeFn,
    settings: HttpSettings,
    observe: ObserveFn | None = None,
    title: str = "stef_ray forecast API",
    select: SelectFn | None = None,
    unavailable: Callable[[], str | None] | None = None,
    store_actuals: Callable[[ActualsRequest], Awaitable[int]] | None = None,
) -> FastAPI:
    """The API's routes around ``get_service()`` (the model in use, read per request: hot swaps apply
    to the next request) and ``compute``. ``select(request)``, when given, picks the model that answers
    a forecast request (an A/B split); ``get_service()`` still answers ``/model``, ``/healthz`` and the
    OpenAPI schema. ``unavailable()`` says why there is no model, when there is none (else a generic 503).
    ``store_actuals(request)``, when given, stores ``POST /actuals`` (else that route answers 503)."""
    app = FastAPI(title=title, version="1", description="Hourly electricity-demand forecasts (MW) for the "
                  "next hours from the last week of observations and known future exogenous values.")
    error_responses = {code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()}
    key_header = {"name": API_KEY_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                  "description": "API key; required only when the server is configured with one"}

    def current(request: Request | None = None) -> ForecastService:
        service = select(request) if select is not None and request is not None else get_service()
        if service is None:
            raise RequestError(503, (unavailable() if unavailable else None) or "no model loaded yet; retry shortly")
        return service

    def check_key(request: Request) -> None:
        check_api_key(request, settings.api_key)

    @app.get("/healthz", response_model=HealthResponse, responses={503: error_responses[503]})
    async def healthz() -> JSONResponse:
        service = get_service()
        if service is None:
            return _error(RequestError(503, (unavailable() if unavailable else None) or "no model loaded yet"))
        return JSONResponse({"status": "ok", "model_version": service.loaded.info.version})

    @app.get("/model", response_model=ModelInfo, openapi_extra={"parameters": [key_header]},
             responses={c: error_responses[c] for c in (401, 503)})
    async def model_info(request: Request) -> JSONResponse:
        try:
            check_key(request)
            return JSONResponse(current().loaded.info.model_dump(mode="json"))
        except RequestError as err:
            return _error(err)

    @app.post(
        "/forecast",
        response_model=ForecastResponse,
        responses=error_responses,
        openapi_extra={"parameters": [key_header], "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ForecastRequest"}}},
        }},
    )
    async def forecast(request: Request) -> JSONResponse:
        """Forecast the hours after the last history row. Bad input gets a 4xx naming the field."""
        started = time.perf_counter()
        answer = None
        try:
            check_key(request)
            body = await read_body(request, settings.max_body_bytes)
            service = current(request)
            try:
                prepared = service.parse(body)
                answer = await compute(service, prepared)
            except RequestError:
                raise
            except StefRayError as err:  # the core's one-line message for data it cannot use
                raise RequestError(422, str(err), "history") from None
            if not all_finite(answer):
                answer = None
                raise RequestError(422, "the inputs give a non-finite forecast: values far outside the range "
                                   "the model was trained on", "body")
            return JSONResponse(answer)
        except RequestError as err:
            return _error(err)
        finally:
            if observe is not None:
                observe(answer, time.perf_counter() - started)

    @app.post("/actuals", response_model=ActualsResponse, responses={c: error_responses[c] for c in (400, 401, 413, 422, 503)},
              openapi_extra={"parameters": [key_header], "requestBody": {
                  "required": True,
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActualsRequest"}}},
              }})
    async def actuals(request: Request) -> JSONResponse:
        """Store measured load (``power_demand_actual``), keyed by the hour: sending an hour again changes
        nothing. Answers once the points are in the local spool, which delivers them to the store."""
        try:
            check_key(request)
            parsed = parse_actuals(await read_body(request, settings.max_body_bytes))
            if store_actuals is None:
                raise RequestError(503, NO_STORE)
            return JSONResponse(actuals_answer(parsed, await store_actuals(parsed)))
        except RequestError as err:
            return _error(err)

    def openapi() -> dict:
        # The request body's fields depend on the model being served (its exogenous columns).
        service = get_service()
        version = service.loaded.info.version if service else None
        if app.openapi_schema and app.state.openapi_version == version:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        actuals = ActualsRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(actuals.pop("$defs", {}))
        components["ActualsRequest"] = actuals
        if service is not None:
            body = service.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components["ForecastRequest"] = body
        else:
            components["ForecastRequest"] = {"type": "object"}
        app.openapi_schema, app.state.openapi_version = schema, version
        return schema

    app.openapi = openapi
    return app


async def compute_in_process(service: ForecastService, prepared: PreparedForecast) -> dict:
    return service.forecast(prepared)


def create_app(model_source: str | None = None, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The whole API in this process (uvicorn factory). The model source defaults to $STEF_RAY_MODEL,
    the API key to $STEF_RAY_API_KEY."""
    import torch

    torch.set_num_threads(1)  # one request at a time per process; threads only contend on small machines
    source = model_source or os.environ.get("STEF_RAY_MODEL")
    if not source:
        raise StefRayError("no model: pass model_source or set STEF_RAY_MODEL to a bundle path or models:/ URI")
    service = ForecastService.from_source(source)
    settings = HttpSettings(api_key=api_key or os.environ.get("STEF_RAY_API_KEY") or None,
                            max_body_bytes=max_body_bytes)
    return build_http_app(lambda: service, compute_in_process, settings, title="stef_ray forecast API (plain)")
