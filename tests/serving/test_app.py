"""The Serve application over real HTTP on loopback: the answer equals the CLI's forecast, bad input
gets a 4xx naming the field, the residual's failure degrades the answer instead of failing it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from stef_ray.bundle import load_bundle
from stef_ray.forecasting import forecast_from_frames
from stef_ray.serving.model_source import bundle_fingerprint

pytestmark = pytest.mark.slow
EXOG = ["temperature", "workday"]


def test_forecast__http_answer_equals_forecast_from_frames(served, bundles, history_frame, make_body):
    response = served.post(make_body())
    assert response.status_code == 200, response.text
    answer = response.json()
    model, _ = load_bundle(bundles.first)
    expected = forecast_from_frames(model, history_frame.iloc[-224:-24], history_frame.iloc[-24:][EXOG]).frame
    for column in ("forecast", "trend", "seasonality", "p10", "p50", "p90"):
        np.testing.assert_allclose(answer[column], expected[column], rtol=1e-6)
    np.testing.assert_allclose(np.add(answer["trend"], answer["seasonality"]) + answer["residual"],
                               answer["forecast"], rtol=1e-9)
    assert answer["timestamps"] == [ts.isoformat() for ts in expected["timestamp"]]
    assert (answer["quality"], answer["model_version"]) == ("ok", bundle_fingerprint(bundles.first))


def test_forecast__concurrent_requests_are_batched_and_equal(served, make_body):
    from concurrent.futures import ThreadPoolExecutor

    bodies = [make_body(horizon=h) for h in (24, 12, 6, 24, 3, 24, 18, 24)]
    with ThreadPoolExecutor(8) as pool:
        answers = [r.json() for r in pool.map(served.post, bodies)]
    for body, answer in zip(bodies, answers, strict=True):
        assert len(answer["forecast"]) == body["horizon"]
        np.testing.assert_allclose(answer["forecast"], answers[0]["forecast"][: body["horizon"]], rtol=1e-6)


def test_healthz_and_model(served, bundles):
    health = requests.get(f"{served.url}/healthz", timeout=10)
    assert health.json() == {"status": "ok", "model_version": bundle_fingerprint(bundles.first)}
    info = requests.get(f"{served.url}/model", headers=served.headers, timeout=10).json()
    assert info["name"] == "first"
    assert info["version"] == bundle_fingerprint(bundles.first)
    assert info["training_window"] == {"start": "2020-01-01T00:00:00+00:00", "end": "2020-02-29T23:00:00+00:00",
                                       "hours": 1440}
    assert info["exog"] == EXOG
    assert info["lookback_hours"] == 168
    assert info["horizon_hours"] == 24
    assert info["validation_mape_log_approx"] > 0


def test_api_key__required_when_configured(served, make_body):
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = requests.post(f"{served.url}/forecast", json=make_body(), headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["field"] == "X-API-Key"
    assert requests.get(f"{served.url}/model", timeout=10).status_code == 401
    assert requests.get(f"{served.url}/healthz", timeout=10).status_code == 200  # probes need no key


@pytest.mark.parametrize(
    ("case", "status", "field"),
    [
        ("malformed-json", 400, "body"),
        ("missing-field", 422, "history[0].load"),
        ("unknown-field", 422, "history[0].humidity"),
        ("nan", 422, "history[1].load"),
        ("infinity", 422, "future[0].temperature"),
        ("non-hourly", 422, "history[1].timestamp"),
        ("unsorted", 422, "history[2].timestamp"),
        ("duplicated", 422, "history[2].timestamp"),
        ("too-short", 422, "history"),
        ("horizon-too-long", 422, "horizon"),
        ("naive-timestamp", 422, "history[0].timestamp"),
    ],
)
def test_bad_input__4xx_naming_the_field(served, make_body, case, status, field):
    body = make_body()
    history = body["history"]
    if case == "malformed-json":
        payload = json.dumps(body)[:-7]
    else:
        if case == "missing-field":
            del history[0]["load"]
        elif case == "unknown-field":
            history[0]["humidity"] = 0.3
        elif case == "nan":
            history[1]["load"] = float("nan")
        elif case == "infinity":
            body["future"][0]["temperature"] = float("inf")
        elif case == "non-hourly":
            history[1]["timestamp"] = history[1]["timestamp"].replace(":00:00+", ":20:00+")
        elif case == "unsorted":
            history[1], history[2] = history[2], history[1]
        elif case == "duplicated":
            history[2] = dict(history[1])
        elif case == "too-short":
            del history[:100]
        elif case == "horizon-too-long":
            body["horizon"] = 48
        elif case == "naive-timestamp":
            history[0]["timestamp"] = history[0]["timestamp"][:19]
        payload = json.dumps(body)  # Python writes NaN/Infinity tokens, as careless clients do
    response = served.post(payload, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["field"] == field, response.text
    assert response.json()["detail"].startswith(field)


def test_bad_input__body_over_the_limit_is_413(served, make_body):
    body = make_body(history_hours=24 * 60 - 24)  # about 150 kB against the test limit of 64 kB
    response = served.post(body)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_interpolated__short_gap_is_flagged(served, make_body):
    body = make_body()
    del body["history"][-5:-3]
    answer = served.post(body).json()
    assert answer["quality"] == "interpolated"
    assert len(answer["forecast"]) == 24


@pytest.mark.parametrize("fault", ["raise", "hang"])
def test_degraded__residual_failure_answers_trend_plus_seasonality(served, make_body, fault):
    healthy = served.post(make_body()).json()
    served.deploy(Residual={"user_config": {"fault": fault}})
    try:
        response = served.post(make_body())
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["quality"] == "degraded"
        assert answer["residual"] == [0.0] * 24
        assert answer["p10"] is None
        assert answer["p90"] is None
        np.testing.assert_allclose(answer["trend"], healthy["trend"], rtol=1e-9)
        np.testing.assert_allclose(answer["forecast"], np.add(healthy["trend"], healthy["seasonality"]), rtol=1e-9)
        assert any("residual model unavailable" in note for note in answer["notes"])
    finally:
        served.deploy(Residual={"user_config": {"fault": None}})
    assert served.post(make_body()).json()["quality"] == "ok"


def test_openapi__documents_the_models_fields(served):
    spec = requests.get(f"{served.url}/openapi.json", timeout=10).json()
    rows = spec["components"]["schemas"]["HistoryRow"]
    assert set(rows["properties"]) == {"timestamp", "load", *EXOG}
    assert rows["additionalProperties"] is False
    assert "/forecast" in spec["paths"]
    assert requests.get(f"{served.url}/docs", timeout=10).status_code == 200


def test_metrics__reach_rays_prometheus_endpoint(served, make_body):
    import time

    import ray

    assert served.post(make_body()).status_code == 200
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if "stef_forecasts_served" in text and "stef_model_version" in text:
            break
        time.sleep(1)
    for name in ("stef_forecasts_served", "stef_forecast_latency_ms", "stef_model_version", "stef_component_batch_size"):
        assert name in text, name


def test_fan_out__same_answer_and_degraded_mode_as_residual_first(served, make_body):
    """The other composition (all three deployments called for every request) gives the same numbers,
    and its degraded answer too."""
    assert served.config["applications"][0]["args"].get("composition", "residual_first") == "residual_first"
    first = served.post(make_body()).json()
    served.deploy_args(composition="fan_out")
    try:
        answer = served.post(make_body()).json()
        assert answer["quality"] == "ok"
        for column in ("forecast", "trend", "seasonality", "residual", "p10", "p90"):
            np.testing.assert_allclose(answer[column], first[column], rtol=1e-9)
        served.deploy(Residual={"user_config": {"fault": "raise"}})
        degraded = served.post(make_body()).json()
        assert degraded["quality"] == "degraded"
        np.testing.assert_allclose(degraded["forecast"], np.add(first["trend"], first["seasonality"]), rtol=1e-9)
    finally:
        served.deploy(Residual={"user_config": {"fault": None}})
        served.deploy_args(composition="residual_first")
    assert served.post(make_body()).json()["quality"] == "ok"
