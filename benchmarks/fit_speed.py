"""Trend + Fourier fit time on ~80k hourly rows (the seed took about a minute), and `stef-ray forecast`
start-to-CSV time from a saved bundle. Writes benchmarks/results/fit_speed.md.

    python benchmarks/fit_speed.py
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from stef_ray.config import DataConfig, ModelConfig, ResidualConfig, SeasonalityConfig
from stef_ray.data import frame_to_hourly
from stef_ray.data.synthetic import synthetic_load
from stef_ray.models.hybrid import HybridModel

RESULTS = Path(__file__).parent / "results" / "fit_speed.md"
HOURS = 80_000


def time_base_fit(data, seasonality: SeasonalityConfig, repeats: int = 5) -> float:
    timings = []
    for _ in range(repeats):
        model = HybridModel(ModelConfig(seasonality=seasonality), data.exog)
        started = time.perf_counter()
        model.fit_base(data)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings))


def time_forecast_cli(data_frame) -> float:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        csv = folder / "data.csv"
        data_frame.iloc[-24 * 120 :].assign(
            timestamp=lambda f: f["timestamp"].map(lambda t: t.isoformat())
        ).to_csv(csv, index=False)
        data = frame_to_hourly(data_frame.iloc[-24 * 120 :], DataConfig(exog=["temperature", "workday"]))
        config = ModelConfig(residual=ResidualConfig(max_epochs=1, device="cpu"))
        from stef_ray.bundle import save_bundle

        save_bundle(HybridModel(config, data.exog).fit(data), folder / "bundle", DataConfig(exog=data.exog))
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stef_ray", "forecast", "--model", str(folder / "bundle"),
                            "--data", str(csv), "--out", str(folder / "out")], check=True, capture_output=True)
            timings.append(time.perf_counter() - started)
    return float(np.median(timings))


def main() -> None:
    frame = synthetic_load(hours=HOURS, start="2010-01-01", seed=0)
    data = frame_to_hourly(frame, DataConfig(exog=["temperature", "workday"]))
    fixed = time_base_fit(data, SeasonalityConfig())
    no_exog = time_base_fit(frame_to_hourly(frame, DataConfig()), SeasonalityConfig())
    grid = time_base_fit(data, SeasonalityConfig(grid_search=True), repeats=1)
    forecast = time_forecast_cli(frame)
    rows = [
        ("trend + Fourier (3, 7, 3) + exogenous, fixed orders", f"{fixed:.2f} s"),
        ("trend + Fourier (3, 7, 3), no exogenous", f"{no_exog:.2f} s"),
        ("trend + Fourier with grid search (48 combinations)", f"{grid:.2f} s"),
        ("`stef-ray forecast` from a bundle, start to CSV and PNG", f"{forecast:.2f} s"),
    ]
    text = [
        f"Measured {date.today()} on {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, {HOURS:,} synthetic hourly rows (median of runs).",
        "",
        "| what | time |",
        "|---|---|",
        *[f"| {what} | {value} |" for what, value in rows],
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
