"""Where a served model comes from: a bundle folder or an MLflow registry URI (``models:/NAME@ALIAS``,
``models:/NAME/VERSION``), resolved to a local bundle and loaded with what the API reports about it. The
Serve ingress and the fleet app load and hot-swap through ``load_model`` and follow aliases with
``alias_version``; a ``ModelKey`` names the loaded version to every replica. MLflow is imported only when a
``models:/`` source is used, so a bundle path serves without the registry adapter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stef_ray.exceptions import ConfigError
from stef_ray.manifest import BundleManifest
from stef_ray.serving.schemas import ModelInfo, TrainingWindow

REGISTRY_PREFIX = "models:/"
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?$")


@dataclass(frozen=True)
class ModelKey:
    """Names one loaded model across replicas: where its bundle lies and which version it is."""

    path: str
    version: str


def registry_parts(source: str) -> dict[str, str]:
    """``{"name", "alias"}`` or ``{"name", "version"}`` of a ``models:/`` URI; ``{}`` for a bundle path.

    Raises:
        ConfigError: a malformed ``models:/`` URI.
    """
    if not source.startswith(REGISTRY_PREFIX):
        return {}
    match = _REGISTRY_URI.match(source)
    if match is None:
        raise ConfigError(f"model source {source!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return {k: v for k, v in match.groupdict().items() if v}


def _registry() -> Any:
    try:
        from stef_ray.integrations import registry  # mlflow only when a URI is used
    except ImportError as err:
        raise ConfigError(
            f"a models:/ source needs the MLflow registry adapter (stef_ray.integrations.registry), which "
            f"cannot be imported ({err}); pass a bundle path instead"
        ) from None
    return registry


def alias_version(name: str, alias: str, tracking_uri: str | None = None) -> str:
    """The registry version ``models:/NAME@ALIAS`` points at now.

    Raises:
        ModelNotFoundError: no such model or alias (or the registry cannot be reached).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from stef_ray.exceptions import ModelNotFoundError

    uri, _ = _registry().tracking_uri(tracking_uri)
    try:
        found = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(name, alias)
    except MlflowException as err:
        first = str(err).splitlines()[0][:200]
        raise ModelNotFoundError(f"models:/{name}@{alias} at {uri}: {first}") from None
    return str(found.version)


def resolve_source(source: str, tracking_uri: str | None = None) -> tuple[Path, dict]:
    """A local bundle folder for ``source`` (a path or ``models:/NAME@ALIAS``) and what the URI says.

    Raises:
        ConfigError: a registry URI while the registry adapter is not installed, or a malformed URI.
    """
    parts = registry_parts(source)
    if not parts:
        return Path(source).expanduser().resolve(), {}
    return Path(_registry().resolve_model_uri(source, tracking=tracking_uri)).resolve(), parts


def bundle_fingerprint(path: Path) -> str:
    """A short content hash of a bundle: the same files give the same version, a retrained one another."""
    digest = hashlib.sha256()
    for name in ("manifest.json", "trend.json", "seasonality.json", "residual_scaler.json", "quantiles.json",
                 "residual_linear.json", "residual_linear.npz", "residual_boosted.json", "residual_boosted.npz",
                 "residual_neural.pt", "residual_lstm.pt"):
        part = path / name
        if part.is_file():
            digest.update(name.encode())
            digest.update(part.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class LoadedModel:
    """A model read from a bundle, with what the API reports about it."""

    model: Any  # stef_ray.models.hybrid.HybridModel (kept untyped: importing it imports torch)
    manifest: BundleManifest
    info: ModelInfo
    key: ModelKey

    @property
    def timezone(self) -> str:
        return self.info.timezone


def load_model(source: str, tracking_uri: str | None = None, version: str | None = None) -> LoadedModel:
    """Load the model at ``source`` (bundle path or registry URI) for serving.

    For ``models:/NAME@ALIAS`` the alias is first resolved to its registry version (``version``, when
    given, is that version already, e.g. as alias polling saw it) and that version is downloaded, so the
    reported version is the registry's and an alias moving during the download cannot mix two versions.
    """
    from stef_ray.bundle import load_bundle

    uri_parts = registry_parts(source)
    if "alias" in uri_parts:
        uri_parts["version"] = version or alias_version(uri_parts["name"], uri_parts["alias"], tracking_uri)
        path, _ = resolve_source(f"{REGISTRY_PREFIX}{uri_parts['name']}/{uri_parts['version']}", tracking_uri)
    else:
        path, uri_parts = resolve_source(source, tracking_uri)
    model, manifest = load_bundle(path, device="cpu")
    training = manifest.training
    info = ModelInfo(
        name=uri_parts.get("name") or manifest.model_name or path.name,
        version=str(uri_parts.get("version") or manifest.model_version or bundle_fingerprint(path)),
        alias=uri_parts.get("alias"),
        source=source,
        created_at=manifest.created_at,
        training_window=TrainingWindow(start=training.start, end=training.end, hours=training.hours),
        holdout_mape=manifest.holdout_mape,
        validation_mape_log_approx=training.val_mape_log_approx,
        residual_models=model.residual_summary(),
        neural_residual=training.neural.model_dump(exclude_none=True) if training.neural else None,
        lookback_hours=model.lookback,
        history_hours=model.history_hours,
        horizon_hours=model.horizon,
        exog=list(model.exog),
        timezone=manifest.timezone,
    )
    return LoadedModel(model, manifest, info, ModelKey(str(path), info.version))
