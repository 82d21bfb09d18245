"""Ray Tune adapter: a search over whole hybrid configurations, ranked on the backtest's own metric.

One trial is one hybrid configuration (Fourier orders, the ridges' and trees' settings, the neural residual's
architecture or none, ...). Its score is a rolling-origin backtest before the holdout: ``objective.windows``
windows spread over the last ``objective.span_days``, each a refit of the full hybrid on the data before it
and a day-ahead forecast from every 00:00 for ``objective.window_days``; the trial reports the mean daily MAPE
so far after each window (``tune.report``, with a checkpoint of the windows done), which is ASHA's resource.
So a trial's rank is the thing users get, not a loss on a component that may then be dropped.

After the search the best configuration among the trials that evaluated every window is fitted on the data
before the holdout and scored there (for the champion gate, which scores the champion on the same days),
then refitted on all the data and written as the bundle that is registered.

The same code runs on a laptop (a local Ray) and on a cluster (``ray job submit``): only the resources
found differ. Ray is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stef_ray.backtest import holdout_start, score_holdout
from stef_ray.config import ModelConfig
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import InsufficientHistoryError, StefRayError
from stef_ray.integrations.tune_config import ObjectiveConfig, SearchSpace, TuneConfig, apply_sampled
from stef_ray.models.hybrid import HybridModel
from stef_ray.quantiles import band
from stef_ray.threads import limit_threads

logger = logging.getLogger(__name__)

PROGRESS_FILE = "windows.json"
METRIC = "mape"


class SearchFailedError(StefRayError):
    """No trial of the search produced a score."""


class SearchInterruptedError(StefRayError):
    """The search stopped before every trial finished (Ctrl-C); it can be resumed."""

    exit_code = 130


# --------------------------------------------------------------------------- holdout and windows
def objective_windows(data: HourlyData, before: pd.Timestamp, objective: ObjectiveConfig) -> list[pd.Timestamp]:
    """The windows' first origins (00:00 local), spread evenly over ``span_days`` before ``before`` (the
    holdout), in the order a trial evaluates them: the most recent, then the oldest, then the ones farthest
    from those already taken, so the first rungs of ASHA already see different seasons."""
    tz = data.frame.index.tz
    last = (before - pd.Timedelta(days=objective.window_days)).tz_convert(tz).normalize()
    count = objective.windows
    step = max(objective.span_days - objective.window_days, 0) / max(count - 1, 1)
    starts = [last - pd.Timedelta(days=round(step * (count - 1 - i))) for i in range(count)]
    order = [count - 1]
    while len(order) < count:
        order.append(max((i for i in range(count) if i not in order), key=lambda i: min(abs(i - j) for j in order)))
    return [starts[i] for i in order]


def score_window(config: ModelConfig, data: HourlyData, start: pd.Timestamp, days: int) -> dict[str, Any]:
    """Fit the hybrid on the data before ``start`` and forecast from each 00:00 for ``days``: daily MAPE (%)
    and the band's coverage (P10-P90 with the default levels), as the backtest scores them."""
    frame = data.frame
    model = HybridModel(config, data.exog).fit(data.window(end=start))
    origins = [start + pd.DateOffset(days=d) for d in range(days)]
    positions = frame.index.get_indexer(origins)
    positions = positions[(positions >= model.lookback) & (positions + model.horizon <= len(frame))]
    if not len(positions):
        raise InsufficientHistoryError(f"no forecast fits in the window from {start:%Y-%m-%d}")
    out = model.to_megawatts(model.predict_components(frame, positions))
    actual = frame[LOAD].to_numpy(dtype=float)[positions[:, None] + np.arange(model.horizon)]
    scored = np.isfinite(actual).all(axis=1)
    daily = np.mean(np.abs(out["forecast"][scored] / actual[scored] - 1), axis=1) * 100
    pair = band(out)  # P10-P90 with the default levels
    low, high = (out[pair[0]], out[pair[1]]) if pair else (None, None)
    covered = (float(np.mean((actual[scored] >= low[scored]) & (actual[scored] <= high[scored])) * 100)
               if pair else float("nan"))
    neural = model.training.get("neural") or {}
    return {"start": start.isoformat(), "daily_mape": daily.tolist(), "coverage": covered,
            "neural_kept": bool(neural.get("kept", False))}


