"""Where ``--model`` points: a bundle folder, or an MLflow registry URI (models:/name@alias)."""

from __future__ import annotations

from pathlib import Path


def resolve_bundle_path(source: str) -> Path:
    """A local bundle folder for ``source``; registry URIs are downloaded through MLflow."""
    if source.startswith(("models:/", "runs:/")):
        from stef_ray.integrations.registry import resolve_model_uri  # mlflow only when needed

        return Path(resolve_model_uri(source))
    return Path(source)
