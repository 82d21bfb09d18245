"""The Ray Serve application: Trend, Seasonality and Residual (the residual models: ridges, trees and, where
the validation blocks kept it, the neural residual) deployments composed by a FastAPI
ingress through deployment handles, in one of two ways (``composition`` in the app's args):

``residual_first`` (default)::

    POST /forecast -> ForecastIngress: validate (ForecastService.parse), batch concurrent requests
                        └─ Residual.predict  (@serve.batch: one pass for both ingress replicas) returns
                             trend, seasonality and residual; it computes the history's trend and
                             seasonality anyway, as its input
                           on failure or timeout:
                           ├─ Trend.predict         ┐ concurrently -> a degraded answer
                           └─ Seasonality.predict   ┘
                      -> assemble the MW split and quantiles

``fan_out``: all three are called concurrently for every batch; Trend and Seasonality's answers are used.

Both give the same numbers. A handle call costs more CPU than the trend and seasonality themselves
(~4.7 ms per call against ~2 ms of compute, benchmarks/serve_hop_cost.py), so on a small machine one call
per request is what keeps the one-client p50 low; fan_out suits nodes with cores to spare, where the
degraded answer is then ready the moment the residual times out.

Hot swap: the ingress's ``user_config`` names the model source; ``reconfigure`` loads the new model
and then swaps it in. Every component call carries the key of the model the request was validated
against, and component replicas load a model they do not hold yet, so no answer mixes two versions
and no in-flight request fails. If the residual deployment fails or times out, the answer is trend +
seasonality with ``quality: "degraded"``.

Operations (issue 5), all set in ``args`` or, reconfigurable in place, in the ingress's ``user_config``:
- ``influx``: each answered forecast goes to an ``InfluxSink`` from a background thread after the answer is
  built (the sink spools locally and delivers on its own thread), tagged with model name, version and the
  A/B ``arm``; a slow or absent InfluxDB never slows or fails an answer.
- ``alias_poll_s``: for ``models:/NAME@ALIAS`` sources the ingress asks the registry every so often which
  version the alias names and, when it moved, swaps to it as a hot swap does (a new champion without
  downtime; in-flight requests finish on the old model).
- ``challenger_fraction``: that share of the requests goes to ``challenger_source``; a request with an
  ``X-Request-ID`` header always lands on the same arm (a hash of the id), others on a seeded draw.

Run it with ``serve run serve_config.yaml`` or ``stef-ray serve``; the builder is ``build_app``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import metrics
from ray.serve.handle import DeploymentHandle

from stef_ray.config import format_validation_error
from stef_ray.exceptions import ConfigError, ModelNotFoundError
from stef_ray.integrations.influx import MEASUREMENT_FORECAST, InfluxSettings, forecast_lines
from stef_ray.quantiles import quantile_columns
from stef_ray.serving.plain_app import (
    DEFAULT_MAX_BODY_BYTES,
    NO_STORE,
    HttpSettings,
    actuals_frame,
    build_http_app,
)
from stef_ray.serving.schemas import ActualsRequest, RequestError
from stef_ray.serving.service import (
    ComponentBatch,
    ComponentCache,
    ForecastService,
    ModelKey,
    PreparedForecast,
    alias_version,
    batch_residuals,
    load_full_model,
    load_model,
    load_seasonality,
    load_trend,
    registry_parts,
    season_log_batch,
    trend_log_batch,
)

logger = logging.getLogger("ray.serve")

DEFAULT_MODEL_SOURCE = "models:/power-demand-hybrid@champion"
DEFAULT_CHALLENGER_SOURCE = "models:/power-demand-hybrid@challenger"
CHAMPION, CHALLENGER = "champion", "challenger"  # the A/B arms
REQUEST_ID_HEADER = "X-Request-ID"  # Ray Serve's own request-id header: a client may set it
TAG_ARM = "arm"  # extra tag on stored forecasts, next to the sink's model_name / model_version / issue_time
# Small CPU shares so that all four deployments fit a 2-core machine (each replica would reserve a
# whole CPU by default); serve_config.yaml overrides these per deployment.
COMPONENT_OPTIONS = {"ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0}, "max_ongoing_requests": 64}
BACKLOG_EVERY_S = 5.0  # how often the spool backlog gauge is read, at most (on the submitter thread)
LATENCY_BOUNDARIES_MS = [2, 5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 2000]
REPLICA_RETRIES = 1  # a request whose component replica died is asked again this many times (idempotent)
# The residual's wait grows to this many times its recent average answer time (weight of each new answer in
# that average below), so that a machine busy with other work answers late rather than degraded.
RESIDUAL_TIMEOUT_FACTOR = 10.0
RESIDUAL_EWMA_WEIGHT = 0.05
# Ray Serve's high-throughput mode (Ray >= 2.55; docs: "Enable High Throughput on Ray Serve"): HAProxy
# (C) in place of the Python proxy actor, requests straight to the ingress replicas, gRPC between
# deployments, user code on each replica's own event loop. Ray's processes read these when they start,
# so they belong in the environment of `ray start`, `serve run` or ray.init; `stef-ray serve` sets them.
# On 2 cores they cut the server's CPU per request about in half (docs/serving.md, benchmarks/serve_latency.py).
# Ray's 30 s minimum drain of a stopping ingress replica is for external load balancers; Serve's own
# HAProxy takes a replica out after two failed health checks 5 s apart, so 10 s is enough (and Ctrl-C on
# `stef-ray serve` returns in 10 s, not 30).
class AppArgs(BaseModel):
    """``args`` of the application in serve_config.yaml (or ``build_app``'s dict)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    composition: Literal["residual_first", "fan_out"] = Field(
        "residual_first", description="residual_first: one call to Residual, which returns all three "
        "components; Trend and Seasonality answer (concurrently) when it fails or times out. fan_out: all "
        "three called concurrently for every request (more CPU per request; see the module docstring)"
    )

    model_source: str = Field(
        DEFAULT_MODEL_SOURCE,
        description="bundle folder or models:/NAME@ALIAS; used when the ingress's user_config names none",
    )
    residual_timeout_s: float = Field(
        2.0, gt=0, description="wait at least this long for the residual model before answering degraded "
        "(longer while it answers slowly for everyone: 10 times its recent average)"
    )
    api_key_env: str | None = Field(
        "STEF_RAY_API_KEY", description="environment variable holding the API key; unset or empty: no key"
    )
    api_key: str | None = Field(None, description="the API key itself (tests; prefer api_key_env)")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="larger bodies get 413")
    max_batch_size: int = Field(16, ge=1, le=256, description="ingress batches joined into one residual pass")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=1, description="how long the residual deployment waits to fill a batch (0: it joins the calls that queued while the previous pass ran)"
    )
    component_batch_size: int = Field(
        16, ge=1, le=256, description="requests an ingress replica sends to the components in one call"
    )
    component_batch_wait_s: float = Field(
        0.003, ge=0, le=1, description="while other requests are in flight, how long an ingress replica "
        "waits to fill a batch for the components (a request alone goes at once)"
    )
    # The options below can also be set in the ingress's user_config (see IngressConfig).
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI for models:/ sources; default $MLFLOW_TRACKING_URI, "
        "else ./mlflow.db"
    )
    alias_poll_s: float = Field(
        0.0, ge=0, description="seconds between registry checks of a models:/NAME@ALIAS source; when the "
        "alias moves, the new version is swapped in without downtime. 0: off"
    )
    challenger_fraction: float = Field(
        0.0, ge=0, le=1, description="share of the requests answered by challenger_source (A/B split); 0: off"
    )
    challenger_source: str = Field(
        DEFAULT_CHALLENGER_SOURCE, description="bundle folder or models:/NAME@ALIAS of the challenger arm"
    )
    ab_seed: int | None = Field(
        None, description="seed of the arm draw for requests without an X-Request-ID header (None: random)"
    )
    influx: bool | None = Field(
        None, description="store each answered forecast in InfluxDB (asynchronously); None: when "
        "$INFLUXDB_URL is set"
    )
    influx_settings: dict[str, Any] = Field(
        default_factory=dict, description="InfluxSettings fields over the environment (INFLUXDB_URL, "
        "INFLUXDB_TOKEN, INFLUXDB_ORG, INFLUXDB_BUCKET, STEF_RAY_SPOOL_DIR), e.g. {spool_dir: /var/spool/stef}; "
        "keep the token in the environment"
    )

    @field_validator("influx_settings")
    @classmethod
    def _known_influx_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_influx_keys(value)


