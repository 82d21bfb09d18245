"""Ray Tune adapter: a search over whole hybrid configurations, ranked on the backtest's own metric.

One trial is one hybrid configuration (Fourier orders, the ridges' and trees' settings, the neural residual's
architecture or none, ...), scored by a rolling-origin backtest before the holdout (`stef_ray.integrations
.tune_trial`). So a trial's rank is the thing users get, not a loss on a component that may then be dropped.

After the search the best configuration among the trials that evaluated every window is fitted on the data
before the holdout and scored there (for the champion gate, which scores the champion on the same days),
then refitted on all the data and written as the bundle that is registered (`stef_ray.integrations
.tune_outcome` holds what the search hands on).

The same code runs on a laptop (a local Ray) and on a cluster (``ray job submit``): only the resources
found differ. Ray is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stef_ray.data.hourly import HourlyData
from stef_ray.evaluation.backtest import holdout_start, score_holdout
from stef_ray.exceptions import InsufficientHistoryError, StefRayError
from stef_ray.integrations.tune_config import TuneConfig, apply_sampled
from stef_ray.integrations.tune_outcome import TuneOutcome, summarize_trials, unfinished_trials
from stef_ray.integrations.tune_trial import METRIC, objective_windows, param_space, run_trial, searcher
from stef_ray.models.hybrid import HybridModel

logger = logging.getLogger(__name__)


class SearchFailedError(StefRayError):
    """No trial of the search produced a score."""


class SearchInterruptedError(StefRayError):
    """The search stopped before every trial finished (Ctrl-C); it can be resumed."""

    exit_code = 130


def ensure_ray(address: str | None = None) -> str | None:
    """Connect to (``address``, ``$RAY_ADDRESS``) or start a local Ray; returns the dashboard URL if any."""
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address} if address else {}
        if not (address or os.environ.get("RAY_ADDRESS")):
            kwargs["include_dashboard"] = os.environ.get("STEF_RAY_DASHBOARD", "1") != "0"
        try:
            context = ray.init(logging_level=logging.WARNING, **kwargs)
        except ConnectionError as err:
            from stef_ray.exceptions import ServiceUnavailableError

            raise ServiceUnavailableError(f"cannot reach the Ray cluster at {address}: {err}") from None
        url = getattr(context, "dashboard_url", None)
    else:
        url = None
    return f"http://{url}" if url and not url.startswith("http") else url


def resolve_gpus(requested: float) -> tuple[float, str | None]:
    """``requested`` if the cluster has GPUs, else 0 with a note (the same YAML runs on a CPU machine)."""
    import ray

    if requested <= 0:
        return 0.0, None
    if ray.cluster_resources().get("GPU", 0) > 0:
        return requested, None
    note = f"resources.gpus_per_trial={requested:g} but the Ray cluster has no GPU: trials run on CPU"
    logger.warning(note)
    return 0.0, note


def latest_experiment(storage_path: Path, prefix: str) -> Path | None:
    """The most recent restorable experiment folder named ``<prefix>_<timestamp>`` under ``storage_path``."""
    from ray import tune

    if not storage_path.is_dir():
        return None
    candidates = sorted(p for p in storage_path.glob(f"{prefix}_*") if p.is_dir())
    for path in reversed(candidates):
        if tune.Tuner.can_restore(str(path)):
            return path
    return None


def run_search(
    config: TuneConfig,
    data: HourlyData,
    *,
    name: str = "tune",
    resume: bool = False,
    num_samples: int | None = None,
    address: str | None = None,
    bundle_out: str | Path | None = None,
    callbacks: Sequence[Any] = (),
) -> TuneOutcome:
    """Search hybrid configurations with Ray Tune, then fit, score and save the best one.

    Args:
        name: experiment prefix; a new search runs in ``<storage_path>/<name>_<UTC timestamp>``.
        resume: continue the latest interrupted ``<name>_*`` experiment instead of starting one.
        num_samples: overrides ``search.num_samples`` (a new search only).
        callbacks: extra ``ray.tune.Callback`` objects (the CLI's progress lines; tests interrupt a search).

    Raises:
        InsufficientHistoryError, ConfigError: bad data or config; SearchFailedError: every trial failed;
        SearchInterruptedError: stopped by Ctrl-C, resume with ``resume=True``.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # Checkpoints every window force frequent experiment snapshots; tiny here, so Ray's warning is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.perf_counter()
    holdout_from = holdout_start(data, config.mlflow.holdout_days)
    searched = data.window(end=holdout_from)
    windows = objective_windows(data, holdout_from, config.objective)
    first_needed = windows[0] if len(windows) == 1 else min(windows)
    if first_needed - searched.frame.index[0] < pd.Timedelta(days=config.model.residual.validation_days + 7):
        raise InsufficientHistoryError(
            f"the objective's oldest window starts {first_needed:%Y-%m-%d}, too close to the data's start "
            f"{searched.frame.index[0]:%Y-%m-%d}: lower objective.span_days or give more history")
    dashboard_url = ensure_ray(address)
    gpus, gpu_note = resolve_gpus(config.resources.gpus_per_trial)
    base_model = config.model.model_copy(deep=True)
    base_model.residual.device = "cuda" if gpus > 0 else "cpu"
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, data=searched, base_model=base_model.model_dump(mode="json"),
            windows=[w.isoformat() for w in windows], window_days=config.objective.window_days,
            threads=max(1, int(config.resources.cpus_per_trial)),
        ),
        resources={"cpu": config.resources.cpus_per_trial, "gpu": gpus},
    )
    storage = Path(config.storage_path).expanduser().absolute()
    if resume:
        path = latest_experiment(storage, name)
        if path is None:
            raise SearchFailedError(
                f"nothing to resume: no interrupted search '{name}_*' under {storage}; run without --resume"
            )
        logger.info("resuming %s", path)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        sched = config.scheduler
        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=config.objective.windows,
                          grace_period=sched.grace_period, reduction_factor=sched.reduction_factor)
            if sched.type == "asha" else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(config.search.space),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="min", num_samples=num_samples or config.search.num_samples,
                scheduler=scheduler, search_alg=searcher(config),
            ),
            run_config=tune.RunConfig(
                name=f"{name}_{datetime.now(UTC):%Y%m%d_%H%M%S}",
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=config.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=list(callbacks),
                verbose=0,
            ),
        )
    expected_trials = _num_samples(tuner) if resume else (num_samples or config.search.num_samples)
    result_grid = tuner.fit()
    experiment_path = result_grid.experiment_path
    unfinished = unfinished_trials(experiment_path, expected_trials)
    if unfinished:
        raise SearchInterruptedError(
            f"search interrupted with {unfinished} of {expected_trials} trials unfinished; "
            f"continue it with --resume (state in {experiment_path})"
        )
    summaries = summarize_trials(result_grid, config.objective.windows)
    completed = [s for s in summaries if s.completed and np.isfinite(s.mape)]
    if not completed:
        first_error = next((str(e).splitlines()[0] for e in result_grid.errors), "no trial evaluated every window")
        raise SearchFailedError(f"no trial finished ({first_error}); see the trial logs in {experiment_path}")
    best = min(completed, key=lambda s: s.mape)
    best_config = apply_sampled(config.model, best.hyperparameters)
    # Scored on the holdout from the data before it (the champion is scored on the same days), then
    # refitted on everything: the registered model forecasts from the newest data.
    model = HybridModel(best_config, data.exog).fit(searched)
    holdout_metrics = score_holdout(model, data, holdout_from)
    model = HybridModel(best_config, data.exog).fit(data)
    data_window = {
        "data_start": data.frame.index[0].isoformat(),
        "data_end": data.frame.index[-1].isoformat(),
        "train_end": data.frame.index[-1].isoformat(),
        "holdout_start": holdout_from.isoformat(),
        "holdout_days": config.mlflow.holdout_days,
    }
    extra = {
        "tune": {
            "best_trial_id": best.trial_id,
            "hyperparameters": best.hyperparameters,
            "objective_mape": best.mape,
            "objective_windows": [w.isoformat() for w in windows],
            "experiment_path": experiment_path,
            "trials": len(summaries),
            "source": "the best trial's configuration, refitted on all the data",
        },
        "holdout": {**data_window, **holdout_metrics, "scored_by": "the same configuration fitted before the holdout"},
    }
    from stef_ray.bundle import save_bundle

    bundle_path = save_bundle(model, Path(bundle_out or config.bundle_out), config.data, extra=extra)
    return TuneOutcome(
        model=model, bundle_path=bundle_path, holdout_metrics=holdout_metrics, holdout_start=holdout_from,
        trials=summaries, best_trial_id=best.trial_id, best_config=best_config, experiment_path=experiment_path,
        data_window=data_window, wall_seconds=time.perf_counter() - started,
        windows=[w.isoformat() for w in windows], dashboard_url=dashboard_url, gpus_per_trial=gpus,
        notes=[gpu_note] if gpu_note else [],
    )


def _num_samples(tuner: Any) -> int | None:
    # A restored Tuner keeps its TuneConfig only privately; None skips the count check.
    tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    return getattr(tune_config, "num_samples", None)
