"""Many series in one Serve application (stef_ray/serving/fleet_app.py): a model per series loaded on
demand by a multiplexed deployment with a bounded cache, one-series and batch endpoints, real HTTP.

Deployed beside the session's single-series app (same Serve instance, route prefix /fleet), which is put
back as it was afterwards."""

from __future__ import annotations

import copy
import shutil

import pytest
import requests

from stef_ray.serving.fleet_app import FleetArgs, batch_items, fleet_args
from stef_ray.serving.schemas import RequestError
from stef_ray.serving.service import ForecastService

from .conftest import REPO, assert_close, posting_clients, train_bundle

KEY_ENV, KEY = "STEF_RAY_FLEET_TEST_KEY", "fleet-key"


@pytest.fixture(scope="module")
def fleet(served, bundles, tmp_path_factory, victoria_metrics):
    """Three series' bundles in one folder; the fleet app at /fleet, one forecaster keeping two models,
    writing to the session's time-series server."""
    from ray import serve

    from stef_ray.serving.serve_config import deploy_config

    folder = tmp_path_factory.mktemp("fleet")
    shutil.copytree(bundles.first, folder / "north")
    shutil.copytree(bundles.second, folder / "south")
    train_bundle(folder / "east", seed=3)
    app = fleet_application("fleet", model_source=str(folder / "{series_id}"), models_per_replica=2, influx=True,
                            influx_settings={"url": victoria_metrics.url, "token": "test-token", "org": "stef",
                                             "bucket": "fleet", "spool_dir": str(folder / "spool"),
                                             "flush_interval_s": 0.2, "fsync": False})
    config = copy.deepcopy(served.config)
    config["applications"].append(app)
    deploy_config(config)
    forecaster = serve.get_deployment_handle("FleetForecaster", app_name="fleet")
    yield f"{served.url}/fleet", folder, forecaster, victoria_metrics
    deploy_config(served.config)  # the session's app alone again


def fleet_application(name: str, **args) -> dict:
    """serve_fleet_config.yaml's application at /<name>, one replica of each deployment (small CPU shares, the
    test's API key in their environment), its args updated with ``args``."""
    import yaml

    app = yaml.safe_load((REPO / "serve_fleet_config.yaml").read_text())["applications"][0]
    app |= {"name": name, "route_prefix": f"/{name}"}
    app["args"] |= {"api_key_env": KEY_ENV, **args}
    for deployment in app["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        deployment["ray_actor_options"] = {"num_cpus": 0.1, "runtime_env": {"env_vars": {KEY_ENV: KEY}}}
    return app


def post(url: str, body, key: str | None = KEY) -> requests.Response:
    return requests.post(url, json=body, headers={"X-API-Key": key} if key else {}, timeout=60)


@pytest.mark.slow
def test_fleet_app__each_series_answers_with_its_own_model_loaded_on_demand_and_evicted_lru(fleet, make_body):
    url, folder, forecaster, _ = fleet
    body = make_body()
    answers = {}
    for series in ("north", "south", "east", "north"):  # two models fit: east evicts north, north comes back
        answer = post(f"{url}/series/{series}/forecast", body)
        assert answer.status_code == 200, answer.text
        answers[series] = answer.json()
        assert answers[series]["series_id"] == series and answers[series]["quality"] == "ok"
    for series in ("north", "south", "east"):
        service = ForecastService.from_source(str(folder / series))
        expected = service.forecast(service.parse(json_bytes(body)))
        assert answers[series]["model_version"] == service.loaded.info.version
        for name in ("forecast", "p10", "p90"):
            assert_close(answers[series][name], expected[name], rel=1e-9)
    assert answers["north"]["forecast"] != answers["south"]["forecast"]
    assert forecaster.stats.remote().result()["loads"] == {"north": 2, "south": 1, "east": 1}
    info = requests.get(f"{url}/series/east/model", headers={"X-API-Key": KEY}, timeout=30)
    assert info.status_code == 200 and info.json()["version"] == answers["east"]["model_version"]


@pytest.mark.slow
def test_fleet_app__batch_answers_every_series_with_its_own_status(fleet, make_body):
    url, _, _, _ = fleet
    body = make_body()
    short = make_body(history_hours=24)  # too little history: a 422 for that series only
    requests_ = [{"series_id": "south", **body}, {"series_id": "nowhere", **body},
                 {"series_id": "east", **short}, {"series_id": "north", **body}]
    answer = post(f"{url}/forecast_batch", {"requests": requests_})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["series_id"], r["status"]) for r in results] == [("south", 200), ("nowhere", 404), ("east", 422),
                                                                ("north", 200)]
    assert answer.json()["failed"] == 2
    assert "no model for series 'nowhere'" in results[1]["error"]["detail"]
    assert results[2]["error"]["field"] == "history"
    single = post(f"{url}/series/north/forecast", body).json()
    assert_close(results[3]["forecast"]["forecast"], single["forecast"], rel=1e-12)


