"""The hybrid Ray Tune search on GPUs (fractional GPUs per trial for the neural residual), measured without MLflow.

Loads the config and data as ``stef-ray tune`` does, calls ``stef_ray.integrations.tune.run_search``
directly (no MLflow logging or registration, so it runs where MLflow is not installed), and records what
the search did: wall time, trials, windows evaluated, why each trial stopped (ASHA or every window), the
best rolling-origin MAPE, how many trials ran at once, the GPU a trial sees and the GPU memory in use.

    python benchmarks/tune_gpu.py --config tune_configs/prod.yaml --data data/vic_elec.csv \\
        --time-budget-s 540 --out out/tune_gpu.json                          # a GPU machine
    python benchmarks/tune_gpu.py --config tune_configs/smoke.yaml --data data/vic_elec.csv \\
        --num-samples 2 --windows 1 --out /tmp/tune_gpu.json                 # a CPU machine: a rehearsal

Without a GPU in the Ray cluster the config's gpus_per_trial becomes 0 (the library's own rule) and the
same script runs on CPU. ``--time-budget-s`` hands Ray Tune a wall budget (``TuneConfig.time_budget_s``,
which run_search does not expose: this script wraps ``ray.tune.TuneConfig`` for the call); a search cut
short by it is summarised from the per-window results this script collected. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("STEF_RAY_DASHBOARD", "0")  # a benchmark needs no dashboard
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")


# --------------------------------------------------------------------------- GPU sampling
class GpuSampler:
    """nvidia-smi every ``interval`` seconds in a thread: memory in use, utilisation, GPU processes."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=10)

    @staticmethod
    def _query(args: list[str]) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10).stdout
        return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            try:
                gpus = self._query(["--query-gpu=memory.used,utilization.gpu"])
                apps = self._query(["--query-compute-apps=pid,used_memory"])
                self.samples.append({
                    "t": round(time.perf_counter() - start, 1),
                    "memory_used_mib": sum(float(g[0]) for g in gpus),
                    "utilization_pct": sum(float(g[1]) for g in gpus) / max(len(gpus), 1),
                    "processes": len(apps),
                    "process_max_mib": max((float(a[1]) for a in apps if a[1].replace(".", "").isdigit()),
                                           default=0.0),
                })
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"available": self.available, "samples": 0}
        busy = [s for s in self.samples if s["processes"] > 0] or self.samples
        return {
            "available": True,
            "samples": len(self.samples),
            "peak_memory_used_mib": max(s["memory_used_mib"] for s in self.samples),
            "peak_process_memory_mib": max(s["process_max_mib"] for s in self.samples),
            "max_gpu_processes": max(s["processes"] for s in self.samples),
            "mean_utilization_pct_while_busy": round(sum(s["utilization_pct"] for s in busy) / len(busy), 1),
        }


# --------------------------------------------------------------------------- per-window results
def make_recorder() -> Any:
    """A ray.tune.Callback that keeps every reported window and how many trials ran at once."""
    from ray.tune import Callback

    class Recorder(Callback):
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.epochs: dict[str, list[dict]] = {}
            self.configs: dict[str, dict] = {}
            self.status: dict[str, str] = {}
            self.max_running = 0
            self.first_result_s: float | None = None

        def on_trial_start(self, iteration, trials, trial, **info):
            self.configs[trial.trial_id] = dict(trial.config)
            self._count(trials)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if self.first_result_s is None:
                self.first_result_s = time.perf_counter() - self.started
            keep = ("windows", "window_mape", "mape", "neural_kept", "window_seconds")
            self.epochs.setdefault(trial.trial_id, []).append({k: result.get(k) for k in keep})
            self._count(trials)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.status[trial.trial_id] = "complete"

        def on_trial_error(self, iteration, trials, trial, **info):
            self.status[trial.trial_id] = "error"

        def _count(self, trials) -> None:
            self.max_running = max(self.max_running, sum(t.status == "RUNNING" for t in trials))

    return Recorder()


def probe_trial_gpu(gpus: float, cpus: float) -> dict[str, Any]:
    """What a task holding one trial's resources sees: CUDA_VISIBLE_DEVICES, Ray's GPU ids, torch's GPU."""
    import ray

    @ray.remote(num_gpus=gpus, num_cpus=cpus, max_calls=1)  # the worker exits: no idle CUDA context left
    def probe() -> dict[str, Any]:
        import torch

        seen = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "ray_gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                "torch_cuda_available": torch.cuda.is_available(), "torch": torch.__version__}
        if torch.cuda.is_available():
            seen["device_name"] = torch.cuda.get_device_name(0)
            seen["device_count"] = torch.cuda.device_count()
        return seen

    return ray.get(probe.remote(), timeout=120)


