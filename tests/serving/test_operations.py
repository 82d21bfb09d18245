"""Operations in the Serve app: forecasts stored in InfluxDB without delaying answers, the champion alias
followed without downtime, and the champion/challenger split.

The Ray tests reconfigure the session's app in place (ingress user_config, as an operator would) and put
its configuration back afterwards; they share one time-series server and one MLflow SQLite store each.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from stef_ray.exceptions import ConfigError
from stef_ray.serving.app_args import AppArgs, IngressConfig, validated
from stef_ray.serving.forecast_store import forecast_points
from stef_ray.serving.ingress import _unit_interval
from stef_ray.serving.serve_config import validate_serve_config
from stef_ray.serving.service import ForecastService

from .conftest import posting_clients

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ingress_user_config(served) -> dict:
    deployments = served.config["applications"][0]["deployments"]
    return dict(next(d for d in deployments if d["name"] == "ForecastIngress")["user_config"])

# ------------------------------------------------------------------------------ without Ray


def test_app_args__errors_name_the_key():
    with pytest.raises(ConfigError, match=r"challenger_fraction: Input should be less than or equal to 1"):
        validated(AppArgs, {"challenger_fraction": 1.5}, "application args")
    with pytest.raises(ConfigError, match=r"alias_poll_s: Input should be greater than or equal to 0"):
        validated(AppArgs, {"alias_poll_s": -1}, "application args")
    with pytest.raises(ConfigError, match=r"influx_settings: .*unknown key 'urll'"):
        validated(AppArgs, {"influx_settings": {"urll": "http://x"}}, "application args")
    options = validated(AppArgs, {"influx": True, "influx_settings": {"url": "http://db:8086"}}, "args")
    assert (options.influx, options.alias_poll_s, options.challenger_fraction) == (True, 0.0, 0.0)
    assert options.challenger_source == "models:/power-demand-hybrid@challenger"


def test_validate_serve_config__ingress_user_config_errors_name_the_key():
    raw = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    ingress = next(d for d in raw["applications"][0]["deployments"] if d["name"] == "ForecastIngress")
    ingress["user_config"]["challenger_fraction"] = 2
    with pytest.raises(ConfigError, match=r"ForecastIngress.user_config: challenger_fraction"):
        validate_serve_config(raw)
    ingress["user_config"] = {"model_source": "x", "alias_pol_s": 5}
    with pytest.raises(ConfigError, match=r"alias_pol_s: unknown key"):
        validate_serve_config(raw)
    assert IngressConfig.model_validate({"model_source": "x", "alias_poll_s": 5}).alias_poll_s == 5


def test_forecast_points__carry_the_model_tags_and_the_arm():
    answer = {
        "model_name": "power-demand-hybrid", "model_version": "7", "arm": "challenger",
        "origin": "2024-05-01T00:00:00+09:00",
        "timestamps": ["2024-05-01T00:00:00+09:00", "2024-05-01T01:00:00+09:00"],
        "forecast": [100.5, 101.0], "trend": [90.0, 90.0], "seasonality": [10.0, 11.0], "residual": [0.5, 0.0],
        "p10": None, "p50": None, "p90": None,
    }
    lines = forecast_points(answer)
    assert len(lines) == 2
    assert lines[0].startswith(
        "power_demand_forecast,arm=challenger,issue_time=2024-04-30T15:00:00Z,model_name=power-demand-hybrid,"
        "model_version=7 "
    ), lines[0]
    assert "forecast=100.5" in lines[0]
    assert "p10" not in lines[0]
    assert lines[1].endswith(" 1714492800")  # 2024-04-30T16:00Z, seconds


def test_unit_interval__stable_and_spread():
    draws = [_unit_interval(f"request-{i}") for i in range(2000)]
    assert draws[:3] == [_unit_interval(f"request-{i}") for i in range(3)]
    assert all(0 <= d < 1 for d in draws)
    assert 0.45 < np.mean(np.array(draws) < 0.5) < 0.55


# ------------------------------------------------------------------------------ the served app
def _reconfigure(served, **options) -> None:
    served.deploy(ForecastIngress={"user_config": {**ingress_user_config(served), **options}})


@pytest.fixture
def restore_ingress(served):
    """Puts the ingress's user_config back as it was, whatever the test did to it."""
    original = ingress_user_config(served)
    yield
    served.deploy(ForecastIngress={"user_config": original})


def _expected_forecasts(body: dict, *bundles: Path) -> dict[str, list[float]]:
    out = {}
    for bundle in bundles:
        service = ForecastService.from_source(str(bundle))
        out[service.loaded.info.version] = service.forecast(service.parse(json.dumps(body)))["forecast"]
    return out


def _spooled_lines(spool_dir: Path) -> list[str]:
    # The spool renames a full .active file to .lp while the server is down; a file that moves between
    # the listing and the read is read again under its new name (a CI run once failed on that race).
    for _ in range(20):
        lines = []
        try:
            for pattern in ("*.active", "*.lp"):
                for path in spool_dir.glob(pattern):
                    lines += [line for line in path.read_text().splitlines() if line]
        except FileNotFoundError:
            time.sleep(0.05)
            continue
        return lines
    raise AssertionError(f"spool files in {spool_dir} kept moving while being read")


