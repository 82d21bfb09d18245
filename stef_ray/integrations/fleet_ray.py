"""The fleet on Ray: one task per series, as many at once as the cluster has CPUs for (the same code on a
laptop's local Ray and on a cluster). A series whose data is wrong is reported and the others go on; a
series whose worker died (a crash, a lost node) is run again up to ``resources.retries`` times by Ray,
then reported. Results arrive as series finish."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from stef_ray.fleet import FleetConfig, SeriesOutcome, backtest_series, split_long_format, train_series

logger = logging.getLogger(__name__)


@dataclass
class FleetRun:
    outcomes: list[SeriesOutcome]
    wall_seconds: float

    @property
    def failed(self) -> list[SeriesOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]


def _series_task(work: Callable[..., SeriesOutcome], series_id: str, data_config, model_config, threads: int,
                 **options) -> SeriesOutcome:
    from stef_ray.integrations.tune import limit_threads

    limit_threads(threads)
    return work(series_id, data_config, model_config, **options)


def run_fleet_backtest(
    fleet: FleetConfig, start: pd.Timestamp, days: int, refit_every: int, address: str | None = None,
    on_result: Callable[[SeriesOutcome, int, int], None] | None = None,
) -> FleetRun:
    """Backtest every series of ``fleet`` on Ray; ``on_result(outcome, finished, total)`` as each ends."""
    return run_fleet(fleet, backtest_series, address, on_result, start=start, days=days, refit_every=refit_every)


def run_fleet_train(
    fleet: FleetConfig, out: str, end: pd.Timestamp | None = None, address: str | None = None,
    on_result: Callable[[SeriesOutcome, int, int], None] | None = None,
) -> FleetRun:
    """Fit every series of ``fleet`` on Ray and write a bundle per series to ``out/<series_id>``."""
    return run_fleet(fleet, train_series, address, on_result, out=str(out), end=end)


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
        for series_id in fleet.series
    }
    outcomes: list[SeriesOutcome] = []
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        series_id = pending.pop(done)
        try:
            outcome = ray.get(done)
        except RayError as err:  # the worker died more often than retried, or the task raised
            cause = getattr(err, "cause", None) or err
            message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            logger.warning("series %s failed: %s", series_id, message)
            outcome = SeriesOutcome(series_id, "failed", error=f"{type(cause).__name__}: {message}"[:300])
        outcomes.append(outcome)
        if on_result:
            on_result(outcome, len(outcomes), len(outcomes) + len(pending))
    return FleetRun(outcomes, time.perf_counter() - started)
