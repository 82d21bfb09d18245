"""Acceptance run of the InfluxDB sink: 100 forecasts of 24 h, the server stopped for 30 s in the middle.

Starts Debian's victoria-metrics on loopback (as the tests do), submits one forecast every
`--interval` seconds, stops the server after forecast `--stop-after` for `--outage` seconds, then
checks that all 2,400 points arrived exactly once, and prints submit latency and catch-up time.

    .venv/bin/python benchmarks/influx_outage.py [--outage 30] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "integrations")]

from conftest import VictoriaMetrics, free_port  # noqa: E402  (the tests' server harness)

from stef_ray.integrations.influx import InfluxSettings, InfluxSink  # noqa: E402
from stef_ray.integrations.influx_points import MEASUREMENT_FORECAST  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forecasts", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between forecasts")
    parser.add_argument("--stop-after", type=int, default=20, help="stop the server after this forecast")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the server stays down")
    args = parser.parse_args()
    binary = shutil.which("victoria-metrics")
    if binary is None:
        print("victoria-metrics is not installed (scripts/install_services.sh)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="influx-outage-"))
    server = VictoriaMetrics(binary, work / "storage", free_port(), work / "server.log")
    server.start()
    settings = InfluxSettings(url=server.url, token="bench", spool_dir=work / "spool", retry_max_s=2.0)
    origin = pd.Timestamp("2014-01-01", tz="Australia/Melbourne")
    rng = np.random.default_rng(0)
    latencies_ms: list[float] = []
    outage_latencies_ms: list[float] = []
    restart = None
    submitted_lines = 0
    backlog: dict[str, float] = {}

    def bring_back(sink: InfluxSink) -> None:
        server.start()
        backlog["restarted_at"] = time.monotonic()
        backlog["lines"] = submitted_lines
        backlog["spooled"] = sink.spool.pending_lines()
        while sink.delivered_lines < backlog["lines"]:
            time.sleep(0.01)
        backlog["caught_up_s"] = time.monotonic() - backlog["restarted_at"]

    try:
        with InfluxSink(settings) as sink:
            for index in range(args.forecasts):
                issue_time = origin + pd.Timedelta(hours=index)
                hours = pd.date_range(issue_time + pd.Timedelta(hours=1), periods=24, freq="h")
                values = 4500 + rng.normal(0, 100, 24)
                frame = pd.DataFrame(
                    {"timestamp": hours, "forecast": values, "trend": 4500.0, "seasonality": values - 4500, "residual": 0.0}
                )
                started = time.perf_counter()
                submitted_lines += sink.submit_forecast(frame, model_name="bench", model_version="1", issue_time=issue_time)
                elapsed_ms = (time.perf_counter() - started) * 1000
                (outage_latencies_ms if restart is not None and restart.is_alive() else latencies_ms).append(elapsed_ms)
                if index == args.stop_after:
                    server.stop()
                    restart = threading.Timer(args.outage, bring_back, args=(sink,))
                    restart.start()
                    print(f"server stopped after forecast {index}")
                time.sleep(args.interval)
            restart.join()
            delivered = sink.flush(timeout_s=60)
            failed = sink.failed_attempts
        counts = Counter()
        for series in server.export(f"{MEASUREMENT_FORECAST}_forecast"):
            for ts in series["timestamps"]:
                counts[(series["metric"]["issue_time"], ts)] += 1
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    total = sum(counts.values())
    duplicated = sum(count - 1 for count in counts.values() if count > 1)
    print(
        f"outage {args.outage:.0f} s: {backlog['spooled']} points spooled at restart, delivered "
        f"{backlog['caught_up_s']:.2f} s after it; final flush {'complete' if delivered else 'INCOMPLETE'}; "
        f"failed delivery rounds: {failed}"
    )
    print(f"submit latency (server up):   p50 {np.median(latencies_ms):.2f} ms, max {max(latencies_ms):.2f} ms")
    if outage_latencies_ms:
        print(f"submit latency (server down): p50 {np.median(outage_latencies_ms):.2f} ms, max {max(outage_latencies_ms):.2f} ms")
    expected = args.forecasts * 24
    print(f"points stored: {total} of {expected}, distinct {len(counts)}, duplicated {duplicated}")
    return 0 if total == expected and len(counts) == expected and duplicated == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
