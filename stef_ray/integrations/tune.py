"""Ray Tune adapter: the residual-LSTM search, run in parallel with ASHA early stopping.

The driver fits trend + Fourier once (``HybridModel.fit_base``), builds the residual windows once and
hands their arrays to every trial through the object store (``tune.with_parameters``); a trial only
trains a :class:`ResidualLSTM` and reports each epoch (``tune.report``) with a checkpoint of its weights.
After the search the best trial's best checkpoint is attached to the driver's hybrid, scored on the
holdout window (the last days, never seen in training or validation) and written as a bundle.

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

from stef_ray.config import ResidualConfig
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import InsufficientHistoryError, StefRayError
from stef_ray.integrations.tune_config import SearchSpace, TuneConfig
from stef_ray.metrics import point_metrics
from stef_ray.models.hybrid import HybridModel, ResidualWindows
from stef_ray.models.residual_lstm import EpochReport, ResidualLSTM

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "residual_lstm.pt"
PROGRESS_FILE = "progress.json"


class SearchFailedError(StefRayError):
    """No trial of the search produced a model."""


class SearchInterruptedError(StefRayError):
    """The search stopped before every trial finished (Ctrl-C); it can be resumed."""

    exit_code = 130


# --------------------------------------------------------------------------- holdout
def holdout_start(data: HourlyData, holdout_days: int) -> pd.Timestamp:
    """First hour of the holdout: ``holdout_days`` whole days before the end of the data."""
    return data.frame.index[-1] + pd.Timedelta(hours=1) - pd.Timedelta(days=holdout_days)


def score_holdout(model: HybridModel, data: HourlyData, start: pd.Timestamp) -> dict[str, float]:
    """Day-ahead forecasts from every midnight-aligned origin ``start, start+24h, ...`` in ``data``, scored
    against the actual load (MAPE etc. over every holdout hour). Only load before each origin is read."""
    frame = data.frame
    first = int(frame.index.searchsorted(start))
    positions = np.arange(first, len(frame) - model.horizon + 1, model.horizon)
    if len(positions) == 0 or positions[0] < model.lookback:
        raise InsufficientHistoryError(
            f"the holdout from {start} leaves no full {model.horizon}-hour forecast with "
            f"{model.lookback} hours of history before it; lower mlflow.holdout_days or give more data"
        )
    components = model.predict_components(frame, positions)
    forecast = model.to_megawatts(components)["forecast"]
    actual = frame[LOAD].to_numpy(dtype=float)[positions[:, None] + np.arange(model.horizon)]
    return point_metrics(actual, forecast) | {"origins": float(len(positions))}


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


def trial_residual_config(base: dict, sampled: dict, max_epochs: int, device: str) -> ResidualConfig:
    """The base residual config with a trial's sampled values; ints stay ints whatever the sampler gave."""
    return ResidualConfig.model_validate({**base, **sampled, "max_epochs": max_epochs, "device": device})


