"""The Ray Serve application: Trend, Seasonality and ResidualLSTM deployments composed by a FastAPI
ingress through deployment handles.

    POST /forecast -> ForecastIngress: validate (ForecastService.parse)
                        ├─ Trend.predict        ┐ concurrently
                        ├─ Seasonality.predict  ┘
                        └─ ResidualLSTM.predict (@serve.batch: one LSTM pass for concurrent requests)
                      -> assemble the MW split and quantiles

Hot swap: the ingress's ``user_config`` names the model source; ``reconfigure`` loads the new model
and then swaps it in. Every component call carries the key of the model the request was validated
against, and component replicas load a model they do not hold yet, so no answer mixes two versions
and no in-flight request fails. If the residual deployment fails or times out, the answer is trend +
seasonality with ``quality: "degraded"``.

Run it with ``serve run serve_config.yaml`` or ``stef-ray serve``; the builder is ``build_app``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import metrics
from ray.serve.handle import DeploymentHandle

from stef_ray.config import format_validation_error
from stef_ray.exceptions import ConfigError
from stef_ray.serving.plain_app import DEFAULT_MAX_BODY_BYTES, HttpSettings, build_http_app
from stef_ray.serving.schemas import RequestError
from stef_ray.serving.service import (
    ComponentCache,
    ForecastService,
    ModelKey,
    PreparedForecast,
    load_full_model,
    load_model,
    load_seasonality,
    load_trend,
    residual_log_batch,
    season_log,
    trend_log,
)

logger = logging.getLogger("ray.serve")

DEFAULT_MODEL_SOURCE = "models:/power-demand-hybrid@champion"
# Small CPU shares so that all four deployments fit a 2-core machine (each replica would reserve a
# whole CPU by default); serve_config.yaml overrides these per deployment.
COMPONENT_OPTIONS = {"ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0}, "max_ongoing_requests": 64}
LATENCY_BOUNDARIES_MS = [2, 5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 2000]


class AppArgs(BaseModel):
    """``args`` of the application in serve_config.yaml (or ``build_app``'s dict)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_source: str = Field(
        DEFAULT_MODEL_SOURCE,
        description="bundle folder or models:/NAME@ALIAS; used when the ingress's user_config names none",
    )
    residual_timeout_s: float = Field(
        2.0, gt=0, description="wait this long for the residual model before answering degraded"
    )
    api_key_env: str | None = Field(
        "STEF_RAY_API_KEY", description="environment variable holding the API key; unset or empty: no key"
    )
    api_key: str | None = Field(None, description="the API key itself (tests; prefer api_key_env)")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="larger bodies get 413")
    max_batch_size: int = Field(16, ge=1, le=256, description="residual requests run in one LSTM pass")
    batch_wait_timeout_s: float = Field(
        0.002, ge=0, le=1, description="how long the residual deployment waits to fill a batch"
    )


class IngressConfig(BaseModel):
    """The ingress's ``user_config``: changing it swaps the model without a restart."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_source: str = Field(description="bundle folder or models:/NAME@ALIAS")
    residual_timeout_s: float | None = Field(None, gt=0, description="overrides args.residual_timeout_s")


class ResidualConfig(BaseModel):
    """ResidualLSTM's ``user_config``: batching, and a fault switch for chaos tests."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, le=256, description="requests per LSTM pass")
    batch_wait_timeout_s: float = Field(0.002, ge=0, le=1, description="wait to fill a batch")
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
    """The log-linear trend for every hour of the request's frame."""

    def __init__(self) -> None:
        self._models = ComponentCache(load_trend)

    def warm(self, key: ModelKey) -> str:
        self._models.get(key)
        return key.version

    def predict(self, key: ModelKey, index: pd.DatetimeIndex) -> np.ndarray:
        return trend_log(self._models.get(key), index)


@serve.deployment(name="Seasonality", **COMPONENT_OPTIONS)
class SeasonalityDeployment:
    """Fourier seasonality and exogenous effects for every hour of the request's frame."""

    def __init__(self) -> None:
        self._models = ComponentCache(load_seasonality)

    def warm(self, key: ModelKey) -> str:
        self._models.get(key)
        return key.version

    def predict(self, key: ModelKey, exog_frame: pd.DataFrame) -> np.ndarray:
        return season_log(self._models.get(key), exog_frame)


