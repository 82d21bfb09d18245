"""Many series behind one Ray Serve application, by model multiplexing.

    serve run serve_fleet_config.yaml        # or: stef-ray serve --config serve_fleet_config.yaml

Routes (the same request body and answer as ``POST /forecast`` of the single-series app):

    POST /series/{series_id}/forecast    one series' forecast
    POST /series/{series_id}/actuals     that series' measured load into the time-series store (as POST /actuals)
    GET  /series/{series_id}/model       what that series' model is (as GET /model)
    POST /forecast_batch                 {"requests": [{"series_id": ..., "history": [...], ...}, ...]}
    GET  /healthz

``FleetIngress`` (HTTP) hands each series' body to a ``FleetForecaster`` replica through a handle with
``multiplexed_model_id=series_id``: Serve routes a series to a replica that already holds its model where
one does. Each replica loads a series' model on its first request (``@serve.multiplexed``) and keeps at
most ``models_per_replica`` of them, the least recently used going first. A batch fans out concurrently,
one call per series, and answers every series with its own status: one bad series sinks nothing else.

With a time-series store (``influx``, or ``INFLUXDB_URL`` set) every answered forecast and every posted
actual is written as the single-series app writes them, with a ``series_id`` tag: the dashboards' series
variable and ``stef-ray monitor``'s per-series MAPE read it.

A series' model comes from ``model_source`` with ``{series_id}`` filled in: a bundle folder per series
(``models/fleet/{series_id}``, as ``stef-ray train --fleet --out models/fleet`` writes them) or a
registered model per series (``models:/power-demand-{series_id}@champion``). With ``alias_poll_s`` > 0 a
replica asks the registry, at most that often per series and when the series is requested, which version
its alias names now; when it moved (a weekly retrain registered a new champion), the new version is loaded
beside the old one, which answers meanwhile, and takes over between requests: no request fails or mixes
two versions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ray import serve
from ray.serve import metrics
from ray.serve.handle import DeploymentHandle

from stef_ray.config_loading import format_validation_error
from stef_ray.exceptions import ConfigError, ModelNotFoundError, StefRayError
from stef_ray.serving.app_args import check_influx_keys
from stef_ray.serving.forecast_store import forecast_points
from stef_ray.serving.ingress import LATENCY_BOUNDARIES_MS
from stef_ray.serving.model_source import alias_version, load_model, registry_parts
from stef_ray.serving.plain_app import (
    DEFAULT_MAX_BODY_BYTES,
    NO_STORE,
    actuals_answer,
    actuals_frame,
    all_finite,
    check_api_key,
    parse_actuals,
    read_body,
)
from stef_ray.serving.schemas import RequestError
from stef_ray.serving.service import ForecastService

logger = logging.getLogger("ray.serve")
SERIES_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PLACEHOLDER = "{series_id}"


class FleetArgs(BaseModel):
    """Application args of ``build_fleet_app`` (serve_fleet_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    model_source: str = Field(description="where a series' model is, with {series_id} in it: a bundle folder "
                              "(models/fleet/{series_id}) or a registry URI (models:/power-demand-{series_id}@champion)")
    models_per_replica: int = Field(16, ge=1, description="models a FleetForecaster replica keeps loaded (LRU)")
    mlflow_tracking_uri: str | None = Field(None, description="registry for models:/ sources (default: "
                                            "$MLFLOW_TRACKING_URI)")
    api_key_env: str | None = Field("STEF_RAY_API_KEY", description="variable holding the API key (unset: none)")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="largest one-series request body")
    max_batch_series: int = Field(1000, ge=1, description="most series in one /forecast_batch request")
    alias_poll_s: float = Field(0.0, ge=0, description="for models:/NAME@ALIAS sources: seconds between a "
                                "replica's registry checks of a series' alias (made when the series is requested); "
                                "a new version is swapped in between requests. 0: a loaded version stays until evicted")
    influx: bool | None = Field(None, description="store forecasts and actuals in the time-series store "
                                "(default: when INFLUXDB_URL is set)")
    influx_settings: dict[str, Any] = Field(default_factory=dict, description="InfluxSettings fields over "
                                            "the INFLUXDB_* environment (url, org, bucket, spool_dir, ...)")

    @field_validator("influx_settings")
    @classmethod
    def _known_influx_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_influx_keys(value)

    @field_validator("model_source")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if PLACEHOLDER not in value:
            raise ValueError(f"must contain {PLACEHOLDER}, e.g. models/fleet/{PLACEHOLDER}")
        return value


