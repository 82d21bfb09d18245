"""The fleet on Ray: one task per series, as many at once as the cluster has CPUs for (the same code on a
laptop's local Ray and on a cluster). A series whose data is wrong is reported and the others go on; a
series whose worker died (a crash, a lost node) is run again up to ``resources.retries`` times by Ray,
then reported. Results arrive as series finish."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stef_ray.exceptions import StefRayError
from stef_ray.fleet import FleetConfig, SeriesOutcome, backtest_series, split_long_format, train_series

logger = logging.getLogger(__name__)


@dataclass
class FleetRun:
    outcomes: list[SeriesOutcome]
    wall_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)  # series id -> what its task returned beside the outcome

    @property
    def failed(self) -> list[SeriesOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]


def _series_task(work: Callable[..., SeriesOutcome], series_id: str, data_config, model_config, threads: int,
                 **options) -> SeriesOutcome:
    from stef_ray.threads import limit_threads

    limit_threads(threads)
    return work(series_id, data_config, model_config, **options)


def run_fleet_backtest(
    fleet: FleetConfig, start: pd.Timestamp, days: int, refit_every: int, address: str | None = None,
    on_result: Callable[[SeriesOutcome, int, int], None] | None = None, models: tuple[str, ...] = ("hybrid",),
    keep_tables: bool = False,
) -> FleetRun:
    """Backtest ``models`` on every series of ``fleet`` on Ray (the first model is each outcome's score, the
    others its ``others``); ``on_result(outcome, finished, total)`` as each ends. ``keep_tables``: each
    series' backtest tables come back to this process (``outcome.tables``), so no shared storage is needed."""
    return run_fleet(fleet, backtest_series, address, on_result, start=start, days=days, refit_every=refit_every,
                     models=tuple(models), keep_tables=keep_tables)


def run_fleet_train(
    fleet: FleetConfig, out: str, end: pd.Timestamp | None = None, address: str | None = None,
    on_result: Callable[[SeriesOutcome, int, int], None] | None = None, register: bool = False,
) -> FleetRun:
    """Fit every series of ``fleet`` on Ray and write a bundle per series to ``out/<series_id>``. With
    ``register``: each series also scored on its holdout, then registered with its own champion gate
    (``fleet.registry``; stef_ray.integrations.fleet_registry), one series at a time in this process."""
    if not register:
        return run_fleet(fleet, train_series, address, on_result, out=str(out), end=end)
    from stef_ray.integrations.fleet_registry import open_registry, register_series, train_and_score

    open_registry(fleet.registry)
    run = run_fleet(fleet, train_and_score, address, on_result, out=str(out), end=end, registry=fleet.registry)
    for outcome in run.outcomes:
        scored = run.extras.get(outcome.series_id)
        if outcome.status != "ok" or scored is None:
            continue
        try:
            logger.info("%s: %s", outcome.series_id, register_series(outcome, scored, fleet.registry))
        except StefRayError as err:
            outcome.status, outcome.error = "failed", f"registration: {err}"
    return run


def largest_first(fleet: FleetConfig, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The series ids, those with the most data first (a long file's rows, else the file's size): Ray starts
    tasks about in the order they are submitted, and a long series started last would run alone at the end
    while the other CPUs idle (on 2 CPUs, nine PJM series of 5 to 15 years)."""
    from pathlib import Path

    def size(series_id: str) -> int:
        if tables:
            return len(tables[series_id])
        path = Path(fleet.series[series_id]["path"])
        return path.stat().st_size if path.is_file() else 0  # a glob or a missing file: its task says so

    return sorted(fleet.series, key=size, reverse=True)


def run_fleet(
    fleet: FleetConfig, work: Callable[..., SeriesOutcome], address: str | None = None,
    on_result: Callable[[SeriesOutcome, int, int], None] | None = None, **options,
) -> FleetRun:
    """``work(series_id, data_config, model_config, **options)`` for every series, one Ray task each."""
    import ray
    from ray.exceptions import RayError

    from stef_ray.integrations.tune import ensure_ray

    ensure_ray(address)
    tables = split_long_format(fleet)  # a long file is read once here; each task gets its series' rows
    cpus = fleet.resources.cpus_per_series
    task = ray.remote(_series_task).options(num_cpus=cpus, max_retries=fleet.resources.retries)
    started = time.perf_counter()
    pending = {
        task.remote(work, series_id, fleet.data_config(series_id), fleet.model, max(1, int(cpus)),
                    **options, **({"table": tables[series_id]} if tables else {})): series_id
        for series_id in largest_first(fleet, tables)
    }
    outcomes: list[SeriesOutcome] = []
    extras: dict[str, Any] = {}
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        series_id = pending.pop(done)
        try:
            outcome = ray.get(done)
            if isinstance(outcome, tuple):  # (outcome, something for the driver)
                outcome, extras[series_id] = outcome
        except RayError as err:  # the worker died more often than retried, or the task raised
            cause = getattr(err, "cause", None) or err
            message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            logger.warning("series %s failed: %s", series_id, message)
            outcome = SeriesOutcome(series_id, "failed", error=f"{type(cause).__name__}: {message}"[:300])
        outcomes.append(outcome)
        if on_result:
            on_result(outcome, len(outcomes), len(outcomes) + len(pending))
    return FleetRun(outcomes, time.perf_counter() - started, extras)
