"""Latency and throughput of the forecast API: the composed Ray Serve app against the same bundle in one
plain FastAPI/uvicorn process (the floor); RSS per replica; killing a replica under load.

A bounded load generator (a request count *and* a time limit per phase) that talks to 127.0.0.1 only.

    python benchmarks/serve_latency.py                      # trains a default-size bundle first (~20 s)
    python benchmarks/serve_latency.py --model models/production
Writes benchmarks/results/serve_latency.md (and prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serve_latency.md"
HOST = "127.0.0.1"  # loopback only, by construction
APP = "stef-forecast"
EXOG = ["temperature", "workday"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------- inputs
def train_bundle(path: Path) -> Path:
    """A default-size model (the default 16 hidden units, 168 h -> 24 h) on 60 synthetic days; one epoch: the
    weights' quality does not matter for latency, their size does."""
    import torch

    from stef_ray.bundle import save_bundle
    from stef_ray.config import DataConfig, ModelConfig, ResidualConfig
    from stef_ray.data.loading import frame_to_hourly
    from stef_ray.data.synthetic import synthetic_load
    from stef_ray.models.hybrid import HybridModel

    torch.set_num_threads(1)
    data = frame_to_hourly(synthetic_load(hours=24 * 60), DataConfig(exog=EXOG))
    config = ModelConfig(residual=ResidualConfig(max_epochs=1, validation_days=7, window_stride_hours=4, device="cpu"))
    return save_bundle(HybridModel(config, EXOG).fit(data), path, DataConfig(exog=EXOG))


def request_body(history_hours: int = 168) -> bytes:
    from stef_ray.config import DataConfig
    from stef_ray.data.loading import frame_to_hourly
    from stef_ray.data.synthetic import synthetic_load

    frame = frame_to_hourly(synthetic_load(hours=24 * 60), DataConfig(exog=EXOG)).frame
    history, future = frame.iloc[-(history_hours + 24):-24], frame.iloc[-24:]
    rows = lambda part, load: [  # noqa: E731
        {"timestamp": ts.isoformat(), **({"load": r["load"]} if load else {}), **{n: r[n] for n in EXOG}}
        for ts, r in zip(part.index, part.to_dict("records"), strict=True)
    ]
    return json.dumps({"history": rows(history, True), "future": rows(future, False), "horizon": 24}).encode()


# ------------------------------------------------------------------------------------ load generator
@dataclass
class Phase:
    name: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (time since start, what)
    qualities: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + len(self.failures)

    def row(self) -> str:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return (f"| {self.name} | {self.concurrency} | {self.requests} | {np.percentile(lat, 50):.1f} | "
                f"{np.percentile(lat, 99):.1f} | {len(self.latencies_ms) / self.seconds:.0f} | "
                f"{100 * len(self.failures) / max(self.requests, 1):.2f} |")


