"""What one Ray Serve deployment-handle round trip costs on this machine: a FastAPI ingress that reads the
request body and calls an echo deployment 0, 1 or 2 times in a row, at one client (loopback only,
bounded: 8 s or 5,000 requests per setting). The composed forecast app pays this per component stage.

    python benchmarks/serve_hop_cost.py            # in the mode `stef-ray serve` uses (gRPC between replicas)
    RAY_SERVE_USE_GRPC_BY_DEFAULT=0 python benchmarks/serve_hop_cost.py     # the same with actor calls
    RAY_SERVE_THROUGHPUT_OPTIMIZED=0 RAY_SERVE_ENABLE_HA_PROXY=0 python benchmarks/serve_hop_cost.py

Writes results/serve_hop_cost_<transport>.md (grpc or actor).
"""


import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import psutil
import serve_latency as bench
from fastapi import FastAPI, Request

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    from stef_ray.serving.mode import use_throughput_mode

    # Before ray.serve's import: a handle made in this process (bind) takes its transport, gRPC in this mode
    # as in the app's replicas, from the variables as they are at that import.
    mode = use_throughput_mode()
    import ray
    from ray import serve
    from ray.serve._private import constants

    transport = "grpc" if constants.RAY_SERVE_USE_GRPC_BY_DEFAULT else "actor"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    app = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
    class Echo:
        async def echo(self, value):
            return value

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
    @serve.ingress(app)
    class Ingress:
        def __init__(self, echo) -> None:
            self.echo = echo
            self.hops = 0

        @app.post("/hops/{hops}")
        async def set_hops(self, hops: int) -> dict:
            self.hops = hops
            return {"hops": hops}

        @app.post("/forecast")
        async def forecast(self, request: Request) -> dict:
            await request.body()
            for _ in range(self.hops):
                await self.echo.echo.remote(np.zeros(24))
            return {"quality": "ok"}

        @app.get("/healthz")
        async def healthz(self) -> dict:
            return {"status": "ok"}

    port = bench.free_port()
    serve.start(http_options={"host": bench.HOST, "port": port})
    serve.run(Ingress.bind(Echo.bind()), name="hop-cost", route_prefix="/")
    url = f"http://{bench.HOST}:{port}"
    bench.wait_ready(url)
    body = bench.request_body()
    me = psutil.Process()

    def server_cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in me.children(recursive=True))

    import requests

    lines = [f"# Serve handle round trip ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"{os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}; Serve mode: {mode}; "
             f"handle calls by {transport}; one client.", "",
             "| handle calls per request | requests | p50 ms | p99 ms | req/s | server CPU ms per request |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    try:
        for hops in (0, 1, 2):
            for _ in range(10):  # reach both ingress replicas
                requests.post(f"{url}/hops/{hops}", timeout=10)
            bench.run_phase(url, body, "warm-up", 1, 50, 5)
            before = server_cpu()
            phase = asyncio.run(bench._load(url, body, bench.Phase(str(hops), 1), 5000, 8))
            cpu_ms = 1000 * (server_cpu() - before) / max(phase.requests, 1)
            if not phase.latencies_ms:
                raise RuntimeError(f"no answers: {phase.failures[:2]}")
            lat = np.array(phase.latencies_ms)
            lines.append(f"| {hops} | {phase.requests} | {np.percentile(lat, 50):.1f} | "
                         f"{np.percentile(lat, 99):.1f} | {len(lat) / phase.seconds:.0f} | {cpu_ms:.1f} |")
            print(lines[-1], flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    lines += ["", f"(load average after: {os.getloadavg()[0]:.1f})"]
    (RESULTS / f"serve_hop_cost_{transport}.md").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