@pytest.mark.slow
def test_ab_split__both_arms_answer_with_their_own_model_and_reach_influx(
    served, bundles, make_body, victoria_metrics, tmp_path, restore_ingress
):
    body = make_body()
    expected = _expected_forecasts(body, bundles.first, bundles.second)
    first, second = expected
    _reconfigure(served, challenger_fraction=0.5, challenger_source=str(bundles.second), influx=True,
                 influx_settings={"url": victoria_metrics.url, "token": "test-token", "org": "stef",
                                  "bucket": "serve", "spool_dir": str(tmp_path / "spool"),
                                  "flush_interval_s": 0.2, "fsync": False})
    answers = {}
    for i in range(16):
        request_id = f"ab-{i}"
        response = served.post(body, headers={"X-Request-ID": request_id})
        assert response.status_code == 200, response.text
        answers[request_id] = response.json()

    arms = {answer["arm"] for answer in answers.values()}
    assert arms == {"champion", "challenger"}
    for request_id, answer in answers.items():
        # The request id pins the arm: the same id lands on the same arm on every replica.
        assert answer["arm"] == ("challenger" if _unit_interval(request_id) < 0.5 else "champion")
        assert answer["model_version"] == (second if answer["arm"] == "challenger" else first)
        np.testing.assert_allclose(answer["forecast"], expected[answer["model_version"]], rtol=1e-6)

    # Each arm's forecast reaches the server with the tags of the model that made it.
    stored = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(stored) < 2:
        stored = {s["metric"]["arm"]: s for s in victoria_metrics.export("power_demand_forecast_forecast")
                  if s["metric"].get("model_name") in ("first", "second")}
        time.sleep(0.3)
    assert set(stored) == {"champion", "challenger"}, stored.keys()
    for arm, version, name in (("champion", first, "first"), ("challenger", second, "second")):
        series = stored[arm]
        answer = next(a for a in answers.values() if a["arm"] == arm)
        assert series["metric"]["model_version"] == version
        assert series["metric"]["model_name"] == name
        assert series["metric"]["issue_time"] == "2020-02-29T00:00:00Z"  # the answer's origin, in UTC
        by_time = dict(zip(series["timestamps"], series["values"], strict=True))
        stamps_ms = [int(np.datetime64(ts[:19]).astype("datetime64[ms]").astype(int)) for ts in answer["timestamps"]]
        assert sorted(by_time) == sorted(stamps_ms)
        np.testing.assert_allclose([by_time[t] for t in stamps_ms], answer["forecast"], rtol=1e-9)