async def _load(url: str, body: bytes, phase: Phase, max_requests: int, max_seconds: float,
                on_tick=None) -> Phase:
    import aiohttp

    assert url.startswith(f"http://{HOST}:"), "the load generator targets loopback only"
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)

    async def client(session) -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                async with session.post(f"{url}/forecast", data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        phase.failures.append((t0 - started, f"HTTP {response.status}: {payload[:120]!r}"))
                        continue
                    quality = json.loads(payload)["quality"]
                    phase.qualities[quality] = phase.qualities.get(quality, 0) + 1
                    phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except Exception as err:  # connection reset by a killed replica, timeout
                phase.failures.append((t0 - started, f"{type(err).__name__}: {err}"[:160]))

    connector = aiohttp.TCPConnector(limit=phase.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(phase.concurrency)]
        if on_tick is not None:
            tasks.append(asyncio.create_task(on_tick(started)))
        await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - started
    return phase


def run_phase(url, body, name, concurrency, max_requests, max_seconds, on_tick=None) -> Phase:
    asyncio.run(_load(url, body, Phase("warm-up", concurrency), 3 * concurrency, 10))
    return asyncio.run(_load(url, body, Phase(name, concurrency), max_requests, max_seconds, on_tick))


# --------------------------------------------------------------------------------------- in process
def component_timings(bundle: Path, body: bytes) -> list[str]:
    """Where one request's compute goes, in this process (1 torch thread, as in the replicas)."""
    import torch

    from stef_ray.serving.components import (
        ComponentBatch,
        batch_residuals,
        residual_log_batch,
        season_log,
        season_log_batch,
        trend_log,
        trend_log_batch,
    )
    from stef_ray.serving.service import ForecastService

    torch.set_num_threads(1)
    service = ForecastService.from_source(str(bundle))
    model = service.model
    prepared = service.parse(body)
    trend = trend_log(model.trend, prepared.frame.index)
    exog = prepared.frame[list(model.exog)]
    season = season_log(model.seasonality, exog)
    frame, n = prepared.frame, len(prepared.frame)
    residual = residual_log_batch(model, frame, trend, season, n)[0]
    frame16 = ComponentBatch.stack([prepared] * 16).flat_frame()
    trend16, season16 = np.tile(trend, 16), np.tile(season, 16)

    def timed(fn, n=200) -> float:
        for _ in range(5):
            fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1000

    def replica_work() -> None:
        # What the Residual replica does for one request: a fresh batch each time, as from the wire.
        batch = ComponentBatch.stack([service.parse(body)])
        batch_residuals(model, batch, trend_log_batch(model.trend, batch),
                        season_log_batch(model.seasonality, batch), [None])

    lines = [
        ("parse + validate (pydantic, numpy)", timed(lambda: service.parse(body))),
        ("trend", timed(lambda: trend_log(model.trend, prepared.frame.index))),
        ("seasonality (Fourier + exog design)", timed(lambda: season_log(model.seasonality, exog))),
        ("residual models, 1 request", timed(lambda: residual_log_batch(model, frame, trend, season, n))),
        ("residual models, batch of 16 (per batch)",
         timed(lambda: residual_log_batch(model, frame16, trend16, season16, n), n=50)),
        ("assemble answer", timed(lambda: service.assemble(prepared, trend, season, residual))),
        ("Residual replica, 1 request: parse + trend + seasonality + residual", timed(replica_work)),
        ("whole forecast in process", timed(lambda: service.forecast(service.parse(body)))),
    ]
    out = [f"Bundle: the shipped defaults' residual models ({model.residual_summary()}), "
           f"history {model.history_hours} h, lookback {model.lookback} h, horizon {model.horizon} h.", "",
           "| step | ms |", "|---|---|"]
    out += [f"| {name} | {ms:.2f} |" for name, ms in lines]
    return out


# ------------------------------------------------------------------------------------------- plain
def start_plain(bundle: Path, port: int) -> subprocess.Popen:
    env = os.environ | {"STEF_RAY_MODEL": str(bundle), "STEF_RAY_API_KEY": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "stef_ray.serving.plain_app:create_app",
         "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=REPO,
    )
    wait_ready(f"http://{HOST}:{port}", process)
    return process


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout_s: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


# ------------------------------------------------------------------------------------------- serve
def replica_processes() -> dict[str, list]:
    """Serve replica processes by deployment (Ray titles them ray::ServeReplica:APP:DEPLOYMENT)."""
    import psutil

    out: dict[str, list] = {}
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or [])
        prefix = f"ray::ServeReplica:{APP}:"
        if title.startswith(prefix):
            out.setdefault(title[len(prefix):].split()[0], []).append(process)
    return out


def rss_table() -> list[str]:
    lines = ["| deployment | replicas | RSS per replica (MiB) |", "|---|---|---|"]
    for name, processes in sorted(replica_processes().items()):
        rss = [p.memory_info().rss / 2**20 for p in processes]
        lines.append(f"| {name} | {len(rss)} | {', '.join(f'{r:.0f}' for r in rss)} |")
    return lines


