"""Ray Serve's high-throughput mode, as `stef-ray serve`, the tests and the benchmarks run the app.

HAProxy in front of the ingress replicas instead of the Python proxy actor, and gRPC instead of actor calls
between deployments (documented for Ray >= 2.55). Serve reads these variables once, when ``ray.serve`` is
first imported in a process, so set them before that import and before Ray starts (its processes inherit
them). This module imports nothing from Ray for that reason. On 2 cores the mode cuts the server's CPU per
request about in half (docs/serving.md, benchmarks/serve_latency.py).
"""

from __future__ import annotations

import os

THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Serve's own HAProxy needs no 30 s drain; Ctrl-C used to wait that long.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "10",
    # The control plane's background work competes with requests for a small machine's cores: the
    # controller's loop at 2 Hz instead of 10 and the replicas' metric export at 1 Hz instead of 10 cut
    # the controller's CPU about 3x and the p50 at one client by about 10 % on 2 cores (measured
    # 2026-11-27). Prometheus scrapes every 10-15 s, and a dead replica is found by its health check
    # (every 10 s), so neither slows what users see.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # A forecast (and an actuals upload) is idempotent: HAProxy may send it again to another ingress replica
    # when the first one died under it or answered 5xx (HAProxy's "all-retryable-errors"), instead of
    # failing the client. It can resend only what it buffered: 64 kB holds a 671-hour request.
    "RAY_SERVE_HAPROXY_RETRY_ON": "all-retryable-errors",
    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "65536",
    # Ray 2.57-2.59 default to 20,000 connections, for which HAProxy needs an open-file limit of ~50,000 and
    # refuses to start under a container's usual 20,000 (and each connection may hold 2 x the buffer above).
    # Ray 2.60's default.
    "RAY_SERVE_HAPROXY_MAXCONN": "4096",
}


def use_throughput_mode(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``THROUGHPUT_ENV`` in ``environ`` (default ``os.environ``) where not set already (``=0`` opts
    out); returns the values in effect. Call before importing ``ray.serve`` and before Ray starts."""
    environ = os.environ if environ is None else environ
    for name, value in THROUGHPUT_ENV.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in THROUGHPUT_ENV}
