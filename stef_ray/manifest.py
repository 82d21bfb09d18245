"""The bundle's manifest.json as a typed, versioned model: what every reader of a bundle (the CLI, the
Python API, MLflow's pyfunc, the registry's gate, Serve) asks of it, answered in one place.

Keys a newer writer adds are kept (``extra="allow"``), so a manifest read and written again loses nothing;
keys older formats lack have their defaults here (a format-1 bundle has no data section, for instance).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stef_ray.config import DataConfig
from stef_ray.models.training_record import TrainingRecord


class BundleManifest(BaseModel):
    """manifest.json, formats 1 to ``stef_ray.bundle.FORMAT_VERSION``."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), populate_by_name=True)

    format_version: int
    package_version: str | None = None
    created_at: str | None = None
    model_settings: dict = Field(alias="model_config", description="the ModelConfig the bundle was fitted with")
    data_config: dict | None = Field(None, description="the DataConfig its data was read with (format 2 on)")
    exog: list[str] = Field(default_factory=list)
    feature_names: dict = Field(default_factory=dict)
    lookback_hours: int | None = None
    horizon_hours: int | None = None
    training: TrainingRecord = Field(default_factory=TrainingRecord)
    has_neural: bool = False
    has_linear: bool = False
    has_boosted: bool = False
    has_residual: bool = False  # formats 1-6: one LSTM in residual_lstm.pt
    extra: dict[str, Any] = Field(default_factory=dict, description="what the writer added: tune, registry")

    @property
    def data(self) -> DataConfig:
        """The data options the bundle's series is read with (its exogenous columns where none were kept;
        an option a later stef_ray no longer has is left out)."""
        kept = {k: v for k, v in (self.data_config or {"exog": self.exog}).items() if k in DataConfig.model_fields}
        return DataConfig.model_validate(kept)

    @property
    def timezone(self) -> str:
        return (self.data_config or {}).get("timezone") or self.training.timezone or "UTC"

    @property
    def calendar(self) -> str | None:
        """The holiday calendar whose flags the model reads as an input, if any."""
        return (self.data_config or {}).get("holidays")

    @property
    def model_name(self) -> str | None:
        return self.extra.get("registered_model_name") or self.extra.get("model_name")

    @property
    def model_version(self) -> str | None:
        version = self.extra.get("registry_version") or self.extra.get("model_version") or self.extra.get("version")
        return None if version is None else str(version)

    @property
    def holdout_mape(self) -> float | None:
        """The holdout MAPE the writer recorded: `stef-ray tune` writes extra.holdout.MAPE; the other places
        are for bundles written by hand."""
        places = (self.extra.get("holdout") or {}, self.extra, self.extra.get("metrics") or {},
                  self.training.model_dump())
        for where in places:
            for key in ("holdout_mape", "holdout_MAPE", "MAPE", "mape"):
                value = where.get(key)
                if isinstance(value, int | float) and math.isfinite(value):
                    return float(value)
        return None

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)
