"""A busy machine should cost its fair share: `stef-ray train` and `stef-ray backtest` on vic-elec and
`stef-ray serve` under 1 and 16 clients, alone and beside one other CPU-heavy job, with the thread pools
sized (the default) and left to the libraries (`STEF_RAY_THREADS=off`, as before the sizing). Writes
benchmarks/results/busy_machine.md.

    python benchmarks/busy_machine.py                  # about 15-25 minutes on 2 cores
    python benchmarks/busy_machine.py --timeout 300    # give up on a run after 300 s (reported as such)

Two kinds of competing job, as a shared machine has them: a numpy process multiplying matrices (its BLAS
at its default threads), and another `stef-ray train` of vic-elec over and over with the libraries'
defaults (`STEF_RAY_THREADS=off`: what any job built on numpy, torch and scikit-learn does). Each run is a
fresh `python -m stef_ray` process with a clean thread environment (no OMP_NUM_THREADS or
OPENBLAS_NUM_THREADS of the caller's).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "busy_machine.md"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "STEF_RAY_THREADS")
NUMPY_JOB = """
import numpy as np
a = np.random.default_rng(0).standard_normal((600, 600))
while True:
    a = np.tanh(a @ a.T / 600)
"""
TRAIN_JOB = """
import subprocess, sys
while True:
    subprocess.run([sys.executable, "-m", "stef_ray", "train", "--config", sys.argv[1], "--data", sys.argv[2],
                    "--out", sys.argv[3]], capture_output=True)
"""
LOADS = ("alone", "beside a numpy job", "beside another stef-ray train")


def start_load(load: str, folder: Path) -> subprocess.Popen | None:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | {"STEF_RAY_THREADS": "off"}
    if load == "alone":
        return None
    if load == "beside a numpy job":
        return subprocess.Popen([sys.executable, "-c", NUMPY_JOB], env=env, start_new_session=True)
    return subprocess.Popen([sys.executable, "-c", TRAIN_JOB, str(ROOT / "configs" / "vic_elec.yaml"),
                             str(folder / "vic_elec.csv"), str(folder / "competitor")], env=env,
                            start_new_session=True)


def stop_load(process: subprocess.Popen | None) -> None:
    import signal

    if process is not None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def commands(folder: Path) -> dict[str, list[str]]:
    data = folder / "vic_elec.csv"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "stef_ray", "data", "vic-elec", "--out", str(data)], check=True,
                       capture_output=True)
    config = str(ROOT / "configs" / "vic_elec.yaml")
    return {
        "train (configs/vic_elec.yaml)": [sys.executable, "-m", "stef_ray", "train", "--config", config,
                                          "--data", str(data), "--out", str(folder / "bundle")],
        "backtest (7 days, one refit)": [sys.executable, "-m", "stef_ray", "backtest", "--config", config,
                                               "--data", str(data), "--start", "2014-12-04", "--days", "7",
                                               "--refit-every", "7", "--out", str(folder / "backtest")],
    }


def timed(command: list[str], threads: str, timeout_s: float) -> tuple[float | None, float]:
    """Wall seconds (None past the timeout) and CPU seconds of the command's process tree."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | {"STEF_RAY_THREADS": threads}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        subprocess.run(command, check=True, capture_output=True, env=env, timeout=timeout_s)
        wall = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        wall = None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def serve_phases(bundle: Path, threads: str, seconds: float) -> dict[str, tuple[float, float]]:
    """`stef-ray serve --model BUNDLE` as a user starts it; p50 ms and req/s at 1 and at 16 clients."""
    import signal

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve_latency import free_port, request_body, run_phase, wait_ready

    from stef_ray.bundle import load_bundle

    body = request_body(load_bundle(bundle)[0].history_hours)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | {
        "STEF_RAY_THREADS": threads, "STEF_RAY_API_KEY": ""}
    server = subprocess.Popen([sys.executable, "-m", "stef_ray", "serve", "--model", str(bundle), "--host",
                               "127.0.0.1", "--port", str(port), "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, timeout_s=180)
        out = {}
        for clients in (1, 16):
            phase = run_phase(f"http://127.0.0.1:{port}", body, "serve", clients, 100_000, seconds)
            out[f"{clients} client{'s' if clients > 1 else ''}"] = (
                float(np.percentile(phase.latencies_ms, 50)), len(phase.latencies_ms) / phase.seconds)
        return out
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a run is given up")
    parser.add_argument("--serve-seconds", type=float, default=20, help="seconds per Serve load phase")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "backtest", "serve"])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for what, command in commands(folder).items():
            if what.split()[0] in args.skip:
                continue
            for load in LOADS:
                competitor = start_load(load, folder)
                try:
                    for threads in ("auto", "off"):
                        wall, cpu = timed(command, threads, args.timeout)
                        shown = f"{wall:,.0f}" if wall is not None else f"> {args.timeout:,.0f} (stopped)"
                        print(f"{what:36s} {load:26s} threads={threads:4s} wall {shown} s, cpu {cpu:,.0f} s",
                              flush=True)
                        rows.append((what, load, threads, wall, cpu))
                finally:
                    stop_load(competitor)
        serving = []
        if "serve" not in args.skip:
            bundle = folder / "bundle"
            if not bundle.exists():
                subprocess.run(commands(folder)["train (configs/vic_elec.yaml)"], check=True, capture_output=True)
            for load in LOADS:
                competitor = start_load(load, folder)
                try:
                    for threads in ("auto", "off"):
                        for clients, (p50, rate) in serve_phases(bundle, threads, args.serve_seconds).items():
                            print(f"serve {clients:10s} {load:26s} threads={threads:4s} p50 {p50:.1f} ms, "
                                  f"{rate:.0f} req/s", flush=True)
                            serving.append((clients, load, threads, p50, rate))
                finally:
                    stop_load(competitor)
    lines = [
        f"## A busy machine (`python benchmarks/busy_machine.py`, {date.today()})", "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs. Competing jobs: a numpy process "
        "multiplying matrices, or another `stef-ray train` of vic-elec over and over with the libraries' "
        "default threads. `auto` is the default (one OpenMP and one BLAS thread per process); `off` leaves "
        "the libraries' defaults (a thread per core), as before.", "",
        "| work | machine | STEF_RAY_THREADS | wall s | CPU s | wall against alone |",
        "|---|---|---|---:|---:|---:|",
    ]
    alone = {(w, t): wall for w, load, t, wall, _ in rows if load == "alone"}
    for what, load, threads, wall, cpu in rows:
        base = alone.get((what, threads))
        ratio = f"{wall / base:.1f}×" if wall and base else ("—" if load == "alone" else "n/a")
        shown = f"{wall:,.0f}" if wall is not None else f"> {args.timeout:,.0f} (stopped)"
        lines.append(f"| {what} | {load} | {threads} | {shown} | {cpu:,.0f} | {ratio if load != 'alone' else '—'} |")
    if serving:
        lines += ["", "`stef-ray serve --model BUNDLE --no-dashboard` (the vic-elec bundle trained above), "
                  f"{args.serve_seconds:g} s per phase:", "",
                  "| clients | machine | STEF_RAY_THREADS | p50 ms | req/s |", "|---|---|---|---:|---:|"]
        lines += [f"| {c} | {load} | {t} | {p50:.1f} | {rate:.0f} |" for c, load, t, p50, rate in serving]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
