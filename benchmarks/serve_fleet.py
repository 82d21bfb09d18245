"""Many series in one Serve application (serve_fleet_config.yaml): cold and warm latency per series, and
throughput with 16 clients over more series than the replicas keep loaded, so that models are loaded and
evicted while the load runs.

    python benchmarks/serve_fleet.py                    # 100 series, 2 forecaster replicas x 32 models
    python benchmarks/serve_fleet.py --series 200 --seconds 60

The series are synthetic (stef_ray.data.synthetic, each its own level, shape and seed, 120 days), fitted
light (trend, Fourier, per-hour ridges; no trees, no neural residual), each saved as its own bundle folder.
The app runs on a local Ray with the machine's CPUs, as `stef-ray serve --config serve_fleet_config.yaml`
runs it. Writes benchmarks/results/serve_fleet.md (and prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serve_fleet.md"
LIGHT = {"seasonality": {"yearly_order": 0},
         "residual": {"enabled": False, "boosted_weight": 0.0, "linear_robust_iterations": 0, "validation_blocks": 2,
                      "validation_days": 7}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_bundles(folder: Path, count: int) -> dict[str, bytes]:
    """A bundle per series; returns each series' request body (its last 168 h)."""
    from stef_ray.bundle import save_bundle
    from stef_ray.config import DataConfig, ModelConfig
    from stef_ray.data.loading import frame_to_hourly
    from stef_ray.data.synthetic import synthetic_load
    from stef_ray.models.hybrid import HybridModel

    bodies = {}
    rng = np.random.default_rng(0)
    for i in range(count):
        series = f"S{i:04d}"
        frame = synthetic_load(hours=24 * 120, seed=i, base_mw=float(rng.uniform(500, 50_000)),
                               daily_amplitude=float(rng.uniform(0.05, 0.2)))
        data = frame_to_hourly(frame, DataConfig())
        model = HybridModel(ModelConfig.model_validate(LIGHT), data.exog).fit(data)
        save_bundle(model, folder / series, DataConfig())
        last = data.frame.iloc[-model.history_hours:]
        bodies[series] = json.dumps({"history": [{"timestamp": t.isoformat(), "load": float(v)}
                                                 for t, v in last["load"].items()], "horizon": 24}).encode()
    return bodies


def timed_post(url: str, body: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    answer = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    return (time.perf_counter() - started) * 1000, answer.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2, help="FleetForecaster replicas (fixed)")
    parser.add_argument("--models-per-replica", type=int, default=32)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the throughput phase")
    args = parser.parse_args()

    from stef_ray.serving.mode import use_throughput_mode

    use_throughput_mode()
    import ray
    import yaml
    from ray import serve

    from stef_ray.serving.serve_config import deploy_config

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        bodies = write_bundles(Path(folder), args.series)
        fit_s = time.perf_counter() - started
        print(f"{args.series} bundles in {fit_s:.0f} s", flush=True)
        port = free_port()
        config = yaml.safe_load((REPO / "serve_fleet_config.yaml").read_text())
        config["http_options"]["port"] = port
        app = config["applications"][0]
        app["args"] |= {"model_source": str(Path(folder) / "{series_id}"), "models_per_replica": args.models_per_replica}
        for deployment in app["deployments"]:
            if deployment["name"] == "FleetForecaster":
                deployment.pop("autoscaling_config", None)
                deployment["num_replicas"] = args.replicas
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        deploy_config(config)
        url = f"http://127.0.0.1:{port}/series/{{}}/forecast"
        series = list(bodies)
        # Cold: each series' first request (its bundle is read and loaded); warm: the same again at once.
        cold, warm = [], []
        for name in series[:20]:
            cold.append(timed_post(url.format(name), bodies[name]))
            warm.append(timed_post(url.format(name), bodies[name]))
        # Throughput: clients pick series at random among all; more series than the replicas keep.
        latencies: list[float] = []
        failures: list[int] = []
        stop = time.perf_counter() + args.seconds
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < stop:
                name = rng.choice(series)
                ms, status = timed_post(url.format(name), bodies[name])
                with lock:
                    latencies.append(ms)
                    if status != 200:
                        failures.append(status)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        async def replica_loads() -> dict[str, int]:
            handle = serve.get_deployment_handle("FleetForecaster", app_name=app["name"])
            per_replica: dict[str, int] = {}
            for _ in range(50 * args.replicas):  # calls land on replicas at random: ask until each answered
                stats = await handle.stats.remote()
                per_replica[stats["replica"]] = sum(stats["loads"].values())
                if len(per_replica) == args.replicas:
                    break
            return per_replica

        loads = sum(asyncio.run(replica_loads()).values())
        ray.shutdown()
    ok = [status for _, status in cold + warm if status == 200]
    rows = {
        "series": args.series, "forecaster replicas x models kept": f"{args.replicas} x {args.models_per_replica}",
        "cold p50 ms (first request of a series)": np.median([ms for ms, _ in cold]),
        "warm p50 ms (the same series again)": np.median([ms for ms, _ in warm]),
        f"throughput, {args.clients} clients, req/s": len(latencies) / wall,
        "p50 / p99 ms under load": f"{np.percentile(latencies, 50):.0f} / {np.percentile(latencies, 99):.0f}",
        "requests under load": len(latencies), "failed": len(failures) + (len(cold) + len(warm) - len(ok)),
        "model loads in all (each series once = no eviction)": loads,
    }
    lines = [f"\n### {args.series} series, {args.replicas} forecaster replicas (measured {date.today()}, "
             f"{os.cpu_count()} CPUs, bundles fitted in {fit_s:.0f} s)\n", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v:,.1f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows.items()]
    RESULTS.parent.mkdir(exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text("# Many series in one Serve application (`python benchmarks/serve_fleet.py`)\n")
    with open(RESULTS, "a") as handle_:
        handle_.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
