"""The contracts the hybrid's components are written against, so a new one slots in beside the others.

Every component has a fit, a predict and a state it can be rebuilt from; two kinds, because they see
different inputs:

- A **calendar component** (the trend, the seasonality) is a function of the hour and the known-future
  inputs: ``fit(index, target, exog)`` on a history, ``predict(index, exog)`` for any hours, its state as
  JSON (``to_state`` / ``from_state``), written to the bundle as one file.
- A **residual model** (the per-hour ridges, the trees, the neural residual) forecasts the next ``horizon``
  hours of the residual from windows of the residual input array ending at each origin:
  ``predict(series, origins)`` returns one row per origin, and its state is settings and arrays
  (``to_parts`` / ``from_parts``). The ridges and the trees also share ``fit(series, origins, weight)``, one
  pass on weighted windows. The neural residual's fit takes more: an early-stopping split of the origins and
  the linear layers' out-of-sample forecasts as its baseline (it learns what they get wrong), so it meets
  ``ResidualModel`` and not ``ArrayResidual``.

``ResidualStack`` holds the residual models and fits them in their order; ``HybridModel`` composes trend,
seasonality and the stack, and calibrates the sum. Protocols rather than a base class: the components share
no code, and a test checks each against its contract.
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
class ResidualModel(Protocol):
    """Forecasts ``horizon`` hours of the residual from the windows of ``series`` ending at ``origins``; its
    state is settings (JSON) and named arrays."""

    def predict(self, series: np.ndarray, origins: np.ndarray) -> np.ndarray: ...

    def to_parts(self) -> tuple[dict, dict[str, np.ndarray]]: ...

    @classmethod
    def from_parts(cls, meta: dict, arrays: dict) -> Self: ...


@runtime_checkable
class ArrayResidual(ResidualModel, Protocol):
    """A residual model fitted in one pass on weighted windows."""

    def fit(self, series: np.ndarray, origins: np.ndarray, weight: np.ndarray | None = None) -> Self: ...
