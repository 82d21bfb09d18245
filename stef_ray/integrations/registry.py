"""MLflow adapter: the search as runs, the best bundle as a registered pyfunc model, and the champion gate.

- Experiment ``power-demand-hybrid-weekly``; one parent run ``weekly_retrain_YYYYMMDD`` per search (data
  window, trend R², Fourier orders, search config, the chosen configuration, holdout scores, a PNG of every
  trial's score window by window, the model) and one child run per trial (its configuration, the rolling-origin
  MAPE per window as step metrics). Everything is logged from the driver after the search, from Ray Tune's
  result dataframes: no MLflow calls in workers.
- The model is a pyfunc (models-from-code, no pickle) whose artifact is the bundle folder; ``predict``
  takes history + future rows and returns the 24 h forecast with its components and quantiles.
- Champion gate: the new version takes the alias ``champion`` only if its holdout MAPE is at most the
  current champion's MAPE on the same holdout window, plus a margin; else ``challenger``. Both are scored
  as fitted on the data before the holdout: a champion whose bundle was trained into this holdout (last
  week's, refitted on all its data) has its configuration refitted there first, so it gets no look at the
  days it is judged on.

Without ``$MLFLOW_TRACKING_URI`` (or ``mlflow.tracking_uri``) the store is ``sqlite:///<cwd>/mlflow.db``
with artifacts under ``<cwd>/mlartifacts`` (MLflow's own default for a SQLite store would be ``./mlruns``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stef_ray.data.holidays import HOLIDAY_COLUMN, holiday_flags
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import ModelNotFoundError, ServiceUnavailableError

if TYPE_CHECKING:  # mlflow is imported where it is used: `stef-ray forecast` on a path never needs it
    from mlflow import MlflowClient

    from stef_ray.integrations.tune import TuneOutcome
    from stef_ray.integrations.tune_config import MlflowConfig, TuneConfig
    from stef_ray.manifest import BundleManifest

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_ARTIFACT = "model"
BUNDLE_ARTIFACT = "bundle"
def _pinned(names: tuple[str, ...]) -> list[str]:
    """``name==installed version`` for each distribution, so that `mlflow models serve` can rebuild the
    environment the model was logged from (a name alone would take whatever is newest)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")  # 2.13.0+cpu: the index decides the build
        except PackageNotFoundError:
            pins.append(name)
    return pins


PIP_REQUIREMENTS = _pinned(("stef-ray", "numpy", "pandas", "torch", "pydantic", "pyyaml", "mlflow"))


# --------------------------------------------------------------------------- connection
def tracking_uri(configured: str | None = None) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments or None to let the server decide)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri, None
    cwd = Path.cwd().absolute()
    return f"sqlite:///{cwd / 'mlflow.db'}", (cwd / "mlartifacts").as_uri()


