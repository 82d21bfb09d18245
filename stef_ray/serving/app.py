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

Run it with ``serve run serve_config.yaml`` or ``stef-ray serve``; the builder is ``build_app``. The pieces:
``app_args`` (AppArgs and the user_configs), ``deployments`` (Trend, Seasonality, Residual), ``ingress``
(ForecastIngress), ``forecast_store`` (the InfluxDB sink) and ``serve_config`` (reading, checking and
deploying serve_config.yaml).
"""

from __future__ import annotations

from ray import serve

from stef_ray.serving.app_args import AppArgs, validated
from stef_ray.serving.deployments import ResidualDeployment, SeasonalityDeployment, TrendDeployment
from stef_ray.serving.ingress import ForecastIngress

# AppArgs is imported here for its documented address (serve_config.yaml: "see stef_ray.serving.app.AppArgs").
__all__ = ["AppArgs", "build_app"]


def build_app(args: dict | None = None) -> serve.Application:
    """The application for ``serve run``/``serve deploy`` (import_path ``stef_ray.serving.app:build_app``).

    ``args``: see ``AppArgs``. The model source in the ingress's ``user_config`` (serve_config.yaml)
    wins over ``args.model_source``; change it there to hot-swap the model.
    """
    config = validated(AppArgs, args, "application args")
    residual = ResidualDeployment.options(user_config={
        "max_batch_size": config.max_batch_size, "batch_wait_timeout_s": config.batch_wait_timeout_s,
    }).bind()
    ingress = ForecastIngress.options(user_config={"model_source": config.model_source})
    return ingress.bind(TrendDeployment.bind(), SeasonalityDeployment.bind(), residual,
                        config.model_dump())