# --------------------------------------------------------------------------- config
def build_config(args: argparse.Namespace):
    from stef_ray.config_loading import load_config
    from stef_ray.integrations.tune_config import TuneConfig

    config = load_config(TuneConfig, args.config)
    raw = config.model_dump(mode="json")
    sched = raw["scheduler"]
    if args.windows is not None:
        raw["objective"]["windows"] = args.windows
        sched["grace_period"] = min(sched["grace_period"], args.windows)
    for key, value in (("grace_period", args.grace_period), ("reduction_factor", args.reduction_factor)):
        if value is not None:
            sched[key] = value
    if args.gpus_per_trial is not None:
        raw["resources"]["gpus_per_trial"] = args.gpus_per_trial
    if args.cpus_per_trial is not None:
        raw["resources"]["cpus_per_trial"] = args.cpus_per_trial
    raw["mlflow"]["enabled"] = False
    raw["storage_path"] = str(Path(args.storage).absolute())
    raw["bundle_out"] = str(Path(args.bundle_out).absolute())
    return TuneConfig.model_validate(raw)


def with_time_budget(budget_s: float | None):
    """Wrap ray.tune.TuneConfig so the run_search call below gets ``time_budget_s``; returns an undo."""
    from ray import tune

    original = tune.TuneConfig
    if not budget_s:
        return lambda: None

    def budgeted(*a, **k):
        k.setdefault("time_budget_s", budget_s)
        return original(*a, **k)

    tune.TuneConfig = budgeted

    def undo() -> None:
        tune.TuneConfig = original

    return undo


# --------------------------------------------------------------------------- summary
def trials_from_recorder(recorder, windows: int) -> list[dict[str, Any]]:
    """Per-trial rows from the collected windows (used when run_search did not return an outcome)."""
    rows = []
    for trial_id, config in recorder.configs.items():
        epochs = recorder.epochs.get(trial_id, [])
        last = epochs[-1] if epochs else {}
        ran = int(last.get("windows") or 0)
        if not epochs:
            reason = "error" if recorder.status.get(trial_id) == "error" else "no window reported"
        elif ran >= windows:
            reason = "completed"
        elif recorder.status.get(trial_id) == "error":
            reason = "error"
        elif recorder.status.get(trial_id) == "complete":
            reason = "asha"
        else:
            reason = "cut by time budget"
        rows.append({"trial_id": trial_id, "hyperparameters": dict(config),
                     "mape": last.get("mape", math.inf) if epochs else math.inf, "windows": ran,
                     "stop_reason": reason})
    return rows