def connect(configured: str | None = None) -> MlflowClient:
    """Point MLflow (tracking and registry) at the configured store and return a client."""
    import mlflow

    uri, _ = tracking_uri(configured)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created (with ``artifact_location``, None: the server's default) if new."""
    from mlflow.exceptions import MlflowException

    try:
        experiment = client.get_experiment_by_name(name)
    except MlflowException as err:
        raise ServiceUnavailableError(f"MLflow at {client.tracking_uri} failed: {err}") from None
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


# --------------------------------------------------------------------------- the pyfunc
def _forecaster_class() -> type:
    import mlflow.pyfunc

    class BundleForecaster(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc around a bundle folder (artifact ``bundle``).

        Input: a DataFrame with columns ``timestamp`` (ISO 8601), ``load`` (MW; empty on the hours to
        forecast) and the model's exogenous columns. Rows up to the last observed load are the history, rows
        after it the known future. Output: one row per hour ahead with forecast, trend, seasonality, residual
        and the quantile columns (MW), timestamps as ISO 8601 strings.
        """

        def load_context(self, context: Any) -> None:
            from stef_ray.bundle import load_bundle

            self.model, self.manifest = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
            return predict_frame(self.model, self.manifest, model_input)

    BundleForecaster.__module__ = __name__
    return BundleForecaster


def __getattr__(name: str) -> Any:
    # The pyfunc class subclasses mlflow's, so it is built on first use: importing this module stays light.
    if name == "BundleForecaster":
        globals()[name] = _forecaster_class()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def predict_frame(model: Any, manifest: BundleManifest, rows: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's predict, as a plain function: history + future rows -> forecast frame."""
    from stef_ray.exceptions import DataError
    from stef_ray.forecasting import forecast_from_frames

    if "timestamp" not in rows.columns or LOAD not in rows.columns:
        raise DataError("input needs the columns 'timestamp' and 'load' (empty load on the hours to forecast)")
    timezone = manifest.training.timezone or "UTC"  # the zone the model's index was fitted in
    stamps = pd.to_datetime(rows["timestamp"], utc=True).dt.tz_convert(timezone)
    frame = rows.drop(columns="timestamp").set_index(pd.DatetimeIndex(stamps, name="timestamp")).sort_index()
    frame[LOAD] = pd.to_numeric(frame[LOAD], errors="coerce")
    observed = np.flatnonzero(np.isfinite(frame[LOAD].to_numpy(dtype=float)))
    if len(observed) == 0:
        raise DataError("input has no observed load: give at least the last week of history")
    last = observed[-1]
    history, future = frame.iloc[: last + 1], frame.iloc[last + 1 :]
    calendar = manifest.calendar
    if calendar and HOLIDAY_COLUMN in model.exog:
        # A 'holiday' input made from a calendar is known for any hour: rows (or whole future hours) that
        # leave it out take the calendar's flags, as `stef-ray forecast` and the HTTP endpoint do.
        hours = pd.date_range(history.index[-1], periods=model.horizon + 1, freq="h", name="timestamp")[1:]
        future = future.reindex(future.index.union(hours))
        history, future = (_with_calendar(part, calendar) for part in (history, future))
    forecast = forecast_from_frames(model, history, future if len(future) else None)
    out = forecast.frame.copy()
    out["timestamp"] = out["timestamp"].map(lambda ts: ts.isoformat())
    return out


def _with_calendar(frame: pd.DataFrame, calendar: str) -> pd.DataFrame:
    """``frame`` with its missing holiday flags (or the whole column) taken from ``calendar``."""
    flags = pd.Series(holiday_flags(frame.index, calendar), index=frame.index)
    given = pd.to_numeric(frame[HOLIDAY_COLUMN], errors="coerce") if HOLIDAY_COLUMN in frame.columns else flags * np.nan
    return frame.assign(**{HOLIDAY_COLUMN: given.fillna(flags)})


MODEL_CODE = textwrap.dedent(
    """\
    # MLflow models-from-code entry: the pyfunc is a bundle reader, no pickled object.
    import mlflow

    from stef_ray.integrations.registry import BundleForecaster

    mlflow.models.set_model(BundleForecaster())
    """
)


def example_input(data: HourlyData, origin: pd.Timestamp, hours: int, horizon: int, exog: list[str]) -> pd.DataFrame:
    """``hours`` of history before ``origin`` (the model's ``history_hours``) and ``horizon`` future rows
    (load empty)."""
    frame = data.frame
    position = int(frame.index.searchsorted(origin))
    rows = frame.iloc[max(position - hours, 0) : position + horizon][[LOAD, *exog]].copy()
    rows.iloc[position - max(position - hours, 0) :, rows.columns.get_loc(LOAD)] = np.nan
    rows.insert(0, "timestamp", [ts.isoformat() for ts in rows.index])
    return rows.reset_index(drop=True)


def log_bundle_model(bundle_path: Path, input_example: pd.DataFrame) -> Any:
    """Log the bundle as a pyfunc model in the active run; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    from stef_ray.bundle import load_bundle

    model, manifest = load_bundle(bundle_path)
    output = predict_frame(model, manifest, input_example)
    signature = infer_signature(input_example, output)
    if manifest.calendar:
        # A calendar-made 'holiday' input may be left out (predict_frame fills it from the calendar), so the
        # signature must not make MLflow refuse an input without it.
        from mlflow.types.schema import ColSpec, Schema

        signature.inputs = Schema([
            ColSpec(spec.type, spec.name, required=False) if spec.name == HOLIDAY_COLUMN else spec
            for spec in signature.inputs.inputs
        ])
    with tempfile.TemporaryDirectory() as folder:
        code = Path(folder) / "stef_ray_model.py"
        code.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(code),
            artifacts={BUNDLE_ARTIFACT: str(bundle_path)},
            signature=signature,
            input_example=input_example,
            pip_requirements=PIP_REQUIREMENTS,
        )


# --------------------------------------------------------------------------- the gate
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

    from stef_ray.backtest import score_holdout
    from stef_ray.bundle import load_bundle
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


# --------------------------------------------------------------------------- the search as runs
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
            "fourier_orders": json.dumps(training.get("fourier_orders")),
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
            "trend_r2": float(training.get("trend_r2", float("nan"))),
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


# --------------------------------------------------------------------------- resolving models
def resolve_model_uri(uri_or_path: str | Path, dst: str | Path | None = None, tracking: str | None = None) -> Path:
    """A local bundle folder for a bundle path or an MLflow URI (``models:/power-demand-hybrid@champion``,
    ``models:/name/3``, ``runs:/<id>/model``). MLflow URIs are downloaded to ``dst`` (default: a new
    temporary folder) from ``tracking`` (default: $MLFLOW_TRACKING_URI, else the embedded SQLite store).

    Raises:
        ModelNotFoundError: no such path, alias, version or no bundle inside the model.
    """
    text = str(uri_or_path)
    if "://" not in text and not text.startswith(("models:/", "runs:/")):
        path = Path(text)
        if not (path / "manifest.json").is_file():
            raise ModelNotFoundError(f"no model bundle at {path} (missing manifest.json); pass a bundle folder "
                                     "or an MLflow URI such as models:/power-demand-hybrid@champion")
        return path
    import mlflow
    from mlflow.exceptions import MlflowException

    uri, _ = tracking_uri(tracking)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="stef_ray_model_"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(dst)))
    except MlflowException as err:
        first = str(err).splitlines()[0][:200]
        raise ModelNotFoundError(f"cannot fetch {text} from MLflow at {mlflow.get_tracking_uri()}: {first}") from None
    manifests = sorted(local.rglob("manifest.json"), key=lambda p: len(p.parts))
    if not manifests:
        raise ModelNotFoundError(f"{text} holds no stef_ray bundle (no manifest.json in its artifacts)")
    return manifests[0].parent