@pytest.mark.slow
def test_influx__dead_server_neither_slows_nor_fails_an_answer(served, make_body, tmp_path, restore_ingress):
    spool = tmp_path / "spool"
    _reconfigure(served, influx=True, influx_settings={
        "url": f"http://127.0.0.1:{free_port()}", "token": "test-token", "spool_dir": str(spool),
        "flush_interval_s": 0.2, "timeout_s": 1.0, "fsync": False,
    })
    body = make_body()
    served.post(body)  # a first request pays any one-off cost (route set-up)
    started = time.perf_counter()
    response = served.post(body, headers={"X-Request-ID": "dead-server"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert elapsed < 2.0, f"answer took {elapsed:.2f} s with InfluxDB down"
    answer = response.json()

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(_spooled_lines(spool)) < 48:
        time.sleep(0.2)
    lines = _spooled_lines(spool)
    assert len(lines) == 48  # two answers, 24 hours each, all waiting for the server
    assert all(line.startswith("power_demand_forecast,arm=champion,") for line in lines)
    assert sum(f"model_version={answer['model_version']} " in line for line in lines) == 48


# ------------------------------------------------------------------------------ alias polling
MODEL = "serve-alias-test"


def _register_versions(store: Path, *bundles: Path) -> str:
    """Two versions of MODEL in a SQLite MLflow store, each the bundle folder logged as run artifacts."""
    import mlflow

    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("serve-alias", artifact_location=(store / "artifacts").as_uri())
    client.create_registered_model(MODEL)
    for bundle in bundles:
        run = client.create_run(experiment)
        client.log_artifacts(run.info.run_id, str(bundle), "bundle")
        client.set_terminated(run.info.run_id)
        client.create_model_version(MODEL, f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", "1")
    return uri


@pytest.mark.slow
def test_alias_polling__champion_moves_without_a_failed_request(
    served, bundles, make_body, tmp_path, restore_ingress
):
    import mlflow

    uri = _register_versions(tmp_path, bundles.first, bundles.second)
    body = make_body()
    by_bundle = _expected_forecasts(body, bundles.first, bundles.second)
    expected = dict(zip(("1", "2"), by_bundle.values(), strict=True))
    _reconfigure(served, model_source=f"models:/{MODEL}@champion", mlflow_tracking_uri=uri, alias_poll_s=0.5)

    def model_info() -> dict:
        return requests.get(f"{served.url}/model", headers=served.headers, timeout=10).json()

    info = model_info()
    assert (info["name"], info["version"], info["alias"]) == (MODEL, "1", "champion")

    with posting_clients(lambda: served.post(body)) as answers:
        time.sleep(0.5)
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(MODEL, "champion", "2")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and model_info()["version"] != "2":
            time.sleep(0.2)
        time.sleep(0.5)

    assert model_info()["version"] == "2"
    failed = [a for a in answers if a[0] != 200]
    assert not failed, failed[:3]
    versions = [a[1]["model_version"] for a in answers]
    assert (versions[0], versions[-1]) == ("1", "2"), set(versions)
    for _, answer in answers:  # each answer entirely one version's
        assert answer["model_alias"] == "champion"
        np.testing.assert_allclose(answer["forecast"], expected[answer["model_version"]], rtol=1e-6)


@pytest.mark.slow
def test_fresh_stack__no_champion_answers_503_saying_why_then_goes_live_on_the_first_registration(
    served, bundles, make_body, tmp_path
):
    # A new stack: the app is deployed before any model is registered. It must come up, say on every
    # route why it cannot answer yet, and serve the first champion as soon as it is registered.
    import copy

    from stef_ray.serving.serve_config import deploy_config

    original = copy.deepcopy(served.config)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    source = f"models:/{MODEL}@champion"
    app = served.config["applications"][0]
    app["args"] |= {"model_source": source, "mlflow_tracking_uri": uri, "alias_poll_s": 0.5}
    ingress = next(d for d in app["deployments"] if d["name"] == "ForecastIngress")
    ingress["user_config"] = {**ingress["user_config"], "model_source": source, "mlflow_tracking_uri": uri,
                              "alias_poll_s": 0.5}
    try:
        deploy_config(served.config)  # new args: fresh replicas, with nothing registered
        body = make_body()
        health = requests.get(f"{served.url}/healthz", timeout=10)
        assert health.status_code == 503
        assert f"goes live when {source} is registered" in health.json()["detail"]
        assert served.post(body).status_code == 503
        assert f"{source} is registered" in served.post(body).json()["detail"]
        assert requests.get(f"{served.url}/model", headers=served.headers, timeout=10).status_code == 503

        _register_versions(tmp_path, bundles.first)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and requests.get(f"{served.url}/healthz", timeout=10).status_code != 200:
            time.sleep(0.2)
        answer = served.post(body)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["model_version"], answer.json()["model_alias"]) == ("1", "champion")
        np.testing.assert_allclose(answer.json()["forecast"], _expected_forecasts(body, bundles.first).popitem()[1],
                                   rtol=1e-6)
    finally:
        served.config.clear()
        served.config.update(original)
        deploy_config(served.config)


@pytest.mark.slow
def test_actuals__post_reaches_the_store_once_with_the_forecasts_checks(served, victoria_metrics, tmp_path, restore_ingress):
    # POST /actuals: the same API key and the same kind of 4xx as /forecast; a 200 means spooled.
    url = f"{served.url}/actuals"
    hours = [f"2019-07-{day:02d}T{hour:02d}:00:00+09:00" for day in (1, 2) for hour in range(24)]
    body = {"actuals": [{"timestamp": ts, "load": 60000.0 + i} for i, ts in enumerate(hours)]}
    assert requests.post(url, json=body, headers=served.headers, timeout=10).status_code == 503  # no store yet
    _reconfigure(served, influx=True, influx_settings={
        "url": victoria_metrics.url, "token": "test-token", "spool_dir": str(tmp_path / "spool"),
        "flush_interval_s": 0.2, "fsync": False})

    assert requests.post(url, json=body, timeout=10).status_code == 401
    for rows, status, field in (
        ([body["actuals"][0], body["actuals"][0]], 422, "actuals[1].timestamp"),
        ([{"timestamp": hours[0], "load": -3}], 422, "actuals[0].load"),
        ([{"timestamp": "2019-07-01T00:00:00", "load": 1.0}], 422, "actuals[0].timestamp"),
        ([{"timestamp": hours[0], "load": 1.0, "temp": 3}], 422, "actuals[0].temp"),
    ):
        answer = requests.post(url, json={"actuals": rows}, headers=served.headers, timeout=10)
        assert (answer.status_code, answer.json()["field"]) == (status, field), answer.text

    for _ in range(2):  # a resend keys the same points
        answer = requests.post(url, json=body, headers=served.headers, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 48
    expected = {int(pd.Timestamp(ts).timestamp()) * 1000: 60000.0 + i for i, ts in enumerate(hours)}
    stored: set = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(stored) < 48:
        stored = {(ts, value) for series in victoria_metrics.export("power_demand_actual_load")
                  for ts, value in zip(series["timestamps"], series["values"], strict=True) if ts in expected}
        time.sleep(0.3)
    assert stored == set(expected.items())
