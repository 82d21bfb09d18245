"""Configuration files: a YAML file (or one section of it) validated into a typed config, with one-line
errors that name the file and the offending key."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from stef_ray.exceptions import ConfigError

T = TypeVar("T", bound=BaseModel)


def format_validation_error(err: ValidationError, source: str, prefix: str = "") -> str:
    """One line naming the first offending key, e.g. ``model.residual.hidden_sise: unknown key``
    (``prefix``: the section of a model validated on its own, e.g. ``data``)."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in ([prefix] if prefix else []) + list(first["loc"])) or "(top level)"
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {message}{more}"


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with one-line errors for a missing file or bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing YAML file with --config")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return loaded


def load_config(model: type[T], path: str | Path | None, section: str | None = None) -> T:
    """Validate a YAML file (or one top-level section of it) into ``model``; defaults when no path."""
    raw = read_yaml(path) if path else {}
    if section is not None:
        raw = raw.get(section, {}) or {}
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path or "config"))) from None