def check_influx_keys(value: dict[str, Any] | None) -> dict[str, Any] | None:
    unknown = sorted(set(value or {}) - set(InfluxSettings.model_fields))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(InfluxSettings.model_fields)}")
    return value


class IngressConfig(BaseModel):
    """The ingress's ``user_config``: changing it reconfigures the running replicas in place (a new model
    source is hot-swapped). Every key but model_source overrides the same key of the app's args."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_source: str = Field(description="bundle folder or models:/NAME@ALIAS")
    residual_timeout_s: float | None = Field(None, gt=0, description="overrides args.residual_timeout_s")
    mlflow_tracking_uri: str | None = Field(None, description="overrides args.mlflow_tracking_uri")
    alias_poll_s: float | None = Field(None, ge=0, description="overrides args.alias_poll_s")
    challenger_fraction: float | None = Field(None, ge=0, le=1, description="overrides args.challenger_fraction")
    challenger_source: str | None = Field(None, description="overrides args.challenger_source")
    ab_seed: int | None = Field(None, description="overrides args.ab_seed")
    influx: bool | None = Field(None, description="overrides args.influx")
    influx_settings: dict[str, Any] | None = Field(None, description="overrides args.influx_settings")

    @field_validator("influx_settings")
    @classmethod
    def _known_influx_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_influx_keys(value)


class ResidualConfig(BaseModel):
    """Residual's ``user_config``: batching, and a fault switch for chaos tests."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, le=256, description="requests per residual pass")
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1, description="wait to fill a batch")
    fault: str | None = Field(
        None, pattern="^(raise|hang)$", description="test hook: 'raise' fails every call, 'hang' holds calls until unset"
    )


