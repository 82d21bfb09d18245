"""The contracts the hybrid's components are written against, so a new one slots in beside the others.

Two kinds, because the components see different inputs:

- A **calendar component** (the trend, the seasonality) is a function of the hour and the known-future
  inputs: ``fit(index, target, exog)`` on a history, ``predict(index, exog)`` for any hours, its state as
  JSON (``to_state`` / ``from_state``), written to the bundle as one file.
- A **residual component** (the per-hour ridges, the trees, the neural residual) forecasts the next
  ``horizon`` hours of the residual from windows of the residual input array ending at each origin:
  ``predict(series, origins)`` returns one row per origin. The ridges and the trees also share
  ``fit(series, origins, weight)`` and keep their state as settings and arrays (``to_parts`` /
  ``from_parts``: a JSON file and an .npz in the bundle). The neural residual trains with early stopping on
  origins of its own and keeps torch weights (``state_dict``), so it shares only ``predict``.

``HybridModel`` composes them: trend, then seasonality on the detrended log load, then the residual
components on what is left. Protocols rather than a base class: the components share no code, and a test
checks each against its contract.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class CalendarComponent(Protocol):
    """A log component that depends on the hour (and the known-future inputs) alone."""

    def fit(self, index: pd.DatetimeIndex, target: np.ndarray, exog: pd.DataFrame | None = None) -> Self: ...

    def predict(self, index: pd.DatetimeIndex, exog: pd.DataFrame | None = None) -> np.ndarray: ...

    def to_state(self) -> dict: ...

    @classmethod
    def from_state(cls, state: dict) -> Self: ...


@runtime_checkable
class ResidualForecaster(Protocol):
    """Forecasts ``horizon`` hours of the residual from the windows of ``series`` ending at ``origins``."""

    def predict(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ArrayResidual(ResidualForecaster, Protocol):
    """A residual component fitted in one pass on weighted windows, its state settings and arrays."""

    def fit(self, series: np.ndarray, origins: np.ndarray, weight: np.ndarray | None = None) -> Self: ...

    def to_parts(self) -> tuple[dict, dict[str, np.ndarray]]: ...

    @classmethod
    def from_parts(cls, meta: dict, arrays: dict) -> Self: ...