def epoch_seconds(recorder) -> dict[str, float]:
    values = sorted(e["window_seconds"] for es in recorder.epochs.values() for e in es
                    if isinstance(e.get("window_seconds"), int | float))
    if not values:
        return {}
    return {"mean": round(sum(values) / len(values), 3), "median": round(values[len(values) // 2], 3),
            "max": round(values[-1], 3)}


def print_table(rows: list[dict[str, Any]], best_id: str | None, n: int = 8) -> None:
    top = sorted(rows, key=lambda r: (-r["windows"], r["mape"]))[:n]
    names = sorted({k for r in top for k in r["hyperparameters"]})
    header = ["trial", *names, "MAPE %", "windows", "stopped"]
    body = []
    for r in top:
        values = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in (r["hyperparameters"].get(k) for k in names)]
        loss = f"{r['mape']:.3f}" if math.isfinite(r["mape"]) else "failed"
        body.append([r["trial_id"] + (" *" if r["trial_id"] == best_id else ""), *values, loss,
                     str(r["windows"]), r["stop_reason"]])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in body:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def finite_only(value: Any) -> Any:
    """The same structure with inf/NaN as None, so the JSON is standard."""
    if isinstance(value, dict):
        return {str(k): finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_only(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("tune_configs/prod.yaml"), help="tune YAML")
    parser.add_argument("--data", type=Path, help="CSV/Parquet (default: data.path in the config)")
    parser.add_argument("--num-samples", type=int, help="trials (default: the config's)")
    parser.add_argument("--windows", type=int, help="objective.windows, ASHA's max_t (default: the config's)")
    parser.add_argument("--grace-period", type=int, help="ASHA grace period (default: the config's)")
    parser.add_argument("--reduction-factor", type=float, help="ASHA reduction factor (default: the config's)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPU share per trial (default: the config's)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the config's)")
    parser.add_argument("--time-budget-s", type=float, help="wall budget handed to Ray Tune (default: none)")
    parser.add_argument("--storage", default="ray_results", help="Ray Tune storage folder (default: %(default)s)")
    parser.add_argument("--bundle-out", default="models/tune_gpu", help="bundle of the best trial")
    parser.add_argument("--name", default="tune_gpu", help="experiment name prefix")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    args = parser.parse_args(argv)

    import ray

    from stef_ray.data import load_hourly
    from stef_ray.integrations.tune import ensure_ray, resolve_gpus, run_search

    started = time.perf_counter()
    config = build_config(args)
    data = load_hourly(config.data, args.data)
    num_samples = args.num_samples or config.search.num_samples
    sched = config.scheduler
    result: dict[str, Any] = {
        "settings": {
            "config": str(args.config), "data": str(args.data or config.data.path), "num_samples": num_samples,
            "scheduler": sched.model_dump(mode="json"), "resources": config.resources.model_dump(mode="json"),
            "objective": config.objective.model_dump(mode="json"), "time_budget_s": args.time_budget_s,
            "space": {k: v.model_dump(mode="json") for k, v in config.search.space.dimensions().items()},
        },
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "ray": ray.__version__},
    }
    ensure_ray(args.address)  # run_search finds this Ray running and uses it
    result["ray_init_s"] = round(time.perf_counter() - started, 1)
    result["cluster_resources"] = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
    gpus, _ = resolve_gpus(config.resources.gpus_per_trial)
    if gpus > 0:
        try:
            result["trial_gpu_probe"] = probe_trial_gpu(gpus, config.resources.cpus_per_trial)
        except Exception as err:  # the search itself says more if the GPU is not usable
            result["trial_gpu_probe"] = {"error": f"{type(err).__name__}: {err}"[:500]}
        print(f"a trial's resources see: {result['trial_gpu_probe']}", flush=True)

    recorder = make_recorder()
    undo = with_time_budget(args.time_budget_s)
    outcome, error = None, None
    search_started = time.perf_counter()
    try:
        with GpuSampler() as sampler:
            outcome = run_search(config, data, name=args.name, num_samples=num_samples, address=args.address,
                                 bundle_out=config.bundle_out, callbacks=[recorder])
    except Exception as err:  # e.g. SearchInterruptedError when the time budget ran out: keep what was seen
        error = f"{type(err).__name__}: {err}"[:2000]
        print(f"search ended early: {error}", flush=True)
    finally:
        undo()
    search_wall = time.perf_counter() - search_started

    if outcome is not None:
        rows = [{"trial_id": t.trial_id, "hyperparameters": t.hyperparameters, "mape": t.mape,
                 "windows": t.windows, "stop_reason": t.stop_reason} for t in outcome.trials]
        best_id = outcome.best_trial_id
        result |= {
            "completed": True, "gpus_per_trial": outcome.gpus_per_trial, "notes": outcome.notes,
            "run_search_wall_s": round(outcome.wall_seconds, 1),
            "holdout": outcome.holdout_metrics | {"start": outcome.data_window["holdout_start"]},
            "bundle": str(outcome.bundle_path), "experiment_path": outcome.experiment_path,
        }
    else:
        rows = trials_from_recorder(recorder, config.objective.windows)
        finite = [r for r in rows if math.isfinite(r["mape"]) and r["stop_reason"] == "completed"]
        best_id = min(finite, key=lambda r: r["mape"])["trial_id"] if finite else None
        result |= {"completed": False, "error": error, "gpus_per_trial": gpus}
    finite = [r for r in rows if math.isfinite(r["mape"]) and r["stop_reason"] == "completed"]
    best = min(finite, key=lambda r: r["mape"]) if finite else None
    result |= {
        "search_wall_s": round(search_wall, 1),
        "total_wall_s": round(time.perf_counter() - started, 1),
        "first_window_reported_after_s": round(recorder.first_result_s, 1) if recorder.first_result_s else None,
        "trials": len(rows),
        "trials_never_started": max(num_samples - len(rows), 0),
        "trials_with_results": len(finite),
        "trial_windows": sum(r["windows"] for r in rows),
        "stop_reasons": dict(Counter(r["stop_reason"] for r in rows)),
        "max_concurrent_trials": recorder.max_running,
        "window_seconds_in_trial": epoch_seconds(recorder),
        "best_trial_id": best_id,
        "best_mape": best["mape"] if best else None,
        "best_hyperparameters": best["hyperparameters"] if best else None,
        "gpu": sampler.summary(),
        "trial_rows": sorted(rows, key=lambda r: (-r["windows"], r["mape"])),
    }
    print(f"\n{result['trials']} trials ({result['stop_reasons']}), {result['trial_windows']} windows, "
          f"search {search_wall:.0f} s (total {result['total_wall_s']:.0f} s), at most "
          f"{recorder.max_running} trials at once, {result['gpus_per_trial']:g} GPU per trial")
    if best:
        print(f"best rolling-origin MAPE {best['mape']:.3f} % (trial {best_id})")
    if "holdout" in result:
        h = result["holdout"]
        print(f"holdout from {h['start']} ({int(h['origins'])} day-ahead forecasts): MAPE {h['MAPE']:.3f} %, "
              f"MAE {h['MAE']:.1f} MW, RMSE {h['RMSE']:.1f} MW")
    print(f"window seconds in a trial: {result['window_seconds_in_trial']}; GPU: {result['gpu']}\n")
    print_table(rows, best_id)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite_only(result), indent=2, default=str))
    print(f"\nwrote {args.out}")
    return 0 if outcome is not None else 3


if __name__ == "__main__":
    sys.exit(main())