def _validated(model: type[BaseModel], values: dict | None, source: str) -> Any:
    try:
        return model.model_validate(values or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


# -------------------------------------------------------------------------------------- components
@serve.deployment(name="Trend", **COMPONENT_OPTIONS)
class TrendDeployment:
    """The log-linear trend for every hour of a batch of requests."""

    def __init__(self) -> None:
        self._models = ComponentCache(load_trend)

    async def warm(self, key: ModelKey) -> str:
        await asyncio.to_thread(self._models.get, key)  # off the loop: requests go on meanwhile
        return key.version

    async def predict(self, key: ModelKey, batch: ComponentBatch) -> np.ndarray:
        # async: a millisecond of numpy on the replica's loop beats a hop to Serve's thread pool
        return trend_log_batch(self._models.get(key), batch)


@serve.deployment(name="Seasonality", **COMPONENT_OPTIONS)
class SeasonalityDeployment:
    """Fourier seasonality and exogenous effects for every hour of a batch of requests."""

    def __init__(self) -> None:
        self._models = ComponentCache(load_seasonality)

    async def warm(self, key: ModelKey) -> str:
        await asyncio.to_thread(self._models.get, key)  # off the loop: requests go on meanwhile
        return key.version

    async def predict(self, key: ModelKey, batch: ComponentBatch) -> np.ndarray:
        return season_log_batch(self._models.get(key), batch)  # async: as Trend.predict


class ResidualAnswer(NamedTuple):
    """Residual's answer to one call of B requests (log space)."""

    residual: np.ndarray  # (B, horizon)
    scale: np.ndarray  # (B,): the quantile band's scale
    trend: np.ndarray  # (B, n): every row of each request, as Trend returns it
    season: np.ndarray  # (B, n): as Seasonality returns it


@serve.deployment(name="Residual", **COMPONENT_OPTIONS)
class ResidualDeployment:
    """The residual forecast (per-hour ridges, trees, and the neural residual where the bundle keeps it). Each call is one ingress replica's batch of requests; ``@serve.batch``
    also joins the calls that arrive together (from several ingress replicas) into one forward pass.

    Its input, the history's residual, needs the history's trend and seasonality: it computes them from
    the same bundle (~2 ms per request, the numbers Trend and Seasonality return) rather than wait for
    those deployments, and returns them with the residual. A request thus pays one handle round trip, not
    two (a round trip costs more CPU than the trend and seasonality themselves).
    """

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)  # a fraction of a CPU: intra-op threads would only contend
        self._models = ComponentCache(load_full_model)
        self._fault: str | None = None

    def reconfigure(self, user_config: dict) -> None:
        config = _validated(ResidualConfig, user_config, "Residual user_config")
        self.predict.set_max_batch_size(config.max_batch_size)
        self.predict.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self._fault = config.fault

    async def warm(self, key: ModelKey) -> str:
        await asyncio.to_thread(self._models.get, key)  # off the loop: requests go on meanwhile
        return key.version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def predict(
        self, keys: list[ModelKey], batches: list[ComponentBatch], longs: list[list[pd.DataFrame | None]],
    ) -> list[ResidualAnswer]:
        if self._fault == "raise":
            raise RuntimeError("injected fault (Residual user_config fault=raise)")
        while self._fault == "hang":  # until reconfigured: a stuck model that recovers
            await asyncio.sleep(0.05)
        out: list[ResidualAnswer | None] = [None] * len(keys)
        for key in dict.fromkeys(keys):  # one pass per model version in the batch (two during a swap)
            calls = [i for i, k in enumerate(keys) if k == key]
            batch, model = ComponentBatch.concat([batches[i] for i in calls]), self._models.get(key)
            trend, season = trend_log_batch(model.trend, batch), season_log_batch(model.seasonality, batch)
            residual, scale = batch_residuals(model, batch, trend, season, [frame for i in calls for frame in longs[i]])
            offset = 0
            for i in calls:
                rows = slice(offset, offset + len(batches[i]))
                out[i] = ResidualAnswer(residual[rows], scale[rows], trend[rows], season[rows])
                offset += len(batches[i])
        return out