@serve.deployment(name="ResidualLSTM", **COMPONENT_OPTIONS)
class ResidualDeployment:
    """The LSTM residual forecast; concurrent requests share one forward pass."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)  # a fraction of a CPU: intra-op threads would only contend
        self._models = ComponentCache(load_full_model)
        self._fault: str | None = None

    def reconfigure(self, user_config: dict) -> None:
        config = _validated(ResidualConfig, user_config, "ResidualLSTM user_config")
        self.predict.set_max_batch_size(config.max_batch_size)
        self.predict.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self._fault = config.fault

    def warm(self, key: ModelKey) -> str:
        self._models.get(key)
        return key.version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def predict(
        self, keys: list[ModelKey], frames: list[pd.DataFrame], trends: list[np.ndarray], seasons: list[np.ndarray]
    ) -> list[np.ndarray]:
        if self._fault == "raise":
            raise RuntimeError("injected fault (ResidualLSTM user_config fault=raise)")
        while self._fault == "hang":  # until reconfigured: a stuck model that recovers
            await asyncio.sleep(0.05)
        out: list[np.ndarray | None] = [None] * len(keys)
        for key in dict.fromkeys(keys):  # one pass per model version in the batch (two during a swap)
            chosen = [i for i, k in enumerate(keys) if k == key]
            results = residual_log_batch(
                self._models.get(key), [frames[i] for i in chosen], [trends[i] for i in chosen],
                [seasons[i] for i in chosen],
            )
            for i, result in zip(chosen, results, strict=True):
                out[i] = result
        return out


# ----------------------------------------------------------------------------------------- ingress
@serve.deployment(name="ForecastIngress", **COMPONENT_OPTIONS)
@serve.ingress()
class ForecastIngress:
    """HTTP in, components through handles, answer out. See the module docstring."""

    def __init__(
        self, trend: DeploymentHandle, seasonality: DeploymentHandle, residual: DeploymentHandle, args: dict
    ) -> None:
        self._args = _validated(AppArgs, args, "application args")
        self._trend, self._seasonality, self._residual = trend, seasonality, residual
        self._service: ForecastService | None = None
        self._residual_timeout_s = self._args.residual_timeout_s
        api_key = self._args.api_key or (os.environ.get(self._args.api_key_env) if self._args.api_key_env else None)
        self._settings = HttpSettings(api_key=api_key or None, max_body_bytes=self._args.max_body_bytes)
        self._swap_lock = asyncio.Lock()
        self._served = metrics.Counter("stef_forecasts_served", "forecasts answered", tag_keys=("quality",))
        self._degraded = metrics.Counter("stef_degraded_answers", "answers without the residual model")
        self._latency = metrics.Histogram(
            "stef_forecast_latency_ms", "POST /forecast latency in the ingress (ms)", LATENCY_BOUNDARIES_MS
        )
        self._model_version = metrics.Gauge(
            "stef_model_version", "1 for the model version being served, 0 for the one it replaced",
            tag_keys=("model_name", "version"),
        )

    def __serve_build_asgi_app__(self):
        return build_http_app(lambda: self._service, self._compute, self._settings, self._observe,
                              title="stef_ray forecast API")

    async def reconfigure(self, user_config: dict) -> None:
        config = _validated(IngressConfig, user_config or {"model_source": self._args.model_source},
                            "ForecastIngress user_config")
        self._residual_timeout_s = config.residual_timeout_s or self._args.residual_timeout_s
        async with self._swap_lock:
            old = self._service
            if old is not None and old.loaded.info.source == config.model_source:
                return
            # Load off the event loop: requests keep being answered by the old model meanwhile.
            loaded = await asyncio.to_thread(load_model, config.model_source)
            await self._warm_components(loaded.key)
            self._service = ForecastService(loaded)
        if old is not None:
            self._model_version.set(0, tags={"model_name": old.loaded.info.name, "version": old.loaded.info.version})
        self._model_version.set(1, tags={"model_name": loaded.info.name, "version": loaded.info.version})
        logger.info("serving %s version %s from %s", loaded.info.name, loaded.info.version, config.model_source)

    async def _warm_components(self, key: ModelKey) -> None:
        """Have one replica of each component load the model before requests need it (best effort)."""
        calls = [handle.warm.remote(key) for handle in (self._trend, self._seasonality, self._residual)]
        try:
            await asyncio.wait_for(asyncio.gather(*(_resolve(call) for call in calls)), timeout=60)
        except Exception as err:  # a component that cannot load it will say so on the first request
            logger.warning("warming the components with %s failed: %s", key.version, err)

    async def _compute(self, service: ForecastService, prepared: PreparedForecast) -> dict:
        key = service.key
        try:
            trend, season = await asyncio.gather(
                _resolve(self._trend.predict.remote(key, prepared.frame.index)),
                _resolve(self._seasonality.predict.remote(key, service.exog_frame(prepared))),
            )
        except Exception as err:
            logger.error("trend/seasonality failed: %r", err)
            raise RequestError(503, "the trend or seasonality deployment is unavailable; retry shortly") from None
        response = self._residual.predict.remote(key, prepared.frame, trend, season)
        try:
            residual, reason = await asyncio.wait_for(_resolve(response), self._residual_timeout_s), None
        except TimeoutError:
            response.cancel()
            residual, reason = None, f"no answer within {self._residual_timeout_s:g} s"
        except Exception as err:
            residual, reason = None, f"{type(err).__name__}"
            logger.warning("residual deployment failed, answering degraded: %r", err)
        return service.assemble(prepared, trend, season, residual, reason)

    def _observe(self, answer: dict | None, seconds: float) -> None:
        self._latency.observe(seconds * 1000)
        if answer is not None:
            self._served.inc(tags={"quality": answer["quality"]})
            if answer["quality"] == "degraded":
                self._degraded.inc()


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
        if str(app.get("import_path", "")).startswith(f"{__name__}:"):
            _validated(AppArgs, app.get("args"), f"{source}: applications[{app.get('name')}].args")


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
