"""The Serve application's ingress, ``ForecastIngress``: it validates each request with the
``ForecastService`` of the arm (champion or challenger) that answers it, sends the requests that arrive
together to the component deployments in one call per model, answers degraded (trend + seasonality) when
the residual fails or is late, and hot-swaps models: from its ``user_config`` and, for ``models:/NAME@ALIAS``
sources, by polling the registry. How the pieces fit, and the operations it offers, are described in
``stef_ray.serving.app``, which builds the application; the components are in ``deployments``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import metrics
from ray.serve.handle import DeploymentHandle

from stef_ray.exceptions import ModelNotFoundError
from stef_ray.serving.app_args import CHALLENGER, CHAMPION, AppArgs, IngressConfig, validated
from stef_ray.serving.components import ComponentBatch
from stef_ray.serving.deployments import COMPONENT_OPTIONS, ResidualAnswer
from stef_ray.serving.forecast_store import ForecastStore
from stef_ray.serving.model_source import ModelKey, alias_version, load_model, registry_parts
from stef_ray.serving.plain_app import HttpSettings, build_http_app
from stef_ray.serving.prepared import PreparedForecast
from stef_ray.serving.residual_wait import ResidualWait
from stef_ray.serving.schemas import RequestError
from stef_ray.serving.service import ForecastService

logger = logging.getLogger("ray.serve")

REQUEST_ID_HEADER = "X-Request-ID"  # Ray Serve's own request-id header: a client may set it
LATENCY_BOUNDARIES_MS = [2, 5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 2000]
REPLICA_RETRIES = 1  # a request whose component replica died is asked again this many times (idempotent)


@dataclass
class Components:
    """What the components answered for one request (log space); ``residual`` None: degraded."""

    trend: np.ndarray
    season: np.ndarray
    residual: np.ndarray | None
    reason: str | None = None
    scale: float = 1.0  # of the quantile offsets


@serve.deployment(name="ForecastIngress", **COMPONENT_OPTIONS)
@serve.ingress()
class ForecastIngress:
    """HTTP in, components through handles, answer out. See ``stef_ray.serving.app``'s docstring."""

    def __init__(
        self, trend: DeploymentHandle, seasonality: DeploymentHandle, residual: DeploymentHandle, args: dict
    ) -> None:
        self._args = validated(AppArgs, args, "application args")
        self._options = self._args  # args with the user_config's overrides
        self._trend, self._seasonality, self._residual = trend, seasonality, residual
        self._arms: dict[str, ForecastService] = {}
        self._arm_of: weakref.WeakKeyDictionary[ForecastService, str] = weakref.WeakKeyDictionary()
        self._rng = random.Random(self._args.ab_seed)
        self._residual_wait = ResidualWait(self._args.residual_timeout_s)  # grows on a busy machine
        self._in_flight = 0
        self._components.set_max_batch_size(self._args.component_batch_size)
        api_key = self._args.api_key or (os.environ.get(self._args.api_key_env) if self._args.api_key_env else None)
        self._settings = HttpSettings(api_key=api_key or None, max_body_bytes=self._args.max_body_bytes)
        self._swap_lock = asyncio.Lock()
        self._poller: asyncio.Task | None = None
        self._poll_errors: dict[str, str] = {}
        self._waiting: str | None = None  # why there is no champion yet (a fresh stack), for the 503s
        self._forecast_store = ForecastStore()  # InfluxDB; configured with the user_config in reconfigure
        self._served = metrics.Counter("stef_forecasts_served", "forecasts answered", tag_keys=("quality", "arm"))
        self._degraded = metrics.Counter("stef_degraded_answers", "answers without the residual model")
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
                              store_actuals=self._forecast_store.store_actuals)

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown: spool what is queued, give the sink a moment to deliver.
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.cancel()
        store = getattr(self, "_forecast_store", None)
        if store is not None:
            store.close()

    # ------------------------------------------------------------------ configuration
    async def reconfigure(self, user_config: dict) -> None:
        config = validated(IngressConfig, user_config or {"model_source": self._args.model_source},
                           "ForecastIngress user_config")
        overrides = {k: v for k, v in config.model_dump(exclude={"model_source"}).items() if v is not None}
        options = self._args.model_copy(update={**overrides, "model_source": config.model_source})
        self._residual_wait.floor_s = options.residual_timeout_s
        await self._forecast_store.configure(options)  # first: a bad sink setting fails before any model moves
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

    async def _residual_answer(self, response: Any, started: float, ask_again: Callable[[], Any]
                               ) -> tuple[ResidualAnswer | None, str | None]:
        """The residual deployment's answer, or None and why (it failed, or took longer than the timeout).
        A replica that died under the request is asked again once (``ask_again``) while time is left."""
        loop = asyncio.get_running_loop()
        timeout = self._residual_wait.timeout()  # longer on a machine busy for everyone: see ResidualWait
        for attempt in range(1 + REPLICA_RETRIES):
            # What is left of the residual's time; a moment at least, to collect an answer already there.
            left = max(timeout - (loop.time() - started), 0.01)
            try:
                answer = await asyncio.wait_for(_resolve(response), left)
                self._residual_wait.answered(loop.time() - started)
                return answer, None
            except TimeoutError:
                self._residual_wait.timed_out()
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
            self._forecast_store.store(answer)


def _unit_interval(text: str) -> float:
    """A stable draw in [0, 1) from a request id: the same id always lands on the same arm."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


async def _resolve(response: Any) -> Any:
    return await response