# --------------------------------------------------------------------------- the trial
def train_trial(
    sampled: dict,
    series: np.ndarray,
    train_origins: np.ndarray,
    val_origins: np.ndarray,
    base_residual: dict,
    max_epochs: int,
    device: str,
    torch_threads: int,
    baseline: np.ndarray | None = None,
) -> None:
    """Ray Tune function trainable: train one LSTM, report every epoch with a checkpoint.

    On a restart (crash retry or ``--resume``) it continues from its last checkpoint: the weights are
    reloaded and the remaining epochs run; AdamW's moment estimates start afresh.
    """
    import torch
    from ray import tune

    torch.set_num_threads(torch_threads)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    # The object store hands out read-only views; torch wants arrays it may write (else a warning per trial).
    series, train_origins, val_origins = np.array(series), np.array(train_origins), np.array(val_origins)
    baseline = None if baseline is None else np.array(baseline)
    done_epochs, best_so_far, stale = 0, float("inf"), 0
    init_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            init_state = torch.load(Path(folder) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            progress = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        done_epochs, best_so_far, stale = progress["epoch"], progress["best_val_loss"], progress["stale"]
        logger.info("trial resumes after epoch %d (best val loss %.4f)", done_epochs, best_so_far)
    remaining = max_epochs - done_epochs
    config = trial_residual_config(base_residual, sampled, max(remaining, 1), device)
    if remaining <= 0 or stale >= config.patience:
        return
    state = {"best": best_so_far, "stale": stale}

    def report_epoch(report: EpochReport, lstm: ResidualLSTM) -> None:
        epoch = done_epochs + report.epoch
        if report.val_loss < state["best"] - 1e-6:
            state["best"], state["stale"] = report.val_loss, 0
        else:
            state["stale"] += 1
        metrics = {
            "epoch": epoch,
            "train_loss": report.train_loss,
            "val_loss": report.val_loss,
            "best_val_loss": state["best"],
            "patience_exhausted": state["stale"] >= config.patience,
            "epoch_seconds": report.seconds,
        }
        with tempfile.TemporaryDirectory() as folder:
            torch.save(lstm.state_dict(), Path(folder) / WEIGHTS_FILE)
            progress = {"epoch": epoch, "best_val_loss": state["best"], "stale": state["stale"]}
            (Path(folder) / PROGRESS_FILE).write_text(json.dumps(progress))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    lstm = ResidualLSTM(config, series.shape[1])
    # Patience across a resume is ours (state["stale"]); the LSTM's own counter restarts with the fit.
    # The driver's linear residual model carries the linear part; the LSTM learns what it misses.
    lstm.fit(series, train_origins, val_origins, callbacks=[report_epoch], init_state=init_state, baseline=baseline)


# --------------------------------------------------------------------------- the outcome
@dataclass
class TrialSummary:
    """One trial as the report, MLflow and the tests see it."""

    trial_id: str
    hyperparameters: dict
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    stop_reason: str  # "completed", "asha", "patience", "error"
    history: pd.DataFrame  # epoch, train_loss, val_loss


@dataclass
class TuneOutcome:
    """What a search produced: the best hybrid, its bundle, its holdout score and every trial."""

    model: HybridModel
    bundle_path: Path
    holdout_metrics: dict[str, float]
    holdout_start: pd.Timestamp
    trials: list[TrialSummary]
    best_trial_id: str
    experiment_path: str
    data_window: dict
    wall_seconds: float
    dashboard_url: str | None = None
    gpus_per_trial: float = 0.0
    notes: list[str] = field(default_factory=list)

    def top(self, n: int = 5) -> list[TrialSummary]:
        return sorted(self.trials, key=lambda t: t.best_val_loss)[:n]

    @property
    def trial_epochs(self) -> int:
        return sum(t.epochs_run for t in self.trials)


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
    """Fit the base on the driver, search the LSTM with Ray Tune, build and save the best hybrid.

    Args:
        name: experiment prefix; a new search runs in ``<storage_path>/<name>_<UTC timestamp>``.
        resume: continue the latest interrupted ``<name>_*`` experiment instead of starting one.
        num_samples: overrides ``search.num_samples`` (a new search only).
        callbacks: extra ``ray.tune.Callback`` objects (tests use one to interrupt a search).

    Raises:
        InsufficientHistoryError, ConfigError: bad data or config; SearchFailedError: every trial failed;
        SearchInterruptedError: stopped by Ctrl-C, resume with ``resume=True``.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Checkpoints every epoch force frequent experiment snapshots; tiny here, so Ray's warning is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.perf_counter()
    holdout_from = holdout_start(data, config.mlflow.holdout_days)
    train_data = data.window(end=holdout_from)
    model = HybridModel(config.model, exog=data.exog)
    _, season_log, residual_log = model.fit_base(train_data)
    windows = model.residual_windows(train_data, season_log, residual_log)
    logger.info("base fitted on %s .. %s (trend R² %.3f); %d training / %d validation windows",
                model.training["start"], model.training["end"], model.training["trend_r2"],
                len(windows.train_origins), len(windows.val_origins))

    dashboard_url = ensure_ray(address)
    gpus, gpu_note = resolve_gpus(config.resources.gpus_per_trial)
    sched = config.scheduler
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial,
            series=windows.series,
            train_origins=windows.train_origins,
            val_origins=windows.val_origins,
            baseline=windows.baseline,
            base_residual=config.model.residual.model_dump(mode="json"),
            max_epochs=sched.max_epochs,
            device="cuda" if gpus > 0 else "cpu",
            torch_threads=max(1, int(config.resources.cpus_per_trial)),
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
        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=sched.max_epochs,
                          grace_period=sched.grace_period, reduction_factor=sched.reduction_factor)
            if sched.type == "asha" else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(config.search.space),
            tune_config=tune.TuneConfig(
                metric=config.search.metric,
                mode="min",
                num_samples=num_samples or config.search.num_samples,
                scheduler=scheduler,
                search_alg=BasicVariantGenerator(
                    random_state=config.search.seed, max_concurrent=config.search.max_concurrent_trials or 0
                ),
            ),
            run_config=tune.RunConfig(
                name=f"{name}_{datetime.now(UTC):%Y%m%d_%H%M%S}",
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=config.max_failures),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=2, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"
                ),
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
    summaries = summarize_trials(result_grid, sched.max_epochs)
    finished = [s for s in summaries if np.isfinite(s.best_val_loss)]
    if not finished:
        first_error = next((str(e).splitlines()[0] for e in result_grid.errors), "no result reported")
        raise SearchFailedError(f"every trial failed ({first_error}); see the trial logs in {experiment_path}")

    best = result_grid.get_best_result(metric="val_loss", mode="min", scope="all")
    best_summary = next(s for s in summaries if s.trial_id == best.metrics["trial_id"])
    residual = residual_from_checkpoint(best, config, windows)
    residual.epochs_run, residual.stopped_early = best_summary.epochs_run, best_summary.stopped_early
    model.attach_residual(residual, windows)
    holdout_metrics = score_holdout(model, data, holdout_from)
    data_window = {
        "data_start": data.frame.index[0].isoformat(),
        "data_end": data.frame.index[-1].isoformat(),
        "train_end": (holdout_from - pd.Timedelta(hours=1)).isoformat(),
        "holdout_start": holdout_from.isoformat(),
        "holdout_days": config.mlflow.holdout_days,
    }
    extra = {
        "tune": {
            "best_trial_id": best_summary.trial_id,
            "hyperparameters": best_summary.hyperparameters,
            "experiment_path": experiment_path,
            "trials": len(summaries),
            "source": "best checkpoint of the best trial (not retrained on train+validation)",
        },
        "holdout": {**data_window, **holdout_metrics},
    }
    from stef_ray.bundle import save_bundle

    bundle_path = save_bundle(model, Path(bundle_out or config.bundle_out), config.data, extra=extra)
    return TuneOutcome(
        model=model,
        bundle_path=bundle_path,
        holdout_metrics=holdout_metrics,
        holdout_start=holdout_from,
        trials=summaries,
        best_trial_id=best_summary.trial_id,
        experiment_path=experiment_path,
        data_window=data_window,
        wall_seconds=time.perf_counter() - started,
        dashboard_url=dashboard_url,
        gpus_per_trial=gpus,
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


def residual_from_checkpoint(result: Any, config: TuneConfig, windows: ResidualWindows) -> ResidualLSTM:
    """The LSTM of ``result``'s lowest-val-loss checkpoint, with the trial's hyperparameters."""
    import torch

    checkpoint = result.get_best_checkpoint(metric="val_loss", mode="min") or result.checkpoint
    if checkpoint is None:
        raise SearchFailedError(f"the best trial left no checkpoint under {result.path}")
    residual_config = trial_residual_config(
        config.model.residual.model_dump(mode="json"), hyperparameters_of(result.config),
        config.scheduler.max_epochs, config.model.residual.device,
    )
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        progress = json.loads((Path(folder) / PROGRESS_FILE).read_text())
    residual = ResidualLSTM(residual_config, windows.series.shape[1]).load_state_dict(state)
    residual.best_val_loss = float(progress["best_val_loss"])
    residual.keep_if_better(windows.series, windows.val_origins, windows.baseline)  # as `stef-ray train` does
    return residual


def hyperparameters_of(trial_config: dict) -> dict:
    return {k: v for k, v in trial_config.items() if k in ResidualConfig.model_fields}


def summarize_trials(result_grid: Any, max_epochs: int) -> list[TrialSummary]:
    """Per-trial hyperparameters, learning curve and why it stopped, from the result grid (driver side)."""
    statuses = {t.trial_id: t.status for t in result_grid._experiment_analysis.trials}  # only Trials have them
    out = []
    for result in result_grid:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        if frame is None or frame.empty or "val_loss" not in frame:
            out.append(TrialSummary(trial_id, hyperparameters_of(result.config or {}), float("inf"), 0, True,
                                    "error", pd.DataFrame(columns=["epoch", "train_loss", "val_loss"])))
            continue
        # A restored trial may repeat epochs it had reported before the interruption: keep the last report.
        history = (frame[["epoch", "train_loss", "val_loss"]].drop_duplicates("epoch", keep="last")
                   .sort_values("epoch").reset_index(drop=True))
        history["epoch"] = history["epoch"].astype(int)
        last = frame.iloc[-1]
        epochs = int(history["epoch"].max())
        if epochs >= max_epochs:
            reason = "completed"
        elif bool(last.get("patience_exhausted", False)):
            reason = "patience"
        elif statuses.get(trial_id) == "ERROR" or result.error is not None:
            reason = "error"
        else:
            reason = "asha"
        out.append(TrialSummary(trial_id, hyperparameters_of(result.config), float(history["val_loss"].min()),
                                epochs, epochs < max_epochs, reason, history))
    return out
