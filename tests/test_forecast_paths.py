"""One forecast, whichever way it is asked for: the backtest's forecast from the whole history, the CLI's and
the pyfunc's from a history frame, and the HTTP service's from a request body give the same numbers on real
data (vic-elec, with its smoothed temperature and its bridge days)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stef_ray.bundle import save_bundle
from stef_ray.config import DataConfig, ModelConfig, SeasonalityConfig
from stef_ray.data import load_hourly
from stef_ray.forecasting import forecast_from_frames
from stef_ray.models.hybrid import HybridModel
from stef_ray.serving.schemas import RequestError
from stef_ray.serving.service import ForecastService

EXOG = ["temperature", "workday"]
FIRST_ORIGIN = "2014-10-01"
ORIGINS = 60  # midnights, 2014-10-01 .. 2014-11-29: Melbourne Cup day (Tue 4 Nov) makes Mon 3 Nov a bridge day


@pytest.fixture(scope="module")
def vic(vic_elec_csv, tmp_path_factory):
    """(data, model fitted on the data before the first origin, its bundle's service, origin positions)."""
    data_config = DataConfig(timestamp_col="timestamp", target_col="load", exog=EXOG)
    data = load_hourly(data_config, vic_elec_csv)
    start = pd.Timestamp(FIRST_ORIGIN).tz_localize(data.frame.index.tz)
    model = HybridModel(ModelConfig(seasonality=SeasonalityConfig(daily_order=6)), data.exog).fit(data.window(end=start))
    service = ForecastService.from_source(str(save_bundle(model, tmp_path_factory.mktemp("vic") / "b", data_config)))
    positions = data.frame.index.get_indexer(pd.date_range(start, periods=ORIGINS, freq="D"))
    return data, model, service, positions


def test_forecast_paths__the_model_reads_a_week_of_warm_up_before_its_lookback(vic):
    _, model, _, _ = vic
    assert model.seasonality.smoothed_inputs == ["temperature"]
    assert model.history_hours == 168 + 503


def test_forecast_paths__a_request_sized_frame_forecasts_what_the_whole_history_does(vic):
    data, model, _, positions = vic
    frame = data.frame
    backtest = model.to_megawatts(model.predict_components(frame, positions))
    rows = model.history_hours + model.interval_history_hours
    worst = 0.0
    for i, p in enumerate(positions):
        got = forecast_from_frames(model, frame.iloc[p - rows : p], frame.iloc[p : p + 24][EXOG]).frame
        for column in ("forecast", "p10", "p90"):
            worst = max(worst, float(np.max(np.abs(got[column].to_numpy() / backtest[column][i] - 1))))
    assert worst < 1e-4  # 0.01 %: the same numbers up to floating point


def test_forecast_paths__the_http_service_forecasts_what_the_whole_history_does(vic):
    data, model, service, positions = vic
    frame = data.frame
    backtest = model.to_megawatts(model.predict_components(frame, positions))
    rows = model.history_hours + model.interval_history_hours
    for i, p in enumerate(positions[::6]):
        history, future = frame.iloc[p - rows : p], frame.iloc[p : p + 24]
        body = {
            "history": [{"timestamp": ts.isoformat(), "load": r.load, "temperature": r.temperature, "workday": r.workday}
                        for ts, r in history.iterrows()],
            "future": [{"timestamp": ts.isoformat(), "temperature": r.temperature, "workday": r.workday}
                       for ts, r in future.iterrows()],
        }
        answer = service.forecast(service.parse(json.dumps(body)))
        np.testing.assert_allclose(answer["forecast"], backtest["forecast"][6 * i], rtol=1e-6)
        np.testing.assert_allclose(answer["p90"], backtest["p90"][6 * i], rtol=1e-6)


def test_forecast_paths__a_request_without_the_warm_up_is_refused_with_the_hours_it_needs(vic):
    data, _, service, positions = vic
    history = data.frame.iloc[positions[0] - 200 : positions[0]]
    body = {"history": [{"timestamp": ts.isoformat(), "load": r.load, "temperature": r.temperature,
                         "workday": r.workday} for ts, r in history.iterrows()]}
    with pytest.raises(RequestError) as caught:
        service.parse(json.dumps(body))
    assert caught.value.status == 422
    assert "needs the last 671 hours before the origin (168 of load, and 503 more of temperature" in str(caught.value)
