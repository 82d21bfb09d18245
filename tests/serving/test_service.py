"""ForecastService without Ray: the answer equals the CLI's forecast, and bad input names its field."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stef_ray.bundle import load_bundle
from stef_ray.forecasting import forecast_from_frames
from stef_ray.serving.components import ComponentBatch, batch_residuals, season_log_batch, trend_log_batch
from stef_ray.serving.model_source import bundle_fingerprint, resolve_source
from stef_ray.serving.schemas import RequestError
from stef_ray.serving.service import ForecastService

EXOG = ["temperature", "workday"]


def assert_close(actual, expected, rel: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=rel)


@pytest.fixture(scope="module")
def service(bundles) -> ForecastService:
    return ForecastService.from_source(str(bundles.first))


def reference(bundle, history_frame, history_hours=200, horizon=24):
    model, _ = load_bundle(bundle)
    history = history_frame.iloc[-(history_hours + 24):-24]
    future = history_frame.iloc[-24:][EXOG]
    return forecast_from_frames(model, history, future, horizon).frame


def _shifted(timestamp: str, **delta) -> str:
    return (pd.Timestamp(timestamp) + pd.Timedelta(**delta)).isoformat()


def error_of(service, body) -> RequestError:
    with pytest.raises(RequestError) as caught:
        service.parse(json.dumps(body) if not isinstance(body, str | bytes) else body)
    return caught.value


def test_forecast__equals_forecast_from_frames(service, bundles, history_frame, make_body):
    answer = service.forecast(service.parse(json.dumps(make_body())))
    expected = reference(bundles.first, history_frame)
    for column in ("forecast", "trend", "seasonality", "p10", "p50", "p90"):
        assert_close(answer[column], expected[column])
    np.testing.assert_allclose(answer["residual"], expected["residual"], atol=1e-6 * expected["forecast"].max())
    assert answer["timestamps"][0] == expected["timestamp"][0].isoformat()
    assert answer["quality"] == "ok"
    assert answer["model_version"] == bundle_fingerprint(bundles.first)


def test_component_batch__pickles_as_numpy_without_its_cached_frame(service, make_body):
    """A batch reads its DataFrame once per replica, but what crosses between deployments stays arrays."""
    import pickle

    batch = ComponentBatch.stack([service.parse(json.dumps(make_body()))])
    frame = batch.flat_frame()
    assert batch.flat_frame() is frame
    sent = pickle.loads(pickle.dumps(batch))
    assert sent._flat is None
    pd.testing.assert_frame_equal(sent.flat_frame(), frame)


def test_component_batch__answers_each_request_as_if_it_came_alone(service, history_frame, make_body):
    """The Serve components answer a batch of requests in one call; each answer must be its own."""
    bodies = [make_body(history_hours=400) for _ in range(3)]  # as the ingress groups: the same frame length
    bodies[2]["history"] = bodies[2]["history"][:-30]  # another origin, other hours and weather
    bodies[2]["future"] = []
    prepared = [service.parse(json.dumps(body)) for body in bodies]
    batch = ComponentBatch.stack(prepared)
    model = service.model
    trend, season = trend_log_batch(model.trend, batch), season_log_batch(model.seasonality, batch)
    residual, scale = batch_residuals(model, batch, trend, season, [p.long_frame for p in prepared])
    assert trend.shape == season.shape == (3, batch.rows_per_request)
    assert residual.shape == (3, model.horizon)
    assert scale.shape == (3,)
    for i, one in enumerate(prepared):
        alone = service.forecast(one)
        together = service.assemble(one, trend[i], season[i], residual[i], scale=float(scale[i]))
        for column in ("forecast", "trend", "seasonality", "p10", "p90"):
            assert_close(together[column], alone[column])  # the float32 LSTM sums a batch in another order
        np.testing.assert_allclose(together["residual"], alone["residual"], atol=1e-6 * max(alone["forecast"]))
        assert together["timestamps"] == alone["timestamps"]
    assert not np.allclose(residual[0], residual[2])  # different requests, different answers


def test_forecast__shorter_horizon_is_a_prefix(service, make_body):
    full = service.forecast(service.parse(json.dumps(make_body())))
    short = service.forecast(service.parse(json.dumps(make_body(horizon=6))))
    assert len(short["forecast"]) == 6
    assert_close(short["forecast"], full["forecast"][:6])


def test_forecast__other_utc_offset_gives_the_same_answer(service, make_body):
    body = make_body()
    shifted = json.loads(json.dumps(body))
    for row in shifted["history"] + shifted["future"]:
        row["timestamp"] = pd.Timestamp(row["timestamp"]).tz_convert("Asia/Seoul").isoformat()
    assert_close(service.forecast(service.parse(json.dumps(shifted)))["forecast"],
                 service.forecast(service.parse(json.dumps(body)))["forecast"])


def test_forecast__missing_future_falls_back_with_a_note(service, make_body):
    answer = service.forecast(service.parse(json.dumps(make_body(future_hours=0))))
    assert answer["quality"] == "ok"
    assert any("persistence fallback" in note for note in answer["notes"])


def test_gap__short_gap_is_interpolated_and_flagged(service, make_body):
    body = make_body()
    del body["history"][-10:-8]  # two missing hours inside the lookback window
    body["history"][-3]["load"] = None  # and one missing reading
    answer = service.forecast(service.parse(json.dumps(body)))
    assert answer["quality"] == "interpolated"
    assert answer["quality_flags"] == ["interpolated"]
    assert sum("interpolated" in note for note in answer["notes"]) == 2


def test_gap__long_gap_is_refused(service, make_body):
    body = make_body()
    del body["history"][-20:-16]
    err = error_of(service, body)
    assert (err.status, err.field) == (422, "history")
    assert "4 hour(s) missing" in err.message


def test_gap__before_the_lookback_window_is_ignored(service, make_body):
    body = make_body(history_hours=220)
    del body["history"][5:15]
    assert service.forecast(service.parse(json.dumps(body)))["quality"] == "ok"


@pytest.mark.parametrize(
    ("mutate", "status", "field", "words"),
    [
        (lambda b: "{not json", 400, "body", "malformed JSON"),
        (lambda b: [1, 2], 422, "body", "JSON object"),
        (lambda b: {k: v for k, v in b.items() if k != "history"}, 422, "history", "required"),
        (lambda b: b | {"extra": 1}, 422, "extra", "unknown field"),
        (lambda b: b["history"][3].update(humidity=1.0), 422, "history[3].humidity", "unknown field"),
        (lambda b: b["history"][3].__delitem__("temperature"), 422, "history[3].temperature", "required"),
        (lambda b: b["future"][2].update(cloud=0.5), 422, "future[2].cloud", "unknown field"),
        (lambda b: b["history"][5].update(load="NaN"), 422, "history[5].load", "finite"),
        (lambda b: b["history"][5].update(temperature="Infinity"), 422, "history[5].temperature", "finite"),
        (lambda b: b["history"][5].update(load=-3.0), 422, "history[5].load", "greater than 0"),
        (lambda b: b["history"][5].update(timestamp="2020-02-20T05:00:00"), 422, "history[5].timestamp", "offset"),
        (lambda b: b["history"][5].update(timestamp="yesterday"), 422, "history[5].timestamp", "datetime"),
        (lambda b: b["history"][5].update(timestamp=_shifted(b["history"][5]["timestamp"], minutes=30)), 422,
         "history[", "hourly"),
        (lambda b: b["history"].insert(6, dict(b["history"][5])), 422, "history[6].timestamp", "twice"),
        (lambda b: b["history"].__setitem__(slice(4, 6), b["history"][4:6][::-1]), 422, "history[5].timestamp",
         "sort"),
        (lambda b: b["history"].__delitem__(slice(0, 40)), 422, "history", "168 hours"),
        (lambda b: b.update(horizon=25), 422, "horizon", "less than or equal to 24"),
        (lambda b: b.update(horizon=0), 422, "horizon", "greater than or equal to 1"),
        (lambda b: b["future"][-1].update(timestamp="2030-01-01T00:00:00+00:00"), 422, "future[23].timestamp",
         "outside the forecast window"),
        (lambda b: b["history"][0].update(timestamp="1500-01-01T00:00:00+00:00"), 422, "history[0].timestamp",
         "between 1900 and 2200"),
    ],
    ids=["malformed-json", "not-an-object", "missing-history", "unknown-top-field", "unknown-row-field",
         "missing-exog", "unknown-future-field", "nan-load", "inf-exog", "negative-load", "naive-timestamp",
         "unparsable-timestamp", "non-hourly", "duplicated", "unsorted", "too-short", "horizon-too-long",
         "horizon-zero", "future-outside-window", "implausible-year"],
)
def test_bad_input__names_the_field(service, make_body, mutate, status, field, words):
    body = make_body(history_hours=170)
    result = mutate(body)  # a replacement body, or None after changing `body` in place
    err = error_of(service, result if isinstance(result, str | list | dict) else body)
    assert err.status == status
    assert err.field.startswith(field), err
    assert words.lower() in str(err).lower(), err


def test_resolve_source__unknown_or_malformed_registry_uri_is_a_clear_error(tmp_path, monkeypatch):
    from stef_ray.exceptions import ConfigError, ModelNotFoundError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ModelNotFoundError, match="power-demand-hybrid"):
        resolve_source("models:/power-demand-hybrid@champion")
    with pytest.raises(ConfigError, match="expected models:/NAME@ALIAS"):
        resolve_source("models:/a/b/c")


def test_forecast__fallback_equals_forecast_from_frames_without_future(service, bundles, history_frame, make_body):
    body = make_body(future_hours=10)  # 10 known hours, the other 14 fall back to a week earlier
    answer = service.forecast(service.parse(json.dumps(body)))
    model, _ = load_bundle(bundles.first)
    expected = forecast_from_frames(model, history_frame.iloc[-224:-24], history_frame.iloc[-24:-14][EXOG]).frame
    assert_close(answer["forecast"], expected["forecast"])


def test_gap__interpolation_equals_the_cores_repair(service, bundles, history_frame, make_body):
    body = make_body()
    del body["history"][-10:-8]
    body["history"][-3]["load"] = None
    answer = service.forecast(service.parse(json.dumps(body)))
    history = history_frame.iloc[-224:-24].copy()
    history.iloc[-10:-8] = np.nan
    history.iloc[-3, history.columns.get_loc("load")] = np.nan
    history = history.interpolate(method="linear", limit_area="inside")
    model, _ = load_bundle(bundles.first)
    expected = forecast_from_frames(model, history, history_frame.iloc[-24:][EXOG]).frame
    assert_close(answer["forecast"], expected["forecast"])


def test_gap__null_load_in_the_last_hour_is_refused(service, make_body):
    body = make_body()
    body["history"][-1]["load"] = None
    err = error_of(service, body)
    assert (err.status, err.field) == (422, "history")
    assert "last hour" in err.message


def test_forecast__a_calendar_holiday_left_out_of_future_comes_from_the_calendar(tmp_path, thanksgiving_eve):
    # A bundle trained with `holidays: US`, asked the night before Thanksgiving with only the temperature
    # ahead: the answer is the one with the holiday flag set, and no note says the holiday fell back.
    from stef_ray.bundle import save_bundle

    data_config, data, model = thanksgiving_eve
    service = ForecastService.from_source(str(save_bundle(model, tmp_path / "bundle", data_config)))
    history = data.frame.iloc[-800:]
    body = {
        "history": [{"timestamp": ts.isoformat(), "load": row.load, "temperature": row.temperature,
                     "holiday": row.holiday} for ts, row in history.iterrows()],
        "future": [{"timestamp": (history.index[-1] + pd.Timedelta(hours=h)).isoformat(), "temperature": 5.0}
                   for h in range(1, 25)],
    }
    answer = service.forecast(service.parse(json.dumps(body)))
    future = pd.DataFrame({"temperature": 5.0}, index=pd.date_range(history.index[-1], periods=25, freq="h")[1:])
    expected = forecast_from_frames(model, history, future.assign(holiday=1.0)).frame  # Thanksgiving, all day
    assert not any("holiday" in note for note in answer["notes"])
    assert_close(answer["forecast"], expected["forecast"])
    workday = forecast_from_frames(model, history, future.assign(holiday=0.0)).frame
    assert np.abs(np.asarray(answer["forecast"]) - workday["forecast"].to_numpy()).max() > 1.0
