"""The real servers of the operations stack, started natively on loopback (no Docker): victoria-metrics
(the time-series store, with InfluxDB's line-protocol write API), `mlflow server` (SQLite + an artifact
folder) and a Ray head with the job API and token authentication, as Ray starts by default.

Each is a context manager that yields where it answers, keeps its log in the given folder and stops its
process (group) on the way out. Used by scripts/week_in_the_life.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(process: subprocess.Popen, url: str, log: Path, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{what} exited with {process.returncode}: {' | '.join(tail)} (log: {log})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):  # up, and asking for a token
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not answer {url} within {timeout_s:.0f} s (log: {log})")


def _stop(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM to the server's process group (its own session), SIGKILL to whatever is left of it after
    ``timeout_s`` or once the leader has exited: `mlflow server` 3.9 leaves its job runner behind when
    only the parent is signalled."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so a driver that
    is killed or aborts leaves no server running; elsewhere the `finally` below is the only cleanup."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _server(command: list[str], ready_url: str, log: Path, what: str, env: dict | None = None,
            timeout_s: float = 60.0) -> Iterator[subprocess.Popen]:
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        _wait_until_up(process, ready_url, log, what, timeout_s)
        yield process
    finally:
        _stop(process)


@dataclass(frozen=True)
class RayHead:
    address: str  # the cluster (GCS) address, for ray.init
    job_api: str  # the dashboard's HTTP address: job submission, /api/version
    temp_dir: Path  # where the head writes prom_metrics_service_discovery.json

    @property
    def service_discovery(self) -> Path:
        return self.temp_dir / "prom_metrics_service_discovery.json"


@contextlib.contextmanager
def victoria_metrics(folder: Path, scrape_config: Path | None = None) -> Iterator[str]:
    """victoria-metrics on a free port; yields its base URL (InfluxDB write API at /api/v2/write, PromQL at
    /api/v1/query). With ``scrape_config`` (Prometheus' format) it also scrapes, as Prometheus would."""
    binary = shutil.which("victoria-metrics")
    if binary is None:
        raise RuntimeError("victoria-metrics is not installed: run `make services` (scripts/install_services.sh)")
    port = free_port()
    command = [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={folder / 'victoria-metrics'}",
               "-retentionPeriod=100y",  # the drill writes a past year's timestamps (the default keeps a month)
               "-search.latencyOffset=0s", "-loggerLevel=WARN"]
    if scrape_config is not None:
        command += [f"-promscrape.config={scrape_config}", "-promscrape.fileSDCheckInterval=2s"]
    url = f"http://127.0.0.1:{port}"
    with _server(command, f"{url}/health", folder / "victoria-metrics.log", "victoria-metrics"):
        yield url


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """`mlflow server` with a SQLite store and a local artifact folder; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "mlflow-artifacts")]
    url = f"http://127.0.0.1:{port}"
    with _server(command, f"{url}/health", folder / "mlflow-server.log", "mlflow server"):
        yield url


@contextlib.contextmanager
def ray_head(folder: Path, num_cpus: int, token: str, env: dict[str, str] | None = None) -> Iterator[RayHead]:
    """`ray start --head --block` with token authentication and the job API, on free ports (Ray's fixed
    defaults clash with any other Ray on the machine)."""
    ray_cli = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="rayw", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard_port = free_port(), free_port()
    command = [
        str(ray_cli), "start", "--head", "--block", "--num-cpus", str(num_cpus), "--port", str(port),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--include-dashboard=true",
        "--temp-dir", temp_dir, "--disable-usage-stats",
        "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
        "--ray-client-server-port", str(free_port()),
    ]
    # Serve binds fixed ports in high-throughput mode. HAProxy's stats and metrics (8404, 9101): with a
    # second Serve on the machine (a test session's) it could not start. The fallback proxy behind HAProxy
    # (8500, 9500) binds with SO_REUSEPORT: the kernel then shares its connections between both Serve
    # instances' proxies, and a request to this head's Serve can reach the other application (a full CI run
    # saw /model answered by the test session's app). The head's get free ones.
    serve_ports = {name: str(free_port()) for name in (
        "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")}
    head_env = {**os.environ, **serve_ports, **(env or {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    api = f"http://127.0.0.1:{dashboard_port}"
    try:
        with _server(command, f"{api}/api/version", folder / "ray-head.log", "ray head", env=head_env, timeout_s=90):
            yield RayHead(f"127.0.0.1:{port}", api, Path(temp_dir))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