# --------------------------------------------------------------------------- search space
def param_space(space: SearchSpace) -> dict[str, Any]:
    """The YAML dimensions as Ray Tune sampling domains."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, dim in space.dimensions().items():
        if dim.type == "loguniform":
            out[name] = tune.loguniform(dim.low, dim.high)
        elif dim.type == "uniform":
            out[name] = tune.uniform(dim.low, dim.high)
        elif dim.type == "randint":
            out[name] = tune.randint(dim.low, dim.high + 1)  # Ray's upper bound is exclusive
        else:
            out[name] = tune.choice(list(dim.values))
    return out


def searcher(config: TuneConfig) -> Any:
    """The search algorithm: random (seeded), or Optuna's / HyperOpt's TPE from Ray Tune's integrations."""
    from stef_ray.exceptions import ConfigError

    search = config.search
    if search.algorithm == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=search.seed, max_concurrent=search.max_concurrent_trials or 0)
    try:
        if search.algorithm == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            algorithm = OptunaSearch(seed=search.seed)
        else:
            from ray.tune.search.hyperopt import HyperOptSearch

            algorithm = HyperOptSearch(random_state_seed=search.seed)
    except (ImportError, AssertionError):
        raise ConfigError(f"search.algorithm {search.algorithm} needs the {search.algorithm} package: "
                          f"pip install {search.algorithm} (or use search.algorithm: random)") from None
    if search.max_concurrent_trials:
        from ray.tune.search import ConcurrencyLimiter

        return ConcurrencyLimiter(algorithm, max_concurrent=search.max_concurrent_trials)
    return algorithm


# --------------------------------------------------------------------------- the trial
def run_trial(sampled: dict, data: HourlyData, base_model: dict, windows: list[str], window_days: int,
              threads: int) -> None:
    """Ray Tune function trainable: score one hybrid configuration window by window.

    On a restart (crash retry or ``--resume``) it continues after the last window of its checkpoint."""
    from ray import tune

    limit_threads(threads)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per window is noise
    config = apply_sampled(ModelConfig.model_validate(base_model), sampled)
    done: list[dict] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            done = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        logger.info("trial resumes after window %d", len(done))
    for start in windows[len(done):]:
        started = time.perf_counter()
        done.append(score_window(config, data, pd.Timestamp(start), window_days) | {"seconds": time.perf_counter() - started})
        days = np.concatenate([w["daily_mape"] for w in done])
        metrics = {
            METRIC: float(days.mean()),
            "windows": len(done),
            "window_mape": float(np.mean(done[-1]["daily_mape"])),
            "coverage": float(np.nanmean([w["coverage"] for w in done])),
            "neural_kept": sum(w["neural_kept"] for w in done),
            "window_seconds": done[-1]["seconds"],
        }
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / PROGRESS_FILE).write_text(json.dumps(done))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


# --------------------------------------------------------------------------- the outcome
@dataclass
class TrialSummary:
    """One trial as the report, MLflow and the tests see it."""

    trial_id: str
    hyperparameters: dict
    mape: float  # mean daily MAPE (%) over the windows it evaluated; inf when it failed
    windows: int
    stop_reason: str  # "completed", "asha", "error"
    history: pd.DataFrame  # window, window_start, window_mape, mape

    @property
    def completed(self) -> bool:
        return self.stop_reason == "completed"


@dataclass
class TuneOutcome:
    """What a search produced: the best configuration's hybrid, its bundle, its holdout score, every trial."""

    model: HybridModel
    bundle_path: Path
    holdout_metrics: dict[str, float]
    holdout_start: pd.Timestamp
    trials: list[TrialSummary]
    best_trial_id: str
    best_config: ModelConfig
    experiment_path: str
    data_window: dict
    wall_seconds: float
    windows: list[str] = field(default_factory=list)
    dashboard_url: str | None = None
    gpus_per_trial: float = 0.0
    notes: list[str] = field(default_factory=list)

    def top(self, n: int = 5) -> list[TrialSummary]:
        """The best ``n``: trials that evaluated every window first, by MAPE."""
        return sorted(self.trials, key=lambda t: (-t.windows, t.mape))[:n]

    @property
    def trial_windows(self) -> int:
        return sum(t.windows for t in self.trials)


# --------------------------------------------------------------------------- running
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


def unfinished_trials(experiment_path: str, expected: int | None) -> int:
    """Trials not finished according to the experiment state on disk (after Ctrl-C Tune marks the trials
    it stopped TERMINATED in memory, but saves them as PENDING), including trials never created."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(experiment_path).trials
    open_trials = sum(t.status not in ("TERMINATED", "ERROR") for t in trials)
    return open_trials + max((expected or 0) - len(trials), 0)


def summarize_trials(result_grid: Any, windows: int) -> list[TrialSummary]:
    """Per-trial configuration, scores window by window and why it stopped, from the result grid."""
    statuses = {t.trial_id: t.status for t in result_grid._experiment_analysis.trials}  # only Trials have them
    out = []
    for result in result_grid:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        sampled = dict(result.config or {})
        if frame is None or frame.empty or METRIC not in frame:
            out.append(TrialSummary(trial_id, sampled, float("inf"), 0, "error",
                                    pd.DataFrame(columns=["window", "window_mape", METRIC])))
            continue
        # A restored trial may repeat windows it had reported before the interruption: keep the last report.
        history = (frame[["windows", "window_mape", METRIC]].drop_duplicates("windows", keep="last")
                   .sort_values("windows").rename(columns={"windows": "window"}).reset_index(drop=True))
        done = int(history["window"].max())
        if done >= windows:
            reason = "completed"
        elif statuses.get(trial_id) == "ERROR" or result.error is not None:
            reason = "error"
        else:
            reason = "asha"
        out.append(TrialSummary(trial_id, sampled, float(history[METRIC].iloc[-1]), done, reason, history))
    return out
