"""How fitting many series scales: N synthetic series of one year each, built from the real PJM series'
shapes, fitted with a light configuration (trend, Fourier, per-hour ridges without the robust reweighting;
no trees, no neural residual) by `stef_ray.integrations.fleet_ray.run_fleet_train` on a local Ray, against a
plain loop in one process.

    python benchmarks/fleet_scale.py --series 10 100            # needs ../shared/data (the PJM series)
    python benchmarks/fleet_scale.py --series 1000 --no-loop    # the Ray run only

Each synthetic series is one real series' 2016 (PJM East or a zone, in turn), its level scaled by a random
factor, shifted by a random whole number of weeks within the year (wrapping round), with 2 % AR(1) noise
in log space: real daily, weekly and yearly shapes, different series. Writes a dated table to
benchmarks/results/fleet_scale.md: series per minute, the peak memory of the driver and all Ray workers
together, and the Ray run's time per series against the loop's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SHARED = ROOT.parent / "shared" / "data"
LIGHT_MODEL = {"seasonality": {"daily_order": 6, "yearly_order": 0},
               "residual": {"enabled": False, "boosted_weight": 0.0, "validation_blocks": 2,
                            "linear_robust_iterations": 0}}


def base_shapes() -> list[np.ndarray]:
    """The 2016 hourly load (8,784 h) of each of the nine PJM series, each over its own mean."""
    from stef_ray.data import load_hourly
    from stef_ray.fleet import load_fleet

    fleet = load_fleet(ROOT / "configs" / "pjm_fleet.yaml")
    shapes = []
    for series_id in fleet.series:
        config = fleet.data_config(series_id)
        folder = SHARED / ("pjme" if series_id == "PJME" else "pjm_regions")
        frame = load_hourly(config, folder / Path(config.path).name).frame
        year = frame.loc["2016-01-01":"2016-12-31", "load"].interpolate(limit_direction="both").to_numpy()
        shapes.append(year / year.mean())
    return shapes


def write_series(folder: Path, count: int, seed: int = 0) -> dict:
    """``count`` Parquet files and the fleet file's series section."""
    rng = np.random.default_rng(seed)
    shapes = base_shapes()
    index = pd.date_range("2016-01-01", periods=len(shapes[0]), freq="h", tz="US/Eastern")
    series = {}
    for i in range(count):
        shape = np.roll(shapes[i % len(shapes)], 168 * int(rng.integers(0, 52)))
        noise = np.zeros(len(shape))
        shocks = rng.normal(0, 0.02 * np.sqrt(1 - 0.9**2), len(shape))
        for t in range(1, len(shape)):
            noise[t] = 0.9 * noise[t - 1] + shocks[t]
        load = shape * float(rng.lognormal(np.log(5000), 0.8)) * np.exp(noise)
        name = f"s{i:04d}"
        pd.DataFrame({"timestamp": index, "load": load}).to_parquet(folder / f"{name}.parquet", index=False)
        series[name] = {"path": f"{name}.parquet"}
    return series


class PeakMemory:
    """The largest resident memory of this process and all its children (Ray's raylet, workers), sampled."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--no-loop", action="store_true", help="skip the plain loop")
    args = parser.parse_args()
    os.environ.setdefault("STEF_RAY_DASHBOARD", "0")
    import ray

    from stef_ray.fleet import load_fleet, train_series
    from stef_ray.integrations.fleet_ray import run_fleet_train
    from stef_ray.threads import limit_threads

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    rows = []
    for count in args.series:
        folder = Path(tempfile.mkdtemp(prefix=f"fleet{count}_"))
        (folder / "fleet.yaml").write_text(yaml.safe_dump({
            "data": {"holidays": "NERC"}, "model": LIGHT_MODEL, "series": write_series(folder, count),
            "resources": {"cpus_per_series": 1, "retries": 1}}))
        fleet = load_fleet(folder / "fleet.yaml")
        with PeakMemory() as memory:
            run = run_fleet_train(fleet, str(folder / "ray_models"))
        failed = len(run.failed)
        in_task = sum(o.seconds for o in run.outcomes)
        row = {"series": count, "how": "Ray, 1 CPU per task", "failed": failed, "wall_s": run.wall_seconds,
               "series_per_min": count / run.wall_seconds * 60, "s_per_series_in_task": in_task / count,
               "peak_rss_mib": memory.peak / 2**20}
        print(row, flush=True)
        rows.append(row)
        if not args.no_loop:
            limit_threads(os.cpu_count() or 1)
            started = time.perf_counter()
            with PeakMemory() as memory:
                outcomes = [train_series(sid, fleet.data_config(sid), fleet.model, str(folder / "loop_models"))
                            for sid in fleet.series]
            wall = time.perf_counter() - started
            row = {"series": count, "how": f"plain loop, {os.cpu_count()} threads", "failed":
                   sum(o.status != "ok" for o in outcomes), "wall_s": wall, "series_per_min": count / wall * 60,
                   "s_per_series_in_task": sum(o.seconds for o in outcomes) / count,
                   "peak_rss_mib": memory.peak / 2**20}
            print(row, flush=True)
            rows.append(row)
        shutil.rmtree(folder, ignore_errors=True)
    table = pd.DataFrame(rows)
    lines = [f"\n### {', '.join(map(str, args.series))} series (measured {date.today()}, {os.cpu_count()} CPUs)\n",
             "| series | how | failed | wall s | series/min | s per series (inside the task) | peak RSS MiB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['series']} | {r['how']} | {r['failed']} | {r['wall_s']:.0f} | {r['series_per_min']:.1f} | "
                     f"{r['s_per_series_in_task']:.2f} | {r['peak_rss_mib']:.0f} |")
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "fleet_scale.md", "a") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
