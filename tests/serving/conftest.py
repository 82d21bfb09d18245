"""Shared set-up for the serving tests: two small real bundles, one Ray session, the app deployed from
serve_config.yaml (the production path) on a free loopback port, and request builders.

Tiny by construction: a 60-day synthetic series, an 8-unit LSTM trained for one epoch (a few seconds).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from stef_ray.config import DataConfig, ModelConfig, ResidualConfig
from stef_ray.data.hourly import HourlyData
from stef_ray.data.loading import frame_to_hourly
from stef_ray.data.synthetic import synthetic_load

REPO = Path(__file__).resolve().parents[2]
EXOG = ["temperature", "workday"]
APP_NAME = "stef-forecast"
API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_bundle(path: Path, seed: int) -> Path:
    import torch

    from stef_ray.bundle import save_bundle
    from stef_ray.models.hybrid import HybridModel

    torch.set_num_threads(1)
    data = hourly_data(seed)
    config = ModelConfig(residual=ResidualConfig(
        enabled=True, hidden_size=8, max_epochs=1, validation_days=7, validation_blocks=2, window_stride_hours=2, device="cpu", seed=seed,
    ))
    model = HybridModel(config, EXOG).fit(data)
    return save_bundle(model, path, DataConfig(exog=EXOG))


def hourly_data(seed: int = 0) -> HourlyData:
    return frame_to_hourly(synthetic_load(hours=24 * 60, seed=seed), DataConfig(exog=EXOG))


@dataclass
class Bundles:
    first: Path
    second: Path


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> Bundles:
    root = tmp_path_factory.mktemp("bundles")
    return Bundles(train_bundle(root / "first", seed=0), train_bundle(root / "second", seed=1))


@pytest.fixture(scope="session")
def history_frame() -> pd.DataFrame:
    """60 days of the synthetic series: request bodies take their history and 24 known future hours from its end."""
    return hourly_data(0).frame


def rows(frame: pd.DataFrame, with_load: bool = True) -> list[dict]:
    out = []
    for ts, values in zip(frame.index, frame.to_dict("records"), strict=True):
        row = {"timestamp": ts.isoformat()}
        if with_load:
            row["load"] = values["load"]
        row |= {name: values[name] for name in EXOG}
        out.append(row)
    return out


@pytest.fixture(scope="session")
def make_body(history_frame) -> Callable[..., dict]:
    def make(history_hours: int = 200, future_hours: int = 24, horizon: int | None = 24) -> dict:
        history = history_frame.iloc[-(history_hours + 24):-24]
        future = history_frame.iloc[-24:].iloc[:future_hours]
        body = {"history": rows(history), "future": rows(future, with_load=False)}
        if horizon is not None:
            body["horizon"] = horizon
        return body

    return make


@pytest.fixture(scope="session")
def ray_cluster(local_ray):
    return local_ray


@dataclass
class ServedApp:
    url: str
    config: dict
    headers: dict

    def deploy(self, **changes) -> None:
        """Re-deploy the config with deployment changes, e.g. Residual={"user_config": {...}}."""
        from stef_ray.serving.serve_config import deploy_config

        for deployment in self.config["applications"][0]["deployments"]:
            deployment.update(changes.get(deployment["name"], {}))
        deploy_config(self.config)

    def deploy_args(self, **args) -> None:
        """Re-deploy with changed application args (Serve replaces the replicas)."""
        from stef_ray.serving.serve_config import deploy_config

        self.config["applications"][0]["args"].update(args)
        deploy_config(self.config)

    def post(self, body, timeout: float = 30, **kwargs) -> requests.Response:
        headers = self.headers | kwargs.pop("headers", {})
        if isinstance(body, dict | list):
            return requests.post(f"{self.url}/forecast", json=body, headers=headers, timeout=timeout, **kwargs)
        return requests.post(f"{self.url}/forecast", data=body, headers=headers, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def served(ray_cluster, bundles) -> ServedApp:
    """The app from serve_config.yaml, one replica of each deployment, on a free loopback port."""
    from stef_ray.serving.serve_config import deploy_config, read_serve_config

    port = free_port()
    config = read_serve_config(REPO / "serve_config.yaml", model_source=str(bundles.first), host="127.0.0.1",
                               port=port)
    app = config["applications"][0]
    app["args"] |= {"api_key": API_KEY, "max_body_bytes": 64 * 1024, "residual_timeout_s": 1.0}
    for deployment in app["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        if deployment["name"] == "ForecastIngress":
            deployment["user_config"]["residual_timeout_s"] = 1.0
    deploy_config(config)
    return ServedApp(f"http://127.0.0.1:{port}", config, {"X-API-Key": API_KEY})


def assert_close(actual, expected, rel: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=rel)


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory):
    """The InfluxDB-v2-speaking victoria-metrics server of the integration tests, on a free loopback port.

    The server class lives in tests/integrations/conftest.py; it is loaded from there by path (tests are
    imported with --import-mode=importlib, so conftest modules are not importable by name).
    """
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("_stef_influx_server", REPO / "tests/integrations/conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    binary = shutil.which(helpers.BINARY)
    if binary is None:
        pytest.skip(f"{helpers.BINARY} is not installed (run `make services` / scripts/install_services.sh)")
    root = tmp_path_factory.mktemp("victoria-metrics")
    server = helpers.VictoriaMetrics(binary, root / "storage", free_port(), root / "server.log")
    server.start()
    yield server
    server.stop()


@contextlib.contextmanager
def posting_clients(post: Callable[[], requests.Response], clients: int = 2) -> Iterator[list[tuple[int, dict]]]:
    """``clients`` threads calling ``post()`` in a loop while the block runs (a hot swap, an alias move):
    yields the list their (status, JSON or {"text": ...}) answers are appended to, in order."""
    answers: list[tuple[int, dict]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            response = post()
            answers.append((response.status_code, response.json() if response.ok else {"text": response.text}))

    workers = [threading.Thread(target=loop) for _ in range(clients)]
    for worker in workers:
        worker.start()
    try:
        yield answers
    finally:
        stop.set()
        for worker in workers:
            worker.join()
