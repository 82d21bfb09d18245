"""The three component deployments of the Serve application: ``Trend``, ``Seasonality`` and ``Residual``.
Each holds a cache of models by ``ModelKey`` and loads one it does not hold yet, so that a request is
answered by the model version it was validated against even while the ingress hot-swaps. ``Residual``
batches the calls of several ingress replicas into one forward pass and returns the history's trend and
seasonality with the residual (one handle round trip per request); ``Trend`` and ``Seasonality`` are what
the ingress asks when it fails or times out. How the ingress composes them: ``stef_ray.serving.app``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from ray import serve

from stef_ray.serving.app_args import ResidualConfig, validated
from stef_ray.serving.components import (
    ComponentBatch,
    ComponentCache,
    batch_residuals,
    load_full_model,
    load_seasonality,
    load_trend,
    season_log_batch,
    trend_log_batch,
)
from stef_ray.serving.model_source import ModelKey

# Small CPU shares so that all four deployments fit a 2-core machine (each replica would reserve a
# whole CPU by default); serve_config.yaml overrides these per deployment.
COMPONENT_OPTIONS = {"ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0}, "max_ongoing_requests": 64}


class _ComponentReplica:
    """A component replica's cache of models, its warm-up, and (trend, seasonality) the batched computation.
    Serve needs one class per deployment: the three below."""

    def __init__(self, loader: Callable[[str], Any],
                 compute: Callable[[Any, ComponentBatch], np.ndarray] | None = None) -> None:
        self._models = ComponentCache(loader)
        self._compute = compute

    async def warm(self, key: ModelKey) -> str:
        await asyncio.to_thread(self._models.get, key)  # off the loop: requests go on meanwhile
        return key.version

    async def predict(self, key: ModelKey, batch: ComponentBatch) -> np.ndarray:
        # async: a millisecond of numpy on the replica's loop beats a hop to Serve's thread pool
        return self._compute(self._models.get(key), batch)


@serve.deployment(name="Trend", **COMPONENT_OPTIONS)
class TrendDeployment(_ComponentReplica):
    """The log-linear trend for every hour of a batch of requests."""

    def __init__(self) -> None:
        super().__init__(load_trend, trend_log_batch)


@serve.deployment(name="Seasonality", **COMPONENT_OPTIONS)
class SeasonalityDeployment(_ComponentReplica):
    """Fourier seasonality and exogenous effects for every hour of a batch of requests."""

    def __init__(self) -> None:
        super().__init__(load_seasonality, season_log_batch)


class ResidualAnswer(NamedTuple):
    """Residual's answer to one call of B requests (log space)."""

    residual: np.ndarray  # (B, horizon)
    scale: np.ndarray  # (B,): the quantile band's scale
    trend: np.ndarray  # (B, n): every row of each request, as Trend returns it
    season: np.ndarray  # (B, n): as Seasonality returns it


@serve.deployment(name="Residual", **COMPONENT_OPTIONS)
class ResidualDeployment(_ComponentReplica):
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
        super().__init__(load_full_model)
        self._fault: str | None = None

    def reconfigure(self, user_config: dict) -> None:
        config = validated(ResidualConfig, user_config, "Residual user_config")
        self.predict.set_max_batch_size(config.max_batch_size)
        self.predict.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self._fault = config.fault

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