@pytest.mark.slow
def test_fleet_app__bad_ids_keys_and_batches_are_one_line_4xx(fleet, make_body):
    url, _, _, _ = fleet
    body = make_body()
    assert post(f"{url}/series/north/forecast", body, key=None).status_code == 401
    bad = post(f"{url}/series/..%2Fsecret/forecast", body)
    assert bad.status_code in (404, 422)  # a path outside the fleet folder never reaches the loader
    unknown = post(f"{url}/series/nowhere/forecast", body)
    assert unknown.status_code == 404 and unknown.json()["field"] == "series_id"
    assert post(f"{url}/forecast_batch", {"requests": []}).status_code == 422
    assert requests.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"


@pytest.mark.slow
def test_fleet_app__per_series_metrics_reach_rays_prometheus_endpoint(fleet, make_body):
    import time

    import ray

    url, _, _, _ = fleet
    assert post(f"{url}/series/south/forecast", make_body()).status_code == 200
    assert post(f"{url}/series/nowhere/forecast", make_body()).status_code == 404
    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = [  # (metric, labels one of its lines must carry)
        ("ray_stef_series_forecasts_total", ('series_id="south"', 'status="200"')),
        ("ray_stef_series_forecasts_total", ('series_id="nowhere"', 'status="404"')),
        ("ray_stef_series_forecast_ms_bucket", ('series_id="south"',)),
        ("ray_stef_series_model_loads_total", ('series_id="south"', 'kind="load"')),
    ]

    def missing(text: str) -> list[tuple[str, tuple[str, ...]]]:
        lines = text.splitlines()
        return [(name, labels) for name, labels in wanted
                if not any(line.startswith(name + "{") and all(label in line for label in labels) for line in lines)]

    deadline, absent = time.monotonic() + 40, wanted
    while time.monotonic() < deadline:
        absent = missing(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        if not absent:
            break
        time.sleep(1)
    assert not absent, f"not exported: {absent}"


def json_bytes(body: dict) -> bytes:
    import json

    return json.dumps(body).encode()


def test_batch_items__shape_errors_name_the_field():
    with pytest.raises(RequestError, match="appears twice") as err:
        batch_items(b'{"requests": [{"series_id": "a"}, {"series_id": "a"}]}', 10)
    assert err.value.field == "requests[1].series_id"
    with pytest.raises(RequestError, match="needs a series_id") as err:
        batch_items(b'{"requests": [{"history": []}]}', 10)
    with pytest.raises(RequestError, match="at most 1; split") as err:
        batch_items(b'{"requests": [{"series_id": "a"}, {"series_id": "b"}]}', 1)
    assert err.value.status == 413
    with pytest.raises(RequestError, match="not valid JSON"):
        batch_items(b"{", 10)


def test_fleet_args__model_source_must_name_the_series():
    from stef_ray.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"model_source: Value error, must contain \{series_id\}"):
        fleet_args({"model_source": "models/fleet"})
    assert FleetArgs(model_source="models:/power-demand-{series_id}@champion").models_per_replica == 16


def stored(server, metric: str, series_id: str, count: int, timeout_s: float = 30) -> dict[int, float]:
    """The points of one series (by its series_id tag) once ``count`` of them are there."""
    import time

    points: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(points) < count:
        points = {ts: value for series in server.export(metric) if series["metric"].get("series_id") == series_id
                  for ts, value in zip(series["timestamps"], series["values"], strict=True)}
        time.sleep(0.3)
    return points


