"""A registered model per series, each with its own champion (``stef-ray train --fleet --register``).

Each series' task (on Ray) fits on the data before its holdout, scores that, scores the series' current
champion on the same days, and builds the input example; the driver then logs one MLflow run per series,
registers ``<model_prefix>-<series_id>`` and sets its alias by the same gate as ``stef-ray tune``. The
writes happen one series at a time in the driver, so a SQLite store is never written by two processes;
the tasks only read from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from stef_ray.config import DataConfig, ModelConfig
from stef_ray.fleet import FleetRegistry, SeriesOutcome, series_data, train_series


@dataclass
class Scored:
    """What a series' task hands the driver for its registration."""

    champion: tuple[str | None, float | None]  # the series' current champion version and its holdout MAPE
    example: pd.DataFrame  # the pyfunc's input example: history and horizon rows at the holdout's start


def train_and_score(series_id: str, data_config: DataConfig, model_config: ModelConfig, out: str,
                    registry: FleetRegistry, end: pd.Timestamp | None = None,
                    table: pd.DataFrame | None = None) -> tuple[SeriesOutcome, Scored | None]:
    """``train_series`` with its holdout, and the series' champion scored on the same holdout (a Ray task)."""
    from stef_ray.bundle import load_bundle
    from stef_ray.integrations.registry import connect
    from stef_ray.integrations.registry_gate import champion_holdout_mape
    from stef_ray.integrations.registry_pyfunc import example_input

    outcome = train_series(series_id, data_config, model_config, out, end, table, holdout_days=registry.holdout_days)
    if outcome.status != "ok":
        return outcome, None
    data = series_data(series_id, data_config, table, end)
    holdout_from = pd.Timestamp(outcome.holdout_from)
    champion = champion_holdout_mape(connect(registry.tracking_uri), registry.registered_name(series_id), data,
                                     holdout_from)
    model, _ = load_bundle(outcome.bundle)
    return outcome, Scored(champion, example_input(data, holdout_from, model.history_hours, model.horizon, model.exog))


def open_registry(registry: FleetRegistry) -> str:
    """Create the store's tables and the experiment before any task reads the store (two processes creating
    a fresh SQLite store's schema at once collide); returns the experiment id."""
    from stef_ray.integrations.registry import connect, ensure_experiment, tracking_uri

    uri, artifact_location = tracking_uri(registry.tracking_uri)
    if artifact_location is None and uri.startswith("sqlite:///"):
        # Beside the database, as an absolute URI: the tasks that read champions run in other folders.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return ensure_experiment(connect(registry.tracking_uri), registry.experiment, artifact_location)


def register_series(outcome: SeriesOutcome, scored: Scored, registry: FleetRegistry) -> str:
    """Log the series' bundle as its own run, register it under ``<model_prefix>-<series_id>`` and gate it
    against that series' champion; returns the gate's line (also kept in ``outcome.registered``)."""
    import mlflow

    from stef_ray.integrations.registry import connect
    from stef_ray.integrations.registry_gate import register_and_gate
    from stef_ray.integrations.registry_pyfunc import log_bundle_model
    from stef_ray.integrations.tune_config import MlflowConfig

    name = registry.registered_name(outcome.series_id)
    experiment_id = open_registry(registry)
    client = connect(registry.tracking_uri)
    settings = MlflowConfig(tracking_uri=registry.tracking_uri, experiment=registry.experiment, registered_model=name,
                            holdout_days=registry.holdout_days, champion_margin=registry.champion_margin)
    run_name = f"{outcome.series_id}_{datetime.now(UTC):%Y%m%d}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={"series_id": outcome.series_id}) as run:
        mlflow.log_params({"series_id": outcome.series_id, "holdout_from": outcome.holdout_from,
                           "holdout_days": registry.holdout_days})
        info = log_bundle_model(Path(outcome.bundle), scored.example)
        version, decision = register_and_gate(client, info.model_uri, settings, outcome.holdout_mape, None,
                                              pd.Timestamp(outcome.holdout_from), run.info.run_id, scored.champion)
    client.set_model_version_tag(name, version, "series_id", outcome.series_id)
    outcome.registered = decision.line(name, version)
    return outcome.registered
