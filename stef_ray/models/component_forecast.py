"""A forecast's components in log space for a batch of origins, as the hybrid returns them before they are
turned into MW and quantiles (``stef_ray.models.calibration.to_megawatts``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ComponentForecast:
    """Log-space components for a batch of origins; arrays of shape (origins, horizon)."""

    trend: np.ndarray
    seasonality: np.ndarray
    residual: np.ndarray
    interval_scale: np.ndarray | None = None  # (origins,) factor on the quantile offsets; None = 1
    origin_hour: np.ndarray | None = None  # (origins,) local hour 0-23: picks the per-hour calibration

    @property
    def final(self) -> np.ndarray:
        return self.trend + self.seasonality + self.residual

    @classmethod
    def concatenate(cls, parts: Sequence[ComponentForecast]) -> ComponentForecast:
        """One forecast of the origins of ``parts``, in order."""
        if len(parts) == 1:
            return parts[0]
        scales = [p.interval_scale for p in parts]
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("trend", "seasonality", "residual")),
                   None if scales[0] is None else np.concatenate(scales), np.concatenate([p.origin_hour for p in parts]))
