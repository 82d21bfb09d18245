"""The deployment files: compose file valid against the Compose specification, cluster.yaml valid against
Ray's schema, and the Grafana dashboard querying only what the InfluxDB sink writes.

tests/data/compose-spec.json is the Compose specification schema as vendored in the `check-jsonschema`
0.39.0 PyPI package (check_jsonschema/builtin_schemas/vendor/compose-spec.json, from
github.com/compose-spec/compose-spec); Apache-2.0, see tests/data/LICENSE.compose-spec.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from stef_ray.integrations.influx_points import MEASUREMENT_FIELDS, MEASUREMENT_TAGS, TAG_SERIES_ID
from stef_ray.serving.forecast_store import TAG_ARM

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "stef_ray.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "influxdb.yaml"
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def flux_queries(dashboard: dict) -> list[tuple[str, str]]:
    queries = [(panel["title"], target["query"]) for panel in dashboard["panels"] for target in panel["targets"]
               if panel["datasource"]["type"] == "influxdb"]
    queries += [(f"variable {var['name']}", var["query"]) for var in dashboard["templating"]["list"] if var["type"] == "query"]
    return queries


# ---- compose ------------------------------------------------------------------------------------


def test_compose__valid_against_compose_specification(compose, compose_validator):
    errors = sorted(compose_validator.iter_errors(compose), key=lambda error: list(error.path))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_compose__schema_rejects_a_broken_file(compose, compose_validator):
    # The check above means something only if the schema bites: a typo'd key and a bad port must fail.
    broken = copy.deepcopy(compose)
    broken["services"]["grafana"]["volumnes"] = []
    broken["services"]["influxdb"]["ports"] = {"18086": 8086}
    messages = [error.message for error in compose_validator.iter_errors(broken)]
    assert any("volumnes" in message for message in messages)
    assert len(messages) >= 2


def test_compose__has_the_whole_stack_with_gpu_worker_and_scheduler(compose):
    services = compose["services"]
    assert {"ray-head", "ray-worker", "mlflow", "postgres", "influxdb", "grafana", "prometheus", "scheduler"} <= set(services)
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert services["scheduler"]["command"][:2] == ["stef-ray", "schedule"]
    assert "postgresql://" in " ".join(services["mlflow"]["command"])
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    init = services["influxdb"]["environment"]
    assert init["DOCKER_INFLUXDB_INIT_ORG"].endswith("open-stef}")
    assert init["DOCKER_INFLUXDB_INIT_BUCKET"].endswith("power_demand}")


def test_compose__every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(compose):
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on as a list starts before its dependencies are up"
        for dependency, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}: {condition}"


def test_compose__gpu_worker_only_in_the_gpu_profile(compose):
    # `docker compose up` on a machine without the NVIDIA runtime must not reserve a GPU.
    for name, service in compose["services"].items():
        if "deploy" in service and "devices" in str(service["deploy"]):
            assert service.get("profiles") == ["gpu"], name


def test_compose__serve_listens_on_every_interface_inside_its_container(compose):
    # serve_config.yaml keeps 127.0.0.1 for a laptop; the head's command rewrites it, and the rewrite must
    # still match the file (a changed comment would silently leave Serve unreachable through the port).
    command = " ".join(compose["services"]["ray-head"]["command"])
    rewrite = re.search(r"sed '(s/[^']+)' serve_config.yaml > (\S+)", command)
    assert rewrite and f"serve deploy {rewrite.group(2)}" in command
    pattern, replacement = rewrite.group(1)[2:-1].split("/")
    text = (ROOT / "serve_config.yaml").read_text()
    rewritten = re.sub(pattern, replacement, text, flags=re.MULTILINE)  # sed's basic regex reads the same here
    assert yaml.safe_load(rewritten)["http_options"]["host"] == "0.0.0.0"
    assert load_yaml(ROOT / "serve_config.yaml")["http_options"]["host"] == "127.0.0.1"


def test_compose__ray_nodes_share_a_data_volume_and_mlflow_runs_from_its_slim_image(compose):
    services = compose["services"]
    for name in ("ray-head", "ray-worker"):
        assert "stef-ray-data:/app/data" in services[name]["volumes"], name
    assert "stef-ray-data" in compose["volumes"]
    assert services["mlflow"]["build"]["target"] == "mlflow"
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = {alias: image for image, alias in re.findall(r"^FROM (\S+) AS (\w+)", dockerfile, flags=re.MULTILINE)}
    assert set(stages) == {"app", "mlflow"} and stages["mlflow"].endswith("-slim")
    app = dockerfile.split("AS app", 1)[1]
    # Dependencies are installed before the source is copied: a code change must not reinstall torch.
    assert app.index("-r /tmp/requirements.txt") < app.index("COPY stef_ray")


def test_compose__published_ports_are_shifted_into_1xxxx(compose):
    internal_by_service = {}
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            host, internal = (int(part) for part in str(mapping).split(":"))
            assert 10000 <= host <= 19999, f"{name} publishes {host}"
            internal_by_service.setdefault(name, set()).add(internal)
    assert internal_by_service["ray-head"] >= {8265, 8000}
    assert internal_by_service["grafana"] == {3000}
    assert internal_by_service["mlflow"] == {5000}


def test_compose__secrets_only_from_env_and_all_in_env_example(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert referenced <= example, f"variables missing from .env.example: {sorted(referenced - example)}"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}.{key} must come from .env"


def test_compose__mounted_repository_paths_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# ---- Ray cluster launcher -----------------------------------------------------------------------


def test_cluster_yaml__valid_against_rays_schema():
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = load_yaml(ROOT / "cluster.yaml")
    jsonschema.validate(config, schema)
    gpu_types = [name for name, node in config["available_node_types"].items() if node["resources"].get("GPU", 0) > 0]
    assert gpu_types
    assert config["available_node_types"][gpu_types[0]]["max_workers"] > config["available_node_types"][gpu_types[0]].get("min_workers", 0)
    assert any("pip install" in command and "torch==" in command for command in config["setup_commands"])
    broken = {**config, "max_wokers": 3}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# ---- Grafana ------------------------------------------------------------------------------------


def test_dashboard__every_queried_measurement_and_field_is_written_by_the_sink():
    dashboard = json.loads(DASHBOARD.read_text())
    for title, query in flux_queries(dashboard):
        measurements = re.findall(r'r\._measurement\s*==\s*"([^"]+)"', query)
        assert measurements, f"{title}: no measurement filter"
        unknown = set(measurements) - set(MEASUREMENT_FIELDS)
        assert not unknown, f"{title}: measurement(s) {unknown} are not written by the sink"
        written_fields = {field for name in measurements for field in MEASUREMENT_FIELDS[name]}
        written_tags = {tag for name in measurements for tag in MEASUREMENT_TAGS[name]}
        if "power_demand_forecast" in measurements:
            written_tags.add(TAG_ARM)  # the Serve app's A/B arm, beside the sink's tags
        fields = set(re.findall(r'r\._field\s*==\s*"([^"]+)"', query))
        assert fields <= written_fields, f"{title}: field(s) {fields - written_fields} are not written"
        for tag in re.findall(r"\br\.(model_name|model_version|issue_time|scope|arm|series_id)\b", query):
            assert tag in written_tags, f"{title}: tag {tag} is not written"


def test_dashboard__has_the_five_panels_on_the_provisioned_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {source["uid"] for source in load_yaml(DATASOURCES)["datasources"]}
    titles = [panel["title"].lower() for panel in dashboard["panels"]]
    for needle in ("forecast (issued 00:00) vs actual", "components", "evaluation metrics", "mape by lead hour",
                   "model version"):
        assert any(needle in title for title in titles), f"no panel about {needle}"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
        assert all(target["datasource"]["uid"] in uids for target in panel["targets"])
    components = next(p for p in dashboard["panels"] if "components" in p["title"].lower())
    assert set(re.findall(r'r\._field == "(\w+)"', components["targets"][0]["query"])) == {"trend", "seasonality", "residual"}


def test_dashboard__day_ahead_panel_shows_the_00_00_forecast_with_its_band_and_mape_by_version():
    # The latest-issued value of an hour is about the 1-hour-ahead forecast and flatters accuracy: the
    # forecast panel keeps the forecasts issued at 00:00 in the issuing zone, and draws P10-P90 as a band.
    dashboard = json.loads(DASHBOARD.read_text())
    panel = next(p for p in dashboard["panels"] if "day-ahead" in p["title"].lower())
    query = panel["targets"][0]["query"]
    assert set(re.findall(r'r\._field == "(\w+)"', query)) == {"forecast", "p10", "p90"}
    assert "date.hour(t: time(v: r.issue_time), location: zone) == 0" in query
    assert 'timezone.location(name: "${issue_timezone}")' in query
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["issue_timezone"]["query"] == "Asia/Seoul"  # the scheduler's default zone
    band = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]} for o in panel["fieldConfig"]["overrides"]}
    assert band["p90"]["custom.fillBelowTo"] == "p10"
    by_version = next(p for p in dashboard["panels"] if "by model version" in p["title"].lower())
    assert 'group(columns: ["model_name", "model_version"])' in by_version["targets"][0]["query"]
    boxes = [(p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"], p["gridPos"]["h"]) for p in dashboard["panels"]]
    cells = [(x + i, y + j) for x, y, w, h in boxes for i in range(w) for j in range(h)]
    assert len(cells) == len(set(cells)), "two panels overlap"


def test_dashboard__a_series_variable_filters_every_stored_series_and_joins_keep_series_apart():
    # A fleet's points carry series_id (the fleet Serve app, stef-ray monitor reads it); a single
    # series' points have none and must still show, and a forecast may only meet its own series' actual.
    dashboard = json.loads(DASHBOARD.read_text())
    variable = {v["name"]: v for v in dashboard["templating"]["list"]}["series_id"]
    assert variable["includeAll"] and variable["allValue"] == ".*" and 'tag: "series_id"' in variable["query"]
    assert TAG_SERIES_ID == "series_id"
    series_filter = 'filter(fn: (r) => not exists r.series_id or r.series_id =~ /^${series_id:regex}$/)'
    stored = ("power_demand_forecast", "power_demand_actual", "forecast_metrics")
    for title, query in flux_queries(dashboard):
        if title.startswith("variable"):  # the variables list tag values, across series
            continue
        reads = [m for m in re.findall(r'r\._measurement\s*==\s*"([^"]+)"', query) if m in stored]
        assert query.count(series_filter) == len(reads), f"{title}: not every stored series is filtered"
        for join in re.findall(r"join\(tables: \{[^}]*\}, on: \[([^\]]*)\]\)", query):
            assert '"series_id"' in join, f"{title}: a join across series"
        if "join(" in query:
            assert query.count('series_id: if exists r.series_id then r.series_id else ""') == 2, title


def test_grafana_provisioning__flux_datasource_and_ray_dashboards(compose):
    influx = next(s for s in load_yaml(DATASOURCES)["datasources"] if s["type"] == "influxdb")
    # The org and bucket are the stack's, from the environment (as InfluxDB was set up), not written in.
    assert influx["jsonData"] == {**influx["jsonData"], "version": "Flux", "organization": "${INFLUXDB_ORG}",
                                  "defaultBucket": "${INFLUXDB_BUCKET}"}
    grafana_env = compose["services"]["grafana"]["environment"]
    influx_init = compose["services"]["influxdb"]["environment"]
    assert grafana_env["INFLUXDB_ORG"] == influx_init["DOCKER_INFLUXDB_INIT_ORG"]
    assert grafana_env["INFLUXDB_BUCKET"] == influx_init["DOCKER_INFLUXDB_INIT_BUCKET"]
    dashboard = DASHBOARD.read_text()
    assert "v.defaultBucket" in dashboard and "power_demand\"" not in dashboard.replace("power_demand_", "")
    assert influx["url"] == "http://influxdb:8086"
    assert influx["secureJsonData"]["token"] == "${INFLUXDB_TOKEN}"
    providers = load_yaml(ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yaml")["providers"]
    paths = {provider["options"]["path"] for provider in providers}
    assert "/tmp/ray/session_latest/metrics/grafana/dashboards" in paths
    grafana_mounts = [volume.split(":")[1] for volume in compose["services"]["grafana"]["volumes"]]
    for path in paths:
        assert any(path.startswith(mount) for mount in grafana_mounts), f"{path} is not mounted into grafana"
    prometheus = load_yaml(ROOT / "deploy/prometheus/prometheus.yml")
    ray_job = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "ray")
    assert ray_job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_dashboard__every_prometheus_metric_is_one_the_serve_app_exports():
    # Ray exports a Counter as ray_<name>_total, a Histogram as ray_<name>_bucket/_sum/_count and a Gauge as
    # ray_<name> (checked against Ray 2.60's /metrics); the names must be the ones the ingress and its
    # forecast store (and the fleet app) define.
    source = "".join((ROOT / "stef_ray" / "serving" / name).read_text()
                     for name in ("ingress.py", "forecast_store.py", "fleet_app.py"))
    defined = {name: kind for kind, name in re.findall(r'metrics\.(Counter|Histogram|Gauge)\(\s*"(\w+)"', source)}
    suffixes = {"Counter": {"_total"}, "Histogram": {"_bucket", "_sum", "_count"}, "Gauge": {""}}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]
             if "expr" in target]
    assert len(exprs) >= 6
    seen = set()
    for title, expr in exprs:
        names = re.findall(r"\bray_(stef_\w+)", expr)
        assert names, f"{title}: no stef metric in {expr}"
        for full in names:
            base = next((n for n in defined if full == n or full.startswith(n + "_")), None)
            assert base is not None, f"{title}: ray_{full} is not exported by the Serve app"
            assert full[len(base):] in suffixes[defined[base]], f"{title}: ray_{full} is not how Ray exports a {defined[base]}"
            seen.add(base)
    assert {"stef_forecasts_served", "stef_forecast_latency_ms", "stef_degraded_answers",
            "stef_component_batch_size", "stef_spool_backlog_lines", "stef_series_forecasts",
            "stef_series_forecast_ms", "stef_series_model_loads"} <= seen


def as_grafana_runs_it(query: str) -> str:
    """A dashboard query as Grafana's Flux data source sends it: its variables filled in (a multi-value
    variable in regex format as Grafana writes it, and the series' "All" value) and the ``v`` record the
    data source defines, after the imports."""
    filled = (query.replace("${issue_timezone}", "Asia/Seoul")
              .replace("${model_name:regex}", r"(power\-demand|power\-demand\-PJME)")
              .replace("${series_id:regex}", ".*"))
    assert "$" not in filled.replace("$/", ""), f"a dashboard variable this test does not fill in: {filled}"
    lines = filled.splitlines()
    imports = [line for line in lines if line.startswith("import ")]
    rest = [line for line in lines if not line.startswith("import ")]
    record = ('v = {timeRangeStart: 2026-11-01T00:00:00Z, timeRangeStop: 2026-12-01T00:00:00Z, windowPeriod: 1h, '
              'defaultBucket: "stef_ray", organization: "stef_ray"}')
    return "\n".join([*imports, record, *rest])


def test_dashboard__every_flux_query_passes_fluxs_parser_and_type_checker(flux_errors):
    queries = {name: as_grafana_runs_it(query) for name, query in flux_queries(json.loads(DASHBOARD.read_text()))}
    assert len(queries) >= 8
    errors = flux_errors(queries)
    assert errors == {name: [] for name in queries}


def test_dashboard__the_flux_check_finds_what_a_server_would_refuse(flux_errors):
    # The negative control: a misspelt argument, an unknown function, a wrong type, each named.
    day_ahead = next(query for name, query in flux_queries(json.loads(DASHBOARD.read_text())) if "aggregateWindow" in query)
    broken = {
        "argument": as_grafana_runs_it(day_ahead).replace("createEmpty:", "createEmtpy:"),
        "function": as_grafana_runs_it(day_ahead).replace("|> sort(", "|> srot("),
        "type": as_grafana_runs_it(day_ahead).replace("every: 1h", 'every: "1h"'),
    }
    errors = flux_errors(broken)
    assert any("createEmtpy" in line for line in errors["argument"])
    assert any("srot" in line for line in errors["function"])
    assert errors["type"], "a string where a duration is expected"