@pytest.mark.slow
def test_fleet_app__forecasts_and_actuals_reach_the_store_tagged_with_their_series(fleet, make_body):
    import pandas as pd

    url, _, _, server = fleet
    answer = post(f"{url}/series/south/forecast", make_body())
    assert answer.status_code == 200, answer.text
    forecast = answer.json()
    points = stored(server, "power_demand_forecast_forecast", "south", 24)
    expected = {int(pd.Timestamp(ts).timestamp()) * 1000: value
                for ts, value in zip(forecast["timestamps"], forecast["forecast"], strict=True)}
    assert points.keys() == expected.keys()
    assert_close([points[t] for t in sorted(points)], [expected[t] for t in sorted(expected)], rel=1e-9)
    assert stored(server, "power_demand_forecast_forecast", "north", 1, timeout_s=0) == {}  # not asked for north

    # Actuals need no model (a series' history arrives before its first model): "west" has none.
    hours = [f"2021-03-01T{hour:02d}:00:00+00:00" for hour in range(24)]
    body = {"actuals": [{"timestamp": ts, "load": 1000.0 + i} for i, ts in enumerate(hours)]}
    assert post(f"{url}/series/west/actuals", body, key=None).status_code == 401
    bad = post(f"{url}/series/we st/actuals", body)
    assert (bad.status_code, bad.json()["field"]) == (422, "series_id")
    repeated = post(f"{url}/series/west/actuals", {"actuals": body["actuals"][:1] * 2})
    assert (repeated.status_code, repeated.json()["field"]) == (422, "actuals[1].timestamp")
    for _ in range(2):  # a resend keys the same points
        answer = post(f"{url}/series/west/actuals", body)
        assert answer.status_code == 200, answer.text
        assert answer.json() | {"first": None, "last": None} == {"series_id": "west", "accepted": 24,
                                                                 "first": None, "last": None}
    actual = stored(server, "power_demand_actual_load", "west", 24)
    assert actual == {int(pd.Timestamp(ts).timestamp()) * 1000: 1000.0 + i for i, ts in enumerate(hours)}


@pytest.mark.slow
def test_fleet_app__a_series_follows_its_alias_to_a_new_champion_without_a_failed_request(
    served, bundles, make_body, tmp_path,
):
    """A weekly retrain registers a series' new champion: the replica holding that series swaps it in on a
    later request, while the old version answers meanwhile; no answer fails or mixes versions."""
    import time

    import mlflow

    from stef_ray.serving.serve_config import deploy_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("fleet-alias", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_registered_model("fleet-alias-north")
    for bundle in (bundles.first, bundles.second):
        run = client.create_run(experiment)
        client.log_artifacts(run.info.run_id, str(bundle), "bundle")
        client.set_terminated(run.info.run_id)
        client.create_model_version("fleet-alias-north", f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id)
    client.set_registered_model_alias("fleet-alias-north", "champion", "1")

    app = fleet_application("fleet-alias", model_source="models:/fleet-alias-{series_id}@champion",
                            mlflow_tracking_uri=uri, alias_poll_s=0.5, influx=False)
    config = copy.deepcopy(served.config)
    config["applications"].append(app)
    deploy_config(config)
    body = make_body()
    expected = {}
    for version, bundle in (("1", bundles.first), ("2", bundles.second)):
        service = ForecastService.from_source(str(bundle))
        expected[version] = service.forecast(service.parse(json_bytes(body)))["forecast"]
    url = f"{served.url}/fleet-alias/series/north/forecast"
    try:
        first = post(url, body)
        assert first.status_code == 200, first.text
        assert (first.json()["model_version"], first.json()["model_alias"]) == ("1", "champion")
        with posting_clients(lambda: post(url, body)) as answers:
            time.sleep(0.5)
            client.set_registered_model_alias("fleet-alias-north", "champion", "2")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(a[1].get("model_version") == "2" for a in answers[-5:]):
                time.sleep(0.2)
            time.sleep(0.5)
        failed = [a for a in answers if a[0] != 200]
        assert not failed, failed[:3]
        versions = [a[1]["model_version"] for a in answers]
        assert (versions[0], versions[-1]) == ("1", "2"), set(versions)
        for _, answer in answers:  # each answer entirely one version's forecast
            assert_close(answer["forecast"], expected[answer["model_version"]], rel=1e-9)
        info = requests.get(f"{served.url}/fleet-alias/series/north/model", headers={"X-API-Key": KEY}, timeout=30)
        assert info.json()["version"] == "2"
        from ray import serve

        forecaster = serve.get_deployment_handle("FleetForecaster", app_name="fleet-alias")
        assert forecaster.stats.remote().result()["swaps"] == {"north": 1}
    finally:
        deploy_config(served.config)
