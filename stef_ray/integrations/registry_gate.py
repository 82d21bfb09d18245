"""MLflow adapter, the champion gate: a newly registered version takes the alias ``champion`` only if its
holdout MAPE is at most the current champion's MAPE on the same holdout window, plus a margin; else
``challenger``.

Both are scored as fitted on the data before the holdout: a champion whose bundle was trained into this
holdout (last week's, refitted on all its data) has its configuration refitted there first, so it gets no
look at the days it is judged on.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from stef_ray.data.hourly import HourlyData
from stef_ray.integrations.registry import resolve_model_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from stef_ray.integrations.tune_config import MlflowConfig
    from stef_ray.manifest import BundleManifest

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class GateDecision:
    alias: str  # champion | challenger
    new_mape: float
    champion_mape: float | None  # None: there was no champion
    champion_version: str | None
    margin: float
    reason: str

    def line(self, name: str, version: str) -> str:
        return f"{name} version {version} -> {self.alias}: {self.reason}"


def decide(new_mape: float, champion_mape: float | None, margin: float) -> tuple[str, str]:
    """(alias, reason): champion if there is none or new MAPE <= champion MAPE + margin (points)."""
    if champion_mape is None:
        return CHAMPION, f"first version (holdout MAPE {new_mape:.3f} %)"
    if not math.isfinite(new_mape):
        return CHALLENGER, "holdout MAPE is not finite"
    if new_mape <= champion_mape + margin:
        return CHAMPION, f"holdout MAPE {new_mape:.3f} % <= champion's {champion_mape:.3f} % + margin {margin:g}"
    return CHALLENGER, f"holdout MAPE {new_mape:.3f} % > champion's {champion_mape:.3f} % + margin {margin:g}"


def champion_holdout_mape(client: MlflowClient, name: str, data: HourlyData,
                          holdout_from: pd.Timestamp) -> tuple[str | None, float | None]:
    """The current champion of ``name`` and its MAPE on this holdout (its configuration refitted before the
    holdout where it was trained into it); (None, None) when there is none, inf when it cannot forecast
    this data."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from stef_ray.bundle import load_bundle
    from stef_ray.evaluation.backtest import score_holdout
    from stef_ray.exceptions import StefRayError

    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    version = str(current.version)  # int from MLflow 3, str from older
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = resolve_model_uri(f"models:/{name}/{version}", folder, mlflow.get_tracking_uri())
            champion_model, manifest = load_bundle(local)
        champion_model = _before_holdout(champion_model, manifest, data, holdout_from)
        return version, score_holdout(champion_model, data, holdout_from)["MAPE"]
    except StefRayError as err:
        # A champion that cannot forecast this data (e.g. other exogenous columns) cannot defend its title.
        logger.warning("champion version %s cannot be scored on this holdout: %s", version, err)
        return version, float("inf")


def champion_gate(
    client: MlflowClient, name: str, version: str, new_mape: float, data: HourlyData | None,
    holdout_from: pd.Timestamp, margin: float, champion: tuple[str | None, float | None] | None = None,
) -> GateDecision:
    """Re-score the current champion on this holdout (or take ``champion``, its (version, MAPE) scored
    already, e.g. in a fleet's task), compare, and set the new version's alias."""
    champion_version, champion_mape = champion or champion_holdout_mape(client, name, data, holdout_from)
    if champion_version == str(version):
        champion_version = champion_mape = None
    alias, reason = decide(new_mape, champion_mape, margin)
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), "holdout_mape", f"{new_mape:.4f}")
    client.set_model_version_tag(name, str(version), "gate_decision", alias)
    return GateDecision(alias, new_mape, champion_mape, champion_version, margin, reason)


def _before_holdout(model: Any, manifest: BundleManifest, data: HourlyData, holdout_from: pd.Timestamp) -> Any:
    """The champion as it would forecast the holdout without having seen it: the bundle itself when its
    training ended before the holdout, else its configuration refitted on the data before the holdout."""
    from stef_ray.bundle import upgraded_settings
    from stef_ray.config import ModelConfig
    from stef_ray.exceptions import DataError
    from stef_ray.models.hybrid import HybridModel

    end = manifest.training.end
    if end is None or pd.Timestamp(end) < holdout_from:
        return model
    if manifest.exog != list(data.exog):
        raise DataError(f"its inputs {manifest.exog} are not this data's {data.exog}")
    config = ModelConfig.model_validate(upgraded_settings(manifest.model_settings, manifest.format_version))
    logger.info("champion trained up to %s, into the holdout from %s: its configuration is refitted before it",
                end, holdout_from)
    return HybridModel(config, data.exog).fit(data.window(end=holdout_from))


def register_and_gate(
    client: MlflowClient, model_uri: str, mlflow_config: MlflowConfig, new_mape: float, data: HourlyData | None,
    holdout_from: pd.Timestamp, run_id: str | None = None, champion: tuple[str | None, float | None] | None = None,
) -> tuple[str, GateDecision]:
    """Register ``model_uri`` under ``mlflow_config.registered_model``, apply the gate; log it on ``run_id``."""
    import mlflow

    version = mlflow.register_model(model_uri, mlflow_config.registered_model).version
    decision = champion_gate(client, mlflow_config.registered_model, str(version), new_mape, data, holdout_from,
                             mlflow_config.champion_margin, champion)
    if run_id is not None:
        client.log_metric(run_id, "holdout_mape", new_mape)
        if decision.champion_mape is not None and math.isfinite(decision.champion_mape):
            client.log_metric(run_id, "champion_holdout_mape", decision.champion_mape)
        client.set_tag(run_id, "gate_decision", decision.alias)
        client.set_tag(run_id, "gate_reason", decision.reason)
        client.set_tag(run_id, "registered_version", str(version))
    logger.info(decision.line(mlflow_config.registered_model, str(version)))
    return str(version), decision
