"""A real time-series server for the InfluxDB sink tests: Debian's victoria-metrics on loopback.

It accepts the InfluxDB v2 line-protocol write API (/api/v2/write) that influxdb-client speaks, and
lets a test read every stored sample back, so the tests see what a server really received.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

BINARY = "victoria-metrics"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VictoriaMetrics:
    """One victoria-metrics process that can be stopped and started again on the same port and storage."""

    def __init__(self, binary: str, storage: Path, port: int, log_path: Path):
        self.binary, self.storage, self.port, self.log_path = binary, storage, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self._process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until stop()
        self._process = subprocess.Popen(
            [
                self.binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.storage}",
                "-retentionPeriod=100y",  # the tests write historical timestamps (default keeps 1 month)
                "-search.latencyOffset=0s",
                "-loggerLevel=WARN",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited with {self._process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"victoria-metrics not ready on {self.url} after {timeout_s} s; see {self.log_path}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def export(self, selector: str) -> list[dict]:
        """Every stored sample matching `selector` (`<measurement>_<field>{tag="value"}`), one dict per series."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        params = urllib.parse.urlencode({"match[]": selector, "start": 0, "end": 4102444800})
        query = f"{self.url}/api/v1/export?{params}"
        with urllib.request.urlopen(query, timeout=30) as response:
            body = response.read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory) -> VictoriaMetrics:
    binary = shutil.which(BINARY)
    if binary is None:
        pytest.skip(f"{BINARY} is not installed (run `make services` / scripts/install_services.sh)")
    root = tmp_path_factory.mktemp("victoria-metrics")
    server = VictoriaMetrics(binary, root / "storage", free_port(), root / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tsdb(victoria_metrics: VictoriaMetrics) -> VictoriaMetrics:
    """The session's server, running, for one test; a test that stops it must leave it running or not."""
    if not victoria_metrics.running:
        victoria_metrics.start()
    yield victoria_metrics
    if not victoria_metrics.running:
        victoria_metrics.start()


# --------------------------------------------------------------------------- Ray Tune and MLflow
# One Ray session for the whole test session (2 CPUs, no dashboard), tiny seeded data and one tiny search
# whose bundle the tune and registry tests share.


@pytest.fixture(scope="session")
def ray_session(local_ray):
    return local_ray


def tiny_tune_config(storage_path, **overrides):
    """A search whose trials fit the hybrid in a second or two per window: 60 days of hourly data, 48 h
    lookback, ridges only or a one-epoch MLP, 2 windows of 3 days."""
    from stef_ray.integrations.tune_config import TuneConfig

    raw = {
        "data": {"exog": ["temperature", "workday"]},
        "model": {
            "seasonality": {"yearly_order": 0, "weekly_order": 3, "cross_validate": False},
            "forecast": {"lookback_hours": 48, "horizon_hours": 24},
            "residual": {"validation_days": 3, "validation_blocks": 2,
                         "train_days": 30, "window_stride_hours": 4, "hidden_size": 4, "max_epochs": 1,
                         "architecture": "mlp", "boosted_weight": 0.0},
        },
        "search": {"num_samples": 3, "seed": 1, "space": {
            "seasonality.daily_order": {"type": "choice", "values": [2, 4]},
            "residual.linear_alpha": {"type": "loguniform", "low": 0.1, "high": 10.0},
            "residual.architecture": {"type": "choice", "values": ["none", "mlp"]},
        }},
        "objective": {"windows": 2, "window_days": 3, "span_days": 14},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpus_per_trial": 1},
        "mlflow": {"holdout_days": 7},
        "storage_path": str(storage_path),
        "max_failures": 0,
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TuneConfig.model_validate(raw)


@pytest.fixture(scope="session")
def tiny_hourly():
    """60 days of seeded synthetic hourly load with temperature and workday, as HourlyData."""
    from stef_ray.config import DataConfig
    from stef_ray.data import frame_to_hourly
    from stef_ray.data.synthetic import synthetic_load

    table = synthetic_load(hours=24 * 60, start="2024-03-01", timezone="UTC", seed=3, base_mw=5_000.0)
    return frame_to_hourly(table, DataConfig(exog=["temperature", "workday"]), source="synthetic")


@pytest.fixture(scope="session")
def tiny_search(ray_session, tiny_hourly, tmp_path_factory):
    """One finished tiny search (3 trials x 2 windows, ASHA) and its config."""
    from stef_ray.integrations.tune import run_search

    root = tmp_path_factory.mktemp("tiny_search")
    config = tiny_tune_config(root / "ray_results")
    outcome = run_search(config, tiny_hourly, name="tiny", bundle_out=root / "bundle")
    return outcome, config


@pytest.fixture(scope="session")
def make_tune_config():
    """``tiny_tune_config`` as a fixture: ``make_tune_config(storage_path, **{"scheduler.type": "fifo"})``."""
    return tiny_tune_config