def fleet_args(args: dict | None) -> FleetArgs:
    try:
        return FleetArgs.model_validate(args or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "fleet application args")) from None


def check_series_id(series_id: str) -> None:
    if not SERIES_ID.match(series_id):
        raise RequestError(422, f"series id {series_id[:80]!r} must be 1-64 letters, digits, '_', '.' or '-', "
                           "starting with a letter or digit", "series_id")


class UnknownSeriesError(StefRayError):
    """No model for a series id (HTTP 404)."""


class SeriesModel:
    """What the multiplexed cache holds for a series: its service (replaced whole when its alias moves, so a
    request that took it answers entirely with one version) and when its alias was last checked."""

    def __init__(self, service: ForecastService) -> None:
        self.service = service
        self.checked = time.monotonic()


# -------------------------------------------------------------------------------------- the models
@serve.deployment(name="FleetForecaster", ray_actor_options={"num_cpus": 0.5, "num_gpus": 0},
                  max_ongoing_requests=32)
class FleetForecaster:
    """Forecasts for whichever series a request names, from a bounded cache of loaded models."""

    def __init__(self, args: dict) -> None:
        self._args = fleet_args(args)
        self.loads: Counter[str] = Counter()
        self.swaps: Counter[str] = Counter()
        # Per series, for the dashboards' series variable (a label value per series: a fleet is tens to a
        # few thousand series, which Prometheus holds easily).
        self._answers = metrics.Counter("stef_series_forecasts", "forecasts answered per series, by HTTP status",
                                        tag_keys=("series_id", "status"))
        self._latency = metrics.Histogram(
            "stef_series_forecast_ms", "time a forecaster replica spent on a series' forecast, a model load "
            "included (ms)", LATENCY_BOUNDARIES_MS, tag_keys=("series_id",))
        self._model_loads = metrics.Counter(
            "stef_series_model_loads", "series models loaded into a replica: kind 'load' (its first request, or "
            "the first after an eviction from the bounded cache) or 'swap' (its alias named a new version)",
            tag_keys=("series_id", "kind"))

        async def load(series_id: str) -> SeriesModel:
            self.loads[series_id] += 1
            self._model_loads.inc(tags={"series_id": series_id, "kind": "load"})
            return SeriesModel(await asyncio.to_thread(self._load, series_id))

        # Wired here, not on the class, so that models_per_replica comes from the application's args.
        self._service = serve.multiplexed(max_num_models_per_replica=self._args.models_per_replica)(load)

    def _load(self, series_id: str, version: str | None = None) -> ForecastService:
        source = self._args.model_source.replace(PLACEHOLDER, series_id)
        try:
            return ForecastService(load_model(source, self._args.mlflow_tracking_uri, version))
        except ModelNotFoundError as err:
            raise UnknownSeriesError(f"no model for series {series_id!r}: {err}") from None

    async def _current(self, series_id: str, held: SeriesModel) -> ForecastService:
        """The series' service, after following its alias if it is due for a check. A registry that cannot
        be reached keeps the loaded version serving (logged); the next due request asks again."""
        poll = self._args.alias_poll_s
        if not poll or time.monotonic() - held.checked < poll:
            return held.service
        parts = registry_parts(self._args.model_source.replace(PLACEHOLDER, series_id))
        if "alias" not in parts:
            return held.service
        held.checked = time.monotonic()  # before asking: concurrent requests do not all ask
        name = parts["name"]
        try:
            version = await asyncio.to_thread(alias_version, name, parts["alias"], self._args.mlflow_tracking_uri)
            if version != held.service.loaded.info.version:
                logger.info("series %s: %s@%s now names version %s; swapping it in", series_id, name,
                            parts["alias"], version)
                held.service = await asyncio.to_thread(self._load, series_id, version)
                self.swaps[series_id] += 1
                self._model_loads.inc(tags={"series_id": series_id, "kind": "swap"})
        except StefRayError as err:
            logger.warning("series %s: alias check failed, version %s keeps serving: %s", series_id,
                           held.service.loaded.info.version, str(err).splitlines()[0][:200])
        return held.service

    async def _answer(self, work) -> tuple[int, dict]:
        series_id = serve.get_multiplexed_model_id()
        try:
            service = await self._current(series_id, await self._service(series_id))
            return 200, await work(service) | {"series_id": series_id}
        except UnknownSeriesError as err:
            return 404, {"detail": str(err), "field": "series_id"}
        except RequestError as err:
            return err.status, err.payload()
        except StefRayError as err:  # the core's one-line message for data it cannot use
            return 422, {"detail": str(err), "field": "history"}

    async def forecast(self, body: bytes) -> tuple[int, dict]:
        async def work(service: ForecastService) -> dict:
            answer = service.forecast(service.parse(body))
            if not all_finite(answer):
                raise RequestError(422, "the inputs give a non-finite forecast: values far outside the range the "
                                   "model was trained on", "body")
            return answer

        started = time.perf_counter()
        status, payload = await self._answer(work)
        series_id = serve.get_multiplexed_model_id()
        self._answers.inc(tags={"series_id": series_id, "status": str(status)})
        if status == 200:
            self._latency.observe((time.perf_counter() - started) * 1000, tags={"series_id": series_id})
        return status, payload

    async def model_info(self) -> tuple[int, dict]:
        async def work(service: ForecastService) -> dict:
            return service.loaded.info.model_dump(mode="json")

        return await self._answer(work)

    def stats(self) -> dict:
        """How often each series' model was loaded in this replica (a reload means it had been evicted) and
        swapped for a new version of its alias."""
        return {"replica": str(serve.get_replica_context().replica_id), "loads": dict(self.loads),
                "swaps": dict(self.swaps)}