def batch_totals() -> tuple[float, float]:
    """(sum, count) of the ingress's stef_component_batch_size histogram on Ray's metrics endpoint,
    after waiting out one export interval."""
    import re

    import ray
    import requests

    time.sleep(6)
    port = ray._private.worker.global_worker.node.metrics_export_port
    text = requests.get(f"http://{HOST}:{port}/metrics", timeout=10).text
    total = {"sum": 0.0, "count": 0.0}
    for kind in total:
        for match in re.finditer(rf"^\w*stef_component_batch_size_{kind}{{[^}}]*}} (\S+)$", text, re.MULTILINE):
            total[kind] += float(match.group(1))
    return total["sum"], total["count"]


def running_replicas(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def kill_one_replica(deployment: str) -> str:
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]]
    victim = names[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    return victim["name"]


def kill_test(url: str, body: bytes, deployment: str, seconds: float, kill_after_s: float) -> tuple[Phase, dict]:
    expected = running_replicas(deployment)
    report: dict = {"deployment": deployment, "replicas": expected}

    async def killer(started: float) -> None:
        await asyncio.sleep(kill_after_s)
        report["victim"] = await asyncio.to_thread(kill_one_replica, deployment)
        report["killed_at"] = time.perf_counter() - started
        seen_down = False
        while time.perf_counter() - started < seconds:  # recovery: back to the full replica count
            running = await asyncio.to_thread(running_replicas, deployment)
            seen_down |= running < expected
            if seen_down and running >= expected:
                report["recovered_after_s"] = time.perf_counter() - started - report["killed_at"]
                return
            await asyncio.sleep(0.25)

    phase = asyncio.run(_load(url, body, Phase(f"kill {deployment}", 16), 10**9, seconds, killer))
    after = [t for t, _ in phase.failures if t >= report.get("killed_at", 0)]
    report["error_window_s"] = (max(after) - report["killed_at"]) if after else 0.0
    return phase, report


def start_serve(bundle: Path, port: int, composition: str = "residual_first") -> None:
    from stef_ray.serving.mode import use_throughput_mode

    use_throughput_mode()  # as `stef-ray serve` does; RAY_SERVE_ENABLE_HA_PROXY=0 etc. measures Ray's defaults
    import ray

    from stef_ray.serving.serve_config import deploy_config, read_serve_config
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "STEF_RAY_API_KEY": ""}})
    config = read_serve_config(REPO / "serve_config.yaml", model_source=str(bundle), host=HOST, port=port)
    config["applications"][0]["args"]["composition"] = composition
    deploy_config(config)
    wait_ready(f"http://{HOST}:{port}")


