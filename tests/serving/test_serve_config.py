"""serve_config.yaml against Ray Serve's own schema, the overrides `stef-ray serve` applies, and the
`stef-ray serve` command's parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stef_ray.exceptions import ConfigError
from stef_ray.serving.app import AppArgs  # its documented address (serve_config.yaml)
from stef_ray.serving.serve_config import INGRESS, read_serve_config, validate_serve_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "serve_config.yaml"


def test_serve_config__valid_against_ray_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    app = schema.applications[0]
    assert app.import_path == "stef_ray.serving.app:build_app"
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"ForecastIngress", "Trend", "Seasonality", "Residual"}
    for deployment in deployments.values():
        options = deployment.ray_actor_options
        assert 0 < options.num_cpus < 1
        assert options.num_gpus == 0
    assert deployments[INGRESS].user_config["model_source"] == "models:/power-demand-hybrid@champion"
    AppArgs.model_validate(app.args)


def test_read_serve_config__model_override_reaches_args_and_user_config(tmp_path):
    config = read_serve_config(CONFIG, model_source=str(tmp_path), port=8123)
    app = config["applications"][0]
    ingress = next(d for d in app["deployments"] if d["name"] == INGRESS)
    assert app["args"]["model_source"] == str(tmp_path)
    assert ingress["user_config"] == {"model_source": str(tmp_path), "residual_timeout_s": 2.0}
    assert config["http_options"]["port"] == 8123


def test_validate_serve_config__errors_name_the_key():
    raw = yaml.safe_load(CONFIG.read_text())
    raw["applications"][0]["args"]["residual_timeout"] = 3
    with pytest.raises(ConfigError, match=r"residual_timeout: unknown key"):
        validate_serve_config(raw)
    raw = yaml.safe_load(CONFIG.read_text())
    raw["applications"][0]["deployments"][0]["num_replicas"] = -1
    with pytest.raises(ConfigError, match="num_replicas"):
        validate_serve_config(raw)


def test_serve_command__parses_overrides():
    from stef_ray.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--model", "models/production", "--port", "8080"])
    assert (args.model, args.port, args.config) == ("models/production", 8080, Path("serve_config.yaml"))
    assert args.handler.__module__ == "stef_ray.cli.serve_cmd"
    assert args.dashboard is True  # as `ray start` and `serve run`: the dashboard is on unless asked off
    assert build_parser().parse_args(["serve", "--no-dashboard"]).dashboard is False


def test_curl_example__names_the_models_columns():
    from stef_ray.cli.serve_cmd import curl_example

    text = curl_example("http://127.0.0.1:8000", ["temperature", "workday"], 168, api_key=True)
    assert "X-API-Key" in text
    assert '"temperature": 0.0' in text
    assert "168 hourly rows" in text


def test_throughput_mode__sets_serves_variables_but_keeps_an_opt_out():
    from stef_ray.serving.mode import THROUGHPUT_ENV, use_throughput_mode

    environ = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    applied = use_throughput_mode(environ)
    assert applied["RAY_SERVE_ENABLE_HA_PROXY"] == "0"  # the user's choice stands
    assert applied["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert set(applied) == set(THROUGHPUT_ENV)


def test_throughput_mode__docker_compose_and_cluster_yaml_set_the_same_variables():
    """The containers and the cluster start Ray themselves; they must run the mode `stef-ray serve` runs,
    with the one-thread pools `stef-ray` sets for itself (the image sets those in its ENV)."""
    from stef_ray.serving.mode import THROUGHPUT_ENV
    from stef_ray.threads import configure_threads

    threads: dict[str, str] = {}
    configure_threads(threads)
    assert threads == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert all(f"{name}={value}" in dockerfile for name, value in threads.items())

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    ray_services = [s for s in compose["services"].values() if "ray start" in str(s.get("command", ""))]
    assert ray_services
    for service in ray_services:
        assert {k: str(v) for k, v in service["environment"].items() if k in THROUGHPUT_ENV} == THROUGHPUT_ENV
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    for command in cluster["head_start_ray_commands"][1:] + cluster["worker_start_ray_commands"][1:]:
        exported = dict(part.split("=", 1) for part in command.split("export ", 1)[1].split(";")[0].split())
        assert exported == THROUGHPUT_ENV | threads


@pytest.mark.slow
def test_serve_command__sigterm_stops_it_cleanly(bundles, tmp_path):
    # As systemd, Docker or Kubernetes stop a service: SIGTERM. The server must leave with status 0 and
    # without the trace Ray's own handler prints, after shutting Serve and Ray down.
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(Path(sys.executable).with_name("stef-ray")), "serve", "--config", str(CONFIG), "--model",
               str(bundles.first), "--port", str(port), "--num-cpus", "2", "--no-dashboard"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                   # Ray's HAProxy binds fixed ports (8404, 9101): a second Serve in
                                   # high-throughput mode on the machine of the test session's cannot start.
                                   env={**os.environ, "RAY_AUTH_MODE": "disabled",
                                        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "Ctrl-C to stop" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, log.read_text(errors="replace")[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text(errors="replace")
    assert "stopping (SIGTERM): shutting Serve and Ray down" in text
    assert "Traceback" not in text and "SIGTERM received" not in text, text[-2000:]


def test_serve_fleet_config__valid_and_its_args_checked_by_name(tmp_path):
    config = read_serve_config(REPO / "serve_fleet_config.yaml")
    assert config["applications"][0]["args"]["model_source"] == "models/fleet/{series_id}"
    broken = tmp_path / "fleet.yaml"
    text = (REPO / "serve_fleet_config.yaml").read_text().replace("models_per_replica: 32", "models_per_replica: 0")
    broken.write_text(text)
    with pytest.raises(ConfigError, match=r"applications\[stef-fleet\]\.args.*models_per_replica"):
        read_serve_config(broken)
