"""MLflow adapter, the connection: which store (tracking and registry) to use, the experiment, and a
registered model (or run artifact) fetched back as a local bundle folder.

Without ``$MLFLOW_TRACKING_URI`` (or ``mlflow.tracking_uri``) the store is ``sqlite:///<cwd>/mlflow.db``
with artifacts under ``<cwd>/mlartifacts`` (MLflow's own default for a SQLite store would be ``./mlruns``).

The rest of the adapter: the model as a pyfunc in `registry_pyfunc`, the champion gate in
`registry_gate`, a search logged as runs in `registry_runs`. ``BundleForecaster`` stays reachable from
this module because every logged model's code file imports it from here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stef_ray.exceptions import ModelNotFoundError, ServiceUnavailableError

if TYPE_CHECKING:  # mlflow is imported where it is used: `stef-ray forecast` on a path never needs it
    from mlflow import MlflowClient


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


def __getattr__(name: str) -> Any:
    # Every logged model's code file (registry_pyfunc.MODEL_CODE) runs
    # `from stef_ray.integrations.registry import BundleForecaster`, the models logged before the pyfunc had
    # a module of its own included: that import must keep working. Resolved lazily, as there, so that
    # importing this module does not import mlflow.
    if name == "BundleForecaster":
        from stef_ray.integrations.registry_pyfunc import BundleForecaster

        return BundleForecaster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