# --------------------------------------------------------------------------------------- HTTP
@serve.deployment(name="FleetIngress", ray_actor_options={"num_cpus": 0.25, "num_gpus": 0},
                  max_ongoing_requests=64)
@serve.ingress()
class FleetIngress:
    """HTTP in; each series to the forecasters with its id as the multiplexed model id."""

    def __init__(self, forecaster: DeploymentHandle, args: dict) -> None:
        self._args = fleet_args(args)
        self._forecaster = forecaster
        key = os.environ.get(self._args.api_key_env) if self._args.api_key_env else None
        self._api_key = key or None
        self._sink = open_sink(self._args)  # a bad setting fails the deployment, naming the variable
        self._submitter = ThreadPoolExecutor(1, thread_name_prefix="influx-submit")

    def _check_key(self, request: Request) -> None:
        check_api_key(request, self._api_key)

    def _store(self, answer: dict) -> None:
        """An answered forecast to the sink's spool, off the request's path (as the single-series app)."""
        if self._sink is not None:
            self._submitter.submit(lambda: self._sink.submit(forecast_points(answer))).add_done_callback(_logged)

    async def _store_actuals(self, series_id: str, body: bytes) -> dict:
        parsed = parse_actuals(body)
        if self._sink is None:
            raise RequestError(503, NO_STORE)
        accepted = await asyncio.to_thread(self._sink.submit_actuals, actuals_frame(parsed), value_column="load",
                                           series_id=series_id)
        return {"series_id": series_id, **actuals_answer(parsed, accepted)}

    async def _call(self, method: str, series_id: str, *args: Any) -> tuple[int, dict]:
        check_series_id(series_id)
        handle = self._forecaster.options(multiplexed_model_id=series_id)
        return await getattr(handle, method).remote(*args)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Built by a module-level function: Serve ships the ingress class by value, and routes defined in
        # its methods would lose the names their (string) annotations refer to.
        return fleet_http_app(self)


def open_sink(args: FleetArgs) -> Any:
    """The InfluxDB sink the args ask for, or None (influxdb_client is imported only when one is)."""
    enabled = args.influx if args.influx is not None else bool(os.environ.get("INFLUXDB_URL"))
    if not enabled:
        return None
    from stef_ray.integrations.influx import InfluxSink

    sink = InfluxSink.from_env(**args.influx_settings)
    logger.info("storing forecasts in InfluxDB at %s (spool %s)", sink.settings.url, sink.settings.spool_dir)
    return sink


def _logged(future: Future) -> None:
    if future.exception() is not None:
        logger.error("forecast not spooled for InfluxDB: %r", future.exception())