# -------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="bundle folder (default: train a default-size one)")
    parser.add_argument("--requests", type=int, default=3000, help="request cap per phase")
    parser.add_argument("--seconds", type=float, default=20, help="time cap per phase (s)")
    parser.add_argument("--kill-seconds", type=float, default=40, help="length of each replica-kill run (s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="stef-serve-bench-"))
    bundle = args.model or train_bundle(workdir / "bundle")
    from stef_ray.bundle import load_bundle

    history_hours = load_bundle(bundle)[0].history_hours  # the weather's smoothing warm-up included
    body = request_body(history_hours)
    load_before = os.getloadavg()
    sections = [f"# Serve latency ({time.strftime('%Y-%m-%d %H:%M')})", "",
                f"Machine: {os.cpu_count()} CPUs; load average before the run {load_before[0]:.1f} "
                "(other jobs share this machine: figures are pessimistic when it is above ~0.5).",
                f"Request: {history_hours} h history + 24 h future, {len(body)} bytes of JSON; caps per phase: "
                f"{args.requests} requests / {args.seconds:g} s.", "", "## Compute per request (in process)", ""]
    sections += component_timings(bundle, body)

    phases: list[Phase] = []
    port = free_port()
    plain = start_plain(bundle, port)
    try:
        for concurrency in (1, 16):
            phases.append(run_phase(f"http://{HOST}:{port}", body, "plain uvicorn", concurrency,
                                    args.requests, args.seconds))
    finally:
        plain.send_signal(signal.SIGINT)
        plain.wait(timeout=30)

    import ray
    from ray import serve

    from stef_ray.serving.mode import THROUGHPUT_ENV

    port = free_port()
    start_serve(bundle, port)
    url = f"http://{HOST}:{port}"
    try:
        phases.append(run_phase(url, body, "Ray Serve composed", 1, args.requests, args.seconds))
        before = batch_totals()
        phases.append(run_phase(url, body, "Ray Serve composed", 16, args.requests, args.seconds))
        after = batch_totals()
        mean_batch = (after[0] - before[0]) / max(after[1] - before[1], 1)
        rss = rss_table()
        kills = [kill_test(url, body, "ForecastIngress", args.kill_seconds, 5.0),
                 kill_test(url, body, "Residual", args.kill_seconds, 5.0)]
        # The other composition, on the same machine: all three deployments called for every request.
        port = free_port()
        serve.shutdown()
        start_serve(bundle, port, composition="fan_out")
        for concurrency in (1, 16):
            phases.append(run_phase(f"http://{HOST}:{port}", body, "Ray Serve composed, fan_out", concurrency,
                                    args.requests, args.seconds))
    finally:
        serve.shutdown()
        ray.shutdown()

    by = {(p.name, p.concurrency): p for p in phases}
    p50 = lambda p: float(np.percentile(p.latencies_ms, 50))  # noqa: E731
    floor, composed = by[("plain uvicorn", 1)], by[("Ray Serve composed", 1)]
    busy = by[("Ray Serve composed", 16)]
    ratio = p50(composed) / p50(floor)
    sections += ["", "## Latency and throughput", "",
                 "| app | clients | requests | p50 ms | p99 ms | req/s | failed % |", "|---|---|---|---|---|---|---|"]
    sections += [p.row() for p in phases]
    mode = ", ".join(f"{k}={os.environ.get(k, '')}" for k in THROUGHPUT_ENV)
    sections += ["", "Composed: `composition: residual_first` (the default: one handle call per request); "
                 "fan_out calls Trend, Seasonality and Residual for every request.",
                 "", f"Composed p50 / plain p50 at 1 client: **{ratio:.1f}x**. Serve mode: {mode}. "
                 f"Requests per component call at 16 clients (stef_component_batch_size): {mean_batch:.1f}.", "",
                 "## Memory", "", *rss, "", "## Killing one replica under load (16 clients)", "",
                 "| deployment (replicas) | requests | failed | failed % | degraded answers | recovered after (s) |"
                 " error window (s) |", "|---|---|---|---|---|---|---|"]
    for phase, report in kills:
        failed = len(phase.failures)
        sections.append(
            f"| {report['deployment']} ({report['replicas']}) | {phase.requests} | {failed} | "
            f"{100 * failed / max(phase.requests, 1):.2f} | {phase.qualities.get('degraded', 0)} | "
            f"{report.get('recovered_after_s', float('nan')):.1f} | {report['error_window_s']:.1f} |")
    first_failures = sorted({what for phase, _ in kills for _, what in phase.failures})[:5]
    if first_failures:
        sections += ["", "Failures seen: " + "; ".join(first_failures)]
    kill_ok = all(100 * len(p.failures) / max(p.requests, 1) <= 1 and r.get("recovered_after_s", 99) <= 30
                  for p, r in kills)
    sections += ["", "## Acceptance (2-core CPU)", "",
                 f"- p50 <= 20 ms at 1 client: {p50(composed):.1f} ms -> {'met' if p50(composed) <= 20 else 'NOT met'}",
                 f"- >= 150 req/s at 16 clients: {len(busy.latencies_ms) / busy.seconds:.0f} -> "
                 f"{'met' if len(busy.latencies_ms) / busy.seconds >= 150 else 'NOT met'}",
                 f"- composed p50 within 3x of the floor: {ratio:.1f}x -> {'met' if ratio <= 3 else 'NOT met'}",
                 f"- kill one replica: <= 1 % failed and recovered within 30 s -> {'met' if kill_ok else 'NOT met'}",
                 f"- load average after the run: {os.getloadavg()[0]:.1f}"]
    text = "\n".join(sections) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda info: print(f"thread error: {info.exc_value}", file=sys.stderr)
    sys.exit(main())
