"""MLflow adapter, a search as runs: what `stef-ray tune` leaves in MLflow once its search has finished.

Experiment ``power-demand-hybrid-weekly``; one parent run ``weekly_retrain_YYYYMMDD`` per search (data
window, trend R², Fourier orders, search config, the chosen configuration, holdout scores, a PNG of every
trial's score window by window, the model) and one child run per trial (its configuration, the rolling-origin
MAPE per window as step metrics). Everything is logged from the driver after the search, from Ray Tune's
result dataframes: no MLflow calls in workers. The model is then registered and gated (`registry_gate`).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from stef_ray.data.hourly import HourlyData
from stef_ray.integrations.registry import connect, ensure_experiment, tracking_uri
from stef_ray.integrations.registry_gate import GateDecision, register_and_gate
from stef_ray.integrations.registry_pyfunc import example_input, log_bundle_model

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from stef_ray.integrations.tune_config import TuneConfig
    from stef_ray.integrations.tune_outcome import TuneOutcome


@dataclass
class RegistryOutcome:
    run_id: str
    experiment_id: str
    tracking_uri: str
    version: str
    decision: GateDecision
    child_run_ids: dict[str, str]


def search_progress_png(outcome: TuneOutcome, path: Path, top: int) -> Path:
    """Every trial's mean daily MAPE after each rolling-origin window (grey), the best ``top`` in colour:
    where ASHA stopped a trial, its line ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    best = {t.trial_id for t in outcome.top(top)}
    for trial in outcome.trials:
        if trial.history.empty:
            continue
        chosen = trial.trial_id in best
        label = f"{trial.trial_id}{' *' if trial.trial_id == outcome.best_trial_id else ''} ({trial.mape:.3f} %)"
        ax.plot(trial.history["window"], trial.history["mape"], marker="o", ms=3, lw=1.5 if chosen else 0.8,
                color=None if chosen else "0.75", label=label if chosen else None, zorder=2 if chosen else 1)
    ax.set_xlabel("rolling-origin windows evaluated")
    ax.set_ylabel("mean day-ahead MAPE so far (%)")
    ax.set_title(f"{len(outcome.trials)} trials; the best {top} in colour (* = chosen)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _chunks(items: list, size: int = 900) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def log_trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, outcome: TuneOutcome) -> dict[str, str]:
    """One child run per trial with its configuration and its score after each window (step = window)."""
    from mlflow.entities import Metric, Param, RunTag

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    run_ids = {}
    for trial in outcome.trials:
        run = client.create_run(experiment_id, run_name=f"trial_{trial.trial_id}",
                                tags={"mlflow.parentRunId": parent_run_id, "trial_id": trial.trial_id})
        params = [Param(k, str(v)) for k, v in trial.hyperparameters.items()]
        tags = [RunTag("stop_reason", trial.stop_reason), RunTag("best_trial", str(trial.trial_id == outcome.best_trial_id))]
        metrics = [Metric(key, float(row[key]), now_ms, int(row["window"]))
                   for _, row in trial.history.iterrows() for key in ("window_mape", "mape")]
        if math.isfinite(trial.mape):
            metrics.append(Metric("objective_mape", trial.mape, now_ms, 0))
        metrics.append(Metric("windows", float(trial.windows), now_ms, 0))
        for i, chunk in enumerate(_chunks(metrics) or [[]]):
            client.log_batch(run.info.run_id, metrics=chunk, params=params if i == 0 else [],
                             tags=tags if i == 0 else [])
        client.set_terminated(run.info.run_id, "FINISHED" if trial.stop_reason != "error" else "FAILED")
        run_ids[trial.trial_id] = run.info.run_id
    return run_ids


def log_search(outcome: TuneOutcome, config: TuneConfig, data: HourlyData, run_date: datetime | None = None) -> RegistryOutcome:
    """Log a finished search to MLflow, register its bundle and apply the champion gate."""
    import mlflow

    settings = config.mlflow
    # Before connect(): mlflow.set_tracking_uri exports $MLFLOW_TRACKING_URI, hiding the embedded default.
    uri, artifact_location = tracking_uri(settings.tracking_uri)
    client = connect(settings.tracking_uri)
    experiment_id = ensure_experiment(client, settings.experiment, artifact_location)
    run_name = f"weekly_retrain_{(run_date or datetime.now(UTC)):%Y%m%d}"
    training = outcome.model.training
    best = next(t for t in outcome.trials if t.trial_id == outcome.best_trial_id)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.log_params({
            **dict(outcome.data_window.items()),
            "data_hours": len(data),
            "fourier_orders": json.dumps(training.fourier_orders),
            "residual_models": outcome.model.residual_summary()[:500],
            "trend_enabled": config.model.trend.enabled,
            "num_samples": len(outcome.trials),
            "search_algorithm": config.search.algorithm,
            "scheduler": config.scheduler.type,
            "objective_windows": config.objective.windows,
            "objective_window_days": config.objective.window_days,
            "objective_span_days": config.objective.span_days,
            "grace_period": config.scheduler.grace_period,
            "reduction_factor": config.scheduler.reduction_factor,
            "cpus_per_trial": config.resources.cpus_per_trial,
            "gpus_per_trial": outcome.gpus_per_trial,
            "search_space": json.dumps(config.search.space.model_dump(mode="json"))[:6000],
            "best_trial_id": outcome.best_trial_id,
            "model_source": "the best trial's configuration, refitted on all the data",
        })
        mlflow.log_metrics({
            "trend_r2": float("nan") if training.trend_r2 is None else training.trend_r2,
            "objective_mape": best.mape,
            "trial_windows": float(outcome.trial_windows),
            "search_seconds": outcome.wall_seconds,
            **{f"holdout_{k}": v for k, v in outcome.holdout_metrics.items() if k != "origins"},
        })
        mlflow.log_dict(config.model_dump(mode="json"), "tune_config.json")
        mlflow.log_dict(outcome.best_config.model_dump(mode="json"), "best_model_config.json")
        child_ids = log_trial_runs(client, experiment_id, run_id, outcome)
        with tempfile.TemporaryDirectory() as folder:
            png = search_progress_png(outcome, Path(folder) / "search_progress.png", settings.top_trials_plotted)
            mlflow.log_artifact(str(png))
        example = example_input(data, outcome.holdout_start, outcome.model.history_hours, outcome.model.horizon,
                                outcome.model.exog)
        info = log_bundle_model(outcome.bundle_path, example)
        version, decision = register_and_gate(client, info.model_uri, settings, outcome.holdout_metrics["MAPE"],
                                              data, outcome.holdout_start, run_id)
    return RegistryOutcome(run_id, experiment_id, uri, version, decision, child_ids)