def fleet_http_app(ingress: FleetIngress) -> FastAPI:
    """The fleet's routes around an ingress replica: its key check, args and forecaster calls."""
    app = FastAPI(title="stef_ray fleet forecast API", version="1",
                  description="Hourly demand forecasts for many series, one model per series.")

    def reply(status: int, payload: dict) -> JSONResponse:
        return JSONResponse(payload, status_code=status)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return reply(200, {"status": "ok", "model_source": ingress._args.model_source})

    @app.get("/series/{series_id}/model")
    async def model(series_id: str, request: Request) -> JSONResponse:
        try:
            ingress._check_key(request)
            return reply(*await ingress._call("model_info", series_id))
        except RequestError as err:
            return reply(err.status, err.payload())

    @app.post("/series/{series_id}/forecast")
    async def forecast(series_id: str, request: Request) -> JSONResponse:
        """One series' forecast; the body is that of the single-series POST /forecast."""
        try:
            ingress._check_key(request)
            body = await read_body(request, ingress._args.max_body_bytes)
            status, payload = await ingress._call("forecast", series_id, body)
        except RequestError as err:
            return reply(err.status, err.payload())
        if status == 200:
            ingress._store(payload)
        return reply(status, payload)

    @app.post("/series/{series_id}/actuals")
    async def actuals(series_id: str, request: Request) -> JSONResponse:
        """One series' measured load (the body of the single-series POST /actuals), stored with its
        ``series_id``; sending an hour again changes nothing. A series needs no model to take actuals."""
        try:
            ingress._check_key(request)
            check_series_id(series_id)
            body = await read_body(request, ingress._args.max_body_bytes)
            return reply(200, await ingress._store_actuals(series_id, body))
        except RequestError as err:
            return reply(err.status, err.payload())

    @app.post("/forecast_batch")
    async def forecast_batch(request: Request) -> JSONResponse:
        """Many series at once: ``{"requests": [{"series_id": "...", <a /forecast body>}, ...]}``;
        ``{"results": [{"series_id", "status", "forecast" or "error"}, ...]}`` in the same order."""
        try:
            ingress._check_key(request)
            body = await read_body(request, ingress._args.max_body_bytes * ingress._args.max_batch_series)
            items = batch_items(body, ingress._args.max_batch_series)
        except RequestError as err:
            return reply(err.status, err.payload())

        async def one(item: dict) -> dict:
            series_id = str(item.pop("series_id", ""))
            try:
                status, payload = await ingress._call("forecast", series_id, json.dumps(item).encode())
            except RequestError as err:
                status, payload = err.status, err.payload()
            if status == 200:
                ingress._store(payload)
            return {"series_id": series_id, "status": status,
                    **({"forecast": payload} if status == 200 else {"error": payload})}

        results = await asyncio.gather(*(one(item) for item in items))
        return reply(200, {"results": list(results), "failed": sum(r["status"] != 200 for r in results)})

    return app


def batch_items(body: bytes, max_series: int) -> list[dict]:
    """The per-series bodies of a batch request; a 4xx naming what is wrong with its shape."""
    try:
        parsed = json.loads(body)
    except ValueError:
        raise RequestError(400, "body is not valid JSON", "body") from None
    items = parsed.get("requests") if isinstance(parsed, dict) else None
    if not isinstance(items, list) or not items:
        raise RequestError(422, 'body must be {"requests": [{"series_id": ..., "history": [...]}, ...]} with at '
                           "least one request", "requests")
    if len(items) > max_series:
        raise RequestError(413, f"{len(items)} series in one batch, at most {max_series}; split the batch", "requests")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("series_id"), str):
            raise RequestError(422, "each request needs a series_id string", f"requests[{i}].series_id")
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item["series_id"] in seen:
            raise RequestError(422, f"series {item['series_id']!r} appears twice; send each series once",
                               f"requests[{i}].series_id")
        seen.add(item["series_id"])
    return items


def build_fleet_app(args: dict | None = None) -> serve.Application:
    """The application for ``serve run``/``serve deploy`` (import_path
    ``stef_ray.serving.fleet_app:build_fleet_app``); ``args``: see ``FleetArgs``."""
    options = fleet_args(args).model_dump()
    return FleetIngress.bind(FleetForecaster.bind(options), options)
