"""Each component of a fitted hybrid meets the contract of its kind (``models/base.py``), and the contract is
enough to use it: a calendar component restored from its state, and a residual component from its parts,
forecast what the fitted one does."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from stef_ray.models.base import ArrayResidual, CalendarComponent, ResidualModel


def test_base__a_fitted_hybrid_is_made_of_components_that_meet_their_contracts(fitted_model):
    assert isinstance(fitted_model.trend, CalendarComponent)
    assert isinstance(fitted_model.seasonality, CalendarComponent)
    stack = fitted_model.residual
    for component in (stack.linear, stack.boosted):
        assert isinstance(component, ArrayResidual), type(component).__name__
    assert isinstance(stack.neural, ResidualModel)
    # A runtime check sees only names: the neural residual's fit is its own (an early-stopping split and a
    # baseline), not the one-pass weighted fit of ArrayResidual.
    assert list(inspect.signature(stack.linear.fit).parameters) == ["series", "origins", "weight"]
    assert list(inspect.signature(stack.neural.fit).parameters)[:3] != ["series", "origins", "weight"]


def test_base__the_contract_is_what_a_component_needs_to_be_restored(fitted_model, synthetic_hourly):
    frame = synthetic_hourly.frame
    exog = frame[fitted_model.exog]
    for component in (fitted_model.trend, fitted_model.seasonality):
        restored = type(component).from_state(component.to_state())
        assert np.array_equal(restored.predict(frame.index, exog), component.predict(frame.index, exog))

    trend_log, season_log = fitted_model.base_components(frame)
    residual = np.log(frame["load"].to_numpy()) - trend_log - season_log
    series = fitted_model.residual_series(frame, residual, season_log)
    origins = np.arange(len(frame) - 10 * 24, len(frame) - fitted_model.horizon, 24)
    for component in (fitted_model.residual.linear, fitted_model.residual.boosted, fitted_model.residual.neural):
        restored = type(component).from_parts(*component.to_parts())
        expected = component.predict(series, origins)
        assert expected.shape == (len(origins), fitted_model.horizon)
        assert np.array_equal(restored.predict(series, origins), expected)


def test_base__a_component_without_state_is_not_a_calendar_component():
    class NoState:
        def fit(self, index, target, exog=None):
            return self

        def predict(self, index, exog=None):
            return np.zeros(len(index))

    assert not isinstance(NoState(), CalendarComponent)
    with pytest.raises(TypeError):
        # a Protocol is a contract, not a base to instantiate
        CalendarComponent()
