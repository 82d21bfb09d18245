"""Forecasts and actuals into the time-series store from the Serve ingress, without delaying answers.
``forecast_points`` turns an answer into the InfluxDB sink's line protocol with the A/B ``arm`` tag (the
fleet app stores its answers with it too). ``ForecastStore`` is one ingress replica's sink, set from the
app's args and the ingress's user_config: each answered forecast is spooled from one background thread after
the answer is built (the sink spools locally and delivers on its own thread), so a slow or absent InfluxDB
never slows or fails an answer, and ``POST /actuals`` goes into the same spool. influxdb_client is imported
only when a sink is configured.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd
from ray.serve import metrics

from stef_ray.integrations.influx_points import MEASUREMENT_FORECAST, forecast_lines
from stef_ray.quantiles import quantile_columns
from stef_ray.serving.app_args import CHAMPION, AppArgs
from stef_ray.serving.plain_app import NO_STORE, actuals_frame
from stef_ray.serving.schemas import ActualsRequest, RequestError

logger = logging.getLogger("ray.serve")

TAG_ARM = "arm"  # extra tag on stored forecasts, next to the sink's model_name / model_version / issue_time
BACKLOG_EVERY_S = 5.0  # how often the spool backlog gauge is read, at most (on the submitter thread)


class ForecastStore:
    """One ingress replica's InfluxDB sink (none: nothing is stored, ``POST /actuals`` answers 503) and the
    thread that feeds it, with the metrics of what was stored."""

    def __init__(self) -> None:
        self._sink: Any = None  # InfluxSink (influxdb_client is imported only when a sink is configured)
        self._sink_settings: dict | None = None
        # One thread turns answers into points and spools them, after the answer is built: the request
        # never waits on line-protocol formatting, an fsync or the network.
        self._submitter = ThreadPoolExecutor(1, thread_name_prefix="influx-submit")
        self._actuals = metrics.Counter("stef_actuals_received", "measured hours accepted by POST /actuals")
        self._backlog = metrics.Gauge("stef_spool_backlog_lines", "points in this replica's spool not yet delivered "
                                      "to the time-series store")
        self._backlog_read_at = 0.0
        self._stored = metrics.Counter("stef_forecasts_spooled", "forecasts handed to the InfluxDB sink",
                                       tag_keys=("outcome",))

    async def configure(self, options: AppArgs) -> None:
        """Open, replace or drop the sink as ``options.influx``/``influx_settings`` say; unchanged
        settings keep the sink. Raises ConfigError naming a bad setting."""
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

    async def store_actuals(self, request: ActualsRequest) -> int:
        """``POST /actuals``: the hours into the sink's spool before the answer (a 200 means they are on
        disk and will reach the store); the same line protocol as `stef-ray ingest`."""
        sink = self._sink
        if sink is None:
            raise RequestError(503, NO_STORE)
        accepted = await asyncio.to_thread(sink.submit_actuals, actuals_frame(request), value_column="load")
        self._actuals.inc(accepted)
        return accepted

    def store(self, answer: dict) -> None:
        """Queue an answered forecast for the sink (if any); returns at once."""
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

    def close(self) -> None:
        """Spool what is queued and give the sink a moment to deliver (on a graceful shutdown)."""
        self._submitter.shutdown(wait=True)
        sink = self._sink
        if sink is not None:
            sink.close(2.0)
            self._sink = None


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