@dataclass
class Components:
    """What the components answered for one request (log space); ``residual`` None: degraded."""

    trend: np.ndarray
    season: np.ndarray
    residual: np.ndarray | None
    reason: str | None = None
    scale: float = 1.0  # of the quantile offsets


# ----------------------------------------------------------------------------------------- ingress
@serve.deployment(name="ForecastIngress", **COMPONENT_OPTIONS)
@serve.ingress()
class ForecastIngress:
    """HTTP in, components through handles, answer out. See the module docstring."""

    def __init__(
        self, trend: DeploymentHandle, seasonality: DeploymentHandle, residual: DeploymentHandle, args: dict
    ) -> None:
        self._args = _validated(AppArgs, args, "application args")
        self._options = self._args  # args with the user_config's overrides
        self._trend, self._seasonality, self._residual = trend, seasonality, residual
        self._arms: dict[str, ForecastService] = {}
        self._arm_of: weakref.WeakKeyDictionary[ForecastService, str] = weakref.WeakKeyDictionary()
        self._rng = random.Random(self._args.ab_seed)
        self._residual_timeout_s = self._args.residual_timeout_s
        self._residual_seconds = 0.0  # moving average of the residual's answer time (RESIDUAL_EWMA_WEIGHT)
        self._in_flight = 0
        self._components.set_max_batch_size(self._args.component_batch_size)
        api_key = self._args.api_key or (os.environ.get(self._args.api_key_env) if self._args.api_key_env else None)
        self._settings = HttpSettings(api_key=api_key or None, max_body_bytes=self._args.max_body_bytes)
        self._swap_lock = asyncio.Lock()
        self._poller: asyncio.Task | None = None
        self._poll_errors: dict[str, str] = {}
        self._waiting: str | None = None  # why there is no champion yet (a fresh stack), for the 503s
        self._sink: Any = None  # InfluxSink (influxdb_client is imported only when a sink is configured)
        self._sink_settings: dict | None = None
        # One thread turns answers into points and spools them, after the answer is built: the request
        # never waits on line-protocol formatting, an fsync or the network.
        self._submitter = ThreadPoolExecutor(1, thread_name_prefix="influx-submit")
        self._served = metrics.Counter("stef_forecasts_served", "forecasts answered", tag_keys=("quality", "arm"))
        self._degraded = metrics.Counter("stef_degraded_answers", "answers without the residual model")
        self._actuals = metrics.Counter("stef_actuals_received", "measured hours accepted by POST /actuals")
        self._backlog = metrics.Gauge("stef_spool_backlog_lines", "points in this replica's spool not yet delivered "
                                      "to the time-series store")
        self._backlog_read_at = 0.0
        self._stored = metrics.Counter("stef_forecasts_spooled", "forecasts handed to the InfluxDB sink",
                                       tag_keys=("outcome",))
        self._latency = metrics.Histogram(
            "stef_forecast_latency_ms", "POST /forecast latency in the ingress (ms)", LATENCY_BOUNDARIES_MS
        )
        self._batch_size = metrics.Histogram(
            "stef_component_batch_size", "requests per call to the component deployments", [1, 2, 4, 8, 16, 32]
        )
        self._model_version = metrics.Gauge(
            "stef_model_version", "1 for a model version being served, 0 for one it replaced",
            tag_keys=("model_name", "version", "arm"),
        )

    def __serve_build_asgi_app__(self):
        return build_http_app(lambda: self._arms.get(CHAMPION), self._compute, self._settings, self._observe,
                              title="stef_ray forecast API", select=self._select, unavailable=lambda: self._waiting,
                              store_actuals=self._store_actuals)

    # ------------------------------------------------------------------ configuration
    async def reconfigure(self, user_config: dict) -> None:
        config = _validated(IngressConfig, user_config or {"model_source": self._args.model_source},
                            "ForecastIngress user_config")
        overrides = {k: v for k, v in config.model_dump(exclude={"model_source"}).items() if v is not None}
        options = self._args.model_copy(update={**overrides, "model_source": config.model_source})
        self._residual_timeout_s = options.residual_timeout_s
        await self._configure_sink(options)  # first: a bad sink setting fails before any model moves
        async with self._swap_lock:
            self._options = options
            champion = self._arms.get(CHAMPION)
            if champion is None or champion.loaded.info.source != options.model_source:
                # Loaded off the event loop: requests keep being answered by the old model meanwhile.
                try:
                    self._install(CHAMPION, await self._load(options.model_source))
                except ModelNotFoundError as err:
                    if champion is not None or not self._polls(options.model_source):
                        raise  # a swap to a model that is not there fails; the one in use keeps serving
                    # A fresh stack: nothing registered yet. Deploy anyway, answer 503 saying why, and go
                    # live when the alias poller sees the first registration.
                    self._waiting = (f"no model to serve yet ({err}); the service goes live when "
                                     f"{options.model_source} is registered (checked every {options.alias_poll_s:g} s)")
                    logger.warning("%s", self._waiting)
            challenger = self._arms.get(CHALLENGER)
            if options.challenger_fraction <= 0:
                self._remove(CHALLENGER)
            elif challenger is None or challenger.loaded.info.source != options.challenger_source:
                self._remove(CHALLENGER)
                try:
                    self._install(CHALLENGER, await self._load(options.challenger_source))
                except Exception as err:  # no challenger yet is normal: every request goes to the champion
                    retry = " (alias polling retries it)" if self._polls(options.challenger_source) else ""
                    logger.warning("challenger %s not loaded, the champion answers everything%s: %s",
                                   options.challenger_source, retry, err)
        self._rng = random.Random(options.ab_seed)
        self._restart_poller(options)

    def _polls(self, source: str) -> bool:
        return self._options.alias_poll_s > 0 and "alias" in registry_parts(source)

    async def _load(self, source: str, version: str | None = None) -> ForecastService:
        loaded = await asyncio.to_thread(load_model, source, self._options.mlflow_tracking_uri, version)
        await self._warm_components(loaded.key)
        return ForecastService(loaded)

    def _install(self, arm: str, service: ForecastService) -> None:
        """Make ``service`` answer ``arm``'s next requests; requests already holding the old one finish on it."""
        old = self._arms.get(arm)
        self._arms[arm] = service
        self._arm_of[service] = arm
        if arm == CHAMPION:
            self._waiting = None
        info = service.loaded.info
        if old is not None:
            self._model_version.set(0, tags={"model_name": old.loaded.info.name,
                                             "version": old.loaded.info.version, "arm": arm})
        self._model_version.set(1, tags={"model_name": info.name, "version": info.version, "arm": arm})
        logger.info("%s: serving %s version %s from %s", arm, info.name, info.version, info.source)

    def _remove(self, arm: str) -> None:
        old = self._arms.pop(arm, None)
        if old is not None:
            self._model_version.set(0, tags={"model_name": old.loaded.info.name,
                                             "version": old.loaded.info.version, "arm": arm})

    async def _warm_components(self, key: ModelKey) -> None:
        """Have one replica of each component load the model before requests need it (best effort)."""
        calls = [handle.warm.remote(key) for handle in (self._trend, self._seasonality, self._residual)]
        try:
            await asyncio.wait_for(asyncio.gather(*(_resolve(call) for call in calls)), timeout=60)
        except Exception as err:  # a component that cannot load it will say so on the first request
            logger.warning("warming the components with %s failed: %s", key.version, err)

    # ------------------------------------------------------------------ alias polling
    def _sources(self) -> dict[str, str]:
        options = self._options
        sources = {CHAMPION: options.model_source}
        if options.challenger_fraction > 0:
            sources[CHALLENGER] = options.challenger_source
        return sources

    def _restart_poller(self, options: AppArgs) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if options.alias_poll_s > 0 and any(self._polls(source) for source in self._sources().values()):
            self._poller = asyncio.get_running_loop().create_task(self._poll_aliases(options.alias_poll_s))

    async def _poll_aliases(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            for arm, source in self._sources().items():
                try:
                    await self._follow_alias(arm, source)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # the registry is away or the alias is gone: keep serving, retry
                    message = f"{type(err).__name__}: {err}"
                    if self._poll_errors.get(arm) != message:  # once per distinct error, not every poll
                        logger.warning("%s: cannot follow %s: %s", arm, source, message)
                    self._poll_errors[arm] = message
                else:
                    self._poll_errors.pop(arm, None)

    async def _follow_alias(self, arm: str, source: str) -> None:
        parts = registry_parts(source)
        if "alias" not in parts:
            return
        version = await asyncio.to_thread(alias_version, parts["name"], parts["alias"],
                                          self._options.mlflow_tracking_uri)
        current = self._arms.get(arm)
        if current is not None and current.loaded.info.version == version and current.loaded.info.source == source:
            return
        async with self._swap_lock:
            if self._sources().get(arm) != source:
                return  # reconfigured while we asked
            logger.info("%s: %s now names version %s; swapping it in", arm, source, version)
            self._install(arm, await self._load(source, version))

    # ------------------------------------------------------------------ the InfluxDB sink
    async def _configure_sink(self, options: AppArgs) -> None:
        enabled = options.influx if options.influx is not None else bool(os.environ.get("INFLUXDB_URL"))
        wanted = dict(options.influx_settings) if enabled else None
        if wanted == self._sink_settings:
            return
        sink = None
        if wanted is not None:
            from stef_ray.integrations.influx import InfluxSink

            sink = await asyncio.to_thread(InfluxSink.from_env, **wanted)  # ConfigError names the variable
            logger.info("storing forecasts in InfluxDB at %s (spool %s)", sink.settings.url, sink.settings.spool_dir)
        old, self._sink, self._sink_settings = self._sink, sink, wanted
        if old is not None:  # after the forecasts already queued for it; what it cannot deliver stays spooled
            self._submitter.submit(old.close, 2.0)

    async def _store_actuals(self, request: ActualsRequest) -> int:
        """``POST /actuals``: the hours into the sink's spool before the answer (a 200 means they are on
        disk and will reach the store); the same line protocol as `stef-ray ingest`."""
        sink = self._sink
        if sink is None:
            raise RequestError(503, NO_STORE)
        accepted = await asyncio.to_thread(sink.submit_actuals, actuals_frame(request), value_column="load")
        self._actuals.inc(accepted)
        return accepted

    def _store(self, answer: dict) -> None:
        sink = self._sink
        if sink is None:
            return
        self._submitter.submit(_spool_forecast, sink, answer).add_done_callback(self._stored_outcome)

    def _stored_outcome(self, future: Future) -> None:
        error = future.exception()
        if error is not None:
            logger.error("forecast not spooled for InfluxDB: %r", error)
        self._stored.inc(tags={"outcome": "error" if error is not None else "spooled"})
        sink, now = self._sink, time.monotonic()
        if sink is not None and now - self._backlog_read_at > BACKLOG_EVERY_S:  # reading the spool costs file reads
            self._backlog_read_at = now
            self._backlog.set(sink.spool.pending_lines())

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown: spool what is queued, give the sink a moment to deliver.
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.cancel()
        submitter = getattr(self, "_submitter", None)
        if submitter is not None:
            submitter.shutdown(wait=True)
        sink = getattr(self, "_sink", None)
        if sink is not None:
            sink.close(2.0)
            self._sink = None

    # ------------------------------------------------------------------ requests
    def _select(self, request: Any) -> ForecastService | None:
        """The arm that answers this request: the challenger with probability challenger_fraction."""
        champion, challenger = self._arms.get(CHAMPION), self._arms.get(CHALLENGER)
        fraction = self._options.challenger_fraction
        if challenger is None or fraction <= 0 or champion is None:
            return champion
        request_id = request.headers.get(REQUEST_ID_HEADER)
        draw = _unit_interval(request_id) if request_id else self._rng.random()
        return challenger if draw < fraction else champion

    async def _compute(self, service: ForecastService, prepared: PreparedForecast) -> dict:
        # Under load, a few milliseconds' wait fills batches (fewer component calls per request); a
        # request alone does not wait for company that is not coming.
        self._in_flight += 1
        try:
            self._components.set_batch_wait_timeout_s(self._args.component_batch_wait_s if self._in_flight > 1
                                                      else 0.0)
            result = await self._components(service, prepared)
        finally:
            self._in_flight -= 1
        if isinstance(result, RequestError):
            raise result
        answer = service.assemble(prepared, result.trend, result.season, result.residual, result.reason,
                                  result.scale)
        answer["arm"] = self._arm_of.get(service, CHAMPION)
        return answer

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _components(
        self, services: list[ForecastService], prepared: list[PreparedForecast]
    ) -> list[Components | RequestError]:
        """The requests that arrived together, in one call per component per model (an A/B split or a
        swap can put two models in a batch; a model's frames all have its history_hours + horizon rows). See
        ``_compute`` for the wait that fills a batch."""
        groups: dict[ModelKey, list[int]] = {}
        for i, service in enumerate(services):
            groups.setdefault(service.key, []).append(i)
        out: list[Components | RequestError | None] = [None] * len(services)
        answers = await asyncio.gather(*(self._components_of(key, [prepared[i] for i in rows])
                                         for key, rows in groups.items()))
        for rows, answer in zip(groups.values(), answers, strict=True):
            for i, row in enumerate(rows):
                out[row] = answer if isinstance(answer, RequestError) else answer[i]
        return out

    async def _components_of(self, key: ModelKey, prepared: list[PreparedForecast]) -> list[Components] | RequestError:
        batch = ComponentBatch.stack(prepared)
        self._batch_size.observe(len(batch))
        longs = [p.long_frame for p in prepared]  # None for a request with no hours before history_hours

        def ask_residual() -> Any:
            return self._residual.predict.remote(key, batch, longs)

        response = ask_residual()
        started = asyncio.get_running_loop().time()
        if self._args.composition == "fan_out":  # all three at once; the residual may be late or fail
            try:
                trend, season = await self._trend_and_season(key, batch)
            except Exception:
                response.cancel()
                return RequestError(503, "the trend or seasonality deployment is unavailable; retry shortly")
        answer, reason = await self._residual_answer(response, started, ask_residual)
        if answer is not None:
            if self._args.composition == "residual_first":
                trend, season = answer.trend, answer.season
            return [Components(trend[i], season[i], answer.residual[i], None, float(answer.scale[i]))
                    for i in range(len(batch))]
        if self._args.composition == "residual_first":  # degraded: ask Trend and Seasonality now
            try:
                trend, season = await self._trend_and_season(key, batch)
            except Exception:
                return RequestError(503, "the residual, trend and seasonality deployments are unavailable; "
                                    "retry shortly")
        return [Components(trend[i], season[i], None, reason) for i in range(len(batch))]

    async def _trend_and_season(self, key: ModelKey, batch: ComponentBatch) -> tuple[np.ndarray, np.ndarray]:
        # A forecast is a pure function of the request: where a replica died under it, asking again (the
        # router then picks a live one) is safe, and turns a killed replica into a slower answer, not an error.
        for attempt in range(1 + REPLICA_RETRIES):
            try:
                return await asyncio.gather(_resolve(self._trend.predict.remote(key, batch)),
                                            _resolve(self._seasonality.predict.remote(key, batch)))
            except RayActorError as err:
                if attempt == REPLICA_RETRIES:
                    logger.error("trend/seasonality failed: %r", err)
                    raise
                logger.warning("a trend/seasonality replica died under a request; asking another: %r", err)
            except Exception as err:
                logger.error("trend/seasonality failed: %r", err)
                raise
        raise AssertionError("unreachable")

    def _residual_timeout(self) -> float:
        """The configured wait, or longer where the residual has been answering slowly for everyone (a busy
        machine): a request then waits its turn rather than come back degraded. A replica that hangs or
        fails still degrades after it, since only answers move the average."""
        return max(self._residual_timeout_s, RESIDUAL_TIMEOUT_FACTOR * self._residual_seconds)

    async def _residual_answer(self, response: Any, started: float, ask_again: Callable[[], Any]
                               ) -> tuple[ResidualAnswer | None, str | None]:
        """The residual deployment's answer, or None and why (it failed, or took longer than the timeout).
        A replica that died under the request is asked again once (``ask_again``) while time is left."""
        loop = asyncio.get_running_loop()
        timeout = self._residual_timeout()
        for attempt in range(1 + REPLICA_RETRIES):
            # What is left of the residual's time; a moment at least, to collect an answer already there.
            left = max(timeout - (loop.time() - started), 0.01)
            try:
                answer = await asyncio.wait_for(_resolve(response), left)
                self._residual_seconds += RESIDUAL_EWMA_WEIGHT * (loop.time() - started - self._residual_seconds)
                return answer, None
            except TimeoutError:
                response.cancel()
                return None, f"no answer within {timeout:.3g} s"
            except RayActorError as err:
                if attempt == REPLICA_RETRIES or loop.time() - started >= timeout:
                    logger.warning("residual deployment failed, answering degraded: %r", err)
                    return None, f"{type(err).__name__}"
                logger.warning("a residual replica died under a request; asking another: %r", err)
                response = ask_again()
            except Exception as err:
                logger.warning("residual deployment failed, answering degraded: %r", err)
                return None, f"{type(err).__name__}"
        raise AssertionError("unreachable")

    def _observe(self, answer: dict | None, seconds: float) -> None:
        self._latency.observe(seconds * 1000)
        if answer is not None:
            self._served.inc(tags={"quality": answer["quality"], "arm": answer.get("arm") or CHAMPION})
            if answer["quality"] == "degraded":
                self._degraded.inc()
            self._store(answer)


def _unit_interval(text: str) -> float:
    """A stable draw in [0, 1) from a request id: the same id always lands on the same arm."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def forecast_points(answer: dict) -> list[str]:
    """Line protocol for an answer: the sink's forecast points plus the ``arm`` tag."""
    columns = {"timestamp": pd.to_datetime(answer["timestamps"], utc=True)}
    for name in ("forecast", "trend", "seasonality", "residual", *quantile_columns(answer)):
        if answer.get(name) is not None:
            columns[name] = answer[name]
    lines = forecast_lines(pd.DataFrame(columns), model_name=answer["model_name"],
                           model_version=answer["model_version"], issue_time=pd.Timestamp(answer["origin"]),
                           series_id=answer.get("series_id"))  # a fleet's answer names its series
    # forecast_lines has no extra tags; "arm" sorts before the sink's own tags, so it goes first.
    prefix = f"{MEASUREMENT_FORECAST},"
    arm = answer.get("arm") or CHAMPION
    return [prefix + f"{TAG_ARM}={arm}," + line[len(prefix):] if line.startswith(prefix) else line
            for line in lines]


def _spool_forecast(sink: Any, answer: dict) -> int:
    return sink.submit(forecast_points(answer))


async def _resolve(response: Any) -> Any:
    return await response


# ----------------------------------------------------------------------------------------- builder
def build_app(args: dict | None = None) -> serve.Application:
    """The application for ``serve run``/``serve deploy`` (import_path ``stef_ray.serving.app:build_app``).

    ``args``: see ``AppArgs``. The model source in the ingress's ``user_config`` (serve_config.yaml)
    wins over ``args.model_source``; change it there to hot-swap the model.
    """
    config = _validated(AppArgs, args, "application args")
    residual = ResidualDeployment.options(user_config={
        "max_batch_size": config.max_batch_size, "batch_wait_timeout_s": config.batch_wait_timeout_s,
    }).bind()
    ingress = ForecastIngress.options(user_config={"model_source": config.model_source})
    return ingress.bind(TrendDeployment.bind(), SeasonalityDeployment.bind(), residual,
                        config.model_dump())


# ------------------------------------------------------------------------------ config-file deploys
INGRESS = "ForecastIngress"


def read_serve_config(
    path: str | os.PathLike, model_source: str | None = None, host: str | None = None, port: int | None = None
) -> dict:
    """serve_config.yaml as a dict validated against Serve's schema, with command-line overrides.

    ``model_source`` replaces the model of every application built by ``build_app`` (its args and its
    ingress's user_config). Raises ConfigError naming the key that Serve's schema refuses.
    """
    from stef_ray.config import read_yaml

    raw = read_yaml(path)
    for app in raw.get("applications") or []:
        if model_source is None or not str(app.get("import_path", "")).startswith(f"{__name__}:"):
            continue
        app.setdefault("args", {})["model_source"] = model_source
        deployments = app.setdefault("deployments", [])
        ingress = next((d for d in deployments if d.get("name") == INGRESS), None)
        if ingress is None:
            deployments.append(ingress := {"name": INGRESS})
        ingress["user_config"] = {**(ingress.get("user_config") or {}), "model_source": model_source}
    if host is not None or port is not None:
        http = raw.setdefault("http_options", {})
        http.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    validate_serve_config(raw, str(path))
    return raw


def validate_serve_config(raw: dict, source: str = "serve config") -> None:
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    for app in raw.get("applications") or []:
        if str(app.get("import_path", "")) == "stef_ray.serving.fleet_app:build_fleet_app":
            from stef_ray.serving.fleet_app import FleetArgs

            _validated(FleetArgs, app.get("args"), f"{source}: applications[{app.get('name')}].args")
        if str(app.get("import_path", "")).startswith(f"{__name__}:"):
            where = f"{source}: applications[{app.get('name')}]"
            _validated(AppArgs, app.get("args"), f"{where}.args")
            for deployment in app.get("deployments") or []:
                if deployment.get("name") == INGRESS and deployment.get("user_config") is not None:
                    _validated(IngressConfig, deployment["user_config"], f"{where}.{INGRESS}.user_config")


def deploy_config(raw: dict, wait_s: float = 120.0) -> None:
    """Deploy a Serve config dict on the connected Ray cluster, as ``serve run/deploy CONFIG`` do, and
    wait until every application runs. Re-deploying with only ``user_config`` changed reconfigures the
    replicas in place (that is how the model is hot-swapped)."""
    import time

    from ray.serve._private import api as serve_private  # what `serve run config.yaml` itself calls
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(raw)
    client = serve_private.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
    )
    client.deploy_apps(schema, _blocking=False)
    names = {app.name for app in schema.applications}
    deadline = time.monotonic() + wait_s
    while True:
        statuses = {s.name: s.app_status for s in client.list_serve_statuses() if s.name in names}
        states = {name: str(getattr(status.status, "value", status.status)) for name, status in statuses.items()}
        failed = [name for name, state in states.items() if state in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise ConfigError(f"application {failed[0]} failed to deploy: {statuses[failed[0]].message[:400]}")
        if len(states) == len(names) and all(state == "RUNNING" for state in states.values()):
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"applications not running after {wait_s:.0f} s: {states}")
        time.sleep(0.2)
