"""What one Ray Tune trial is: a hybrid configuration sampled from the search space and scored on the
objective's rolling-origin windows before the holdout, one window per report.

Each window is a refit of the full hybrid on the data before it and a day-ahead forecast from every 00:00
for ``objective.window_days``; the trial reports the mean daily MAPE so far after each window
(``tune.report``, with a checkpoint of the windows done), which is ASHA's resource. The windows are
ordered so the first rungs already see different seasons. Also here: the YAML search space as Ray Tune
domains, and the search algorithm. Running the search is `stef_ray.integrations.tune`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stef_ray.config import ModelConfig
from stef_ray.data.hourly import LOAD, HourlyData
from stef_ray.exceptions import InsufficientHistoryError
from stef_ray.integrations.tune_config import ObjectiveConfig, SearchSpace, TuneConfig, apply_sampled
from stef_ray.models.hybrid import HybridModel
from stef_ray.quantiles import band
from stef_ray.threads import limit_threads

logger = logging.getLogger(__name__)

PROGRESS_FILE = "windows.json"
METRIC = "mape"


# --------------------------------------------------------------------------- the objective's windows
def objective_windows(data: HourlyData, before: pd.Timestamp, objective: ObjectiveConfig) -> list[pd.Timestamp]:
    """The windows' first origins (00:00 local), spread evenly over ``span_days`` before ``before`` (the
    holdout), in the order a trial evaluates them: the most recent, then the oldest, then the ones farthest
    from those already taken, so the first rungs of ASHA already see different seasons."""
    tz = data.frame.index.tz
    last = (before - pd.Timedelta(days=objective.window_days)).tz_convert(tz).normalize()
    count = objective.windows
    step = max(objective.span_days - objective.window_days, 0) / max(count - 1, 1)
    starts = [last - pd.Timedelta(days=round(step * (count - 1 - i))) for i in range(count)]
    order = [count - 1]
    while len(order) < count:
        order.append(max((i for i in range(count) if i not in order), key=lambda i: min(abs(i - j) for j in order)))
    return [starts[i] for i in order]


def score_window(config: ModelConfig, data: HourlyData, start: pd.Timestamp, days: int) -> dict[str, Any]:
    """Fit the hybrid on the data before ``start`` and forecast from each 00:00 for ``days``: daily MAPE (%)
    and the band's coverage (P10-P90 with the default levels), as the backtest scores them."""
    frame = data.frame
    model = HybridModel(config, data.exog).fit(data.window(end=start))
    origins = [start + pd.DateOffset(days=d) for d in range(days)]
    positions = frame.index.get_indexer(origins)
    positions = positions[(positions >= model.lookback) & (positions + model.horizon <= len(frame))]
    if not len(positions):
        raise InsufficientHistoryError(f"no forecast fits in the window from {start:%Y-%m-%d}")
    out = model.to_megawatts(model.predict_components(frame, positions))
    actual = frame[LOAD].to_numpy(dtype=float)[positions[:, None] + np.arange(model.horizon)]
    scored = np.isfinite(actual).all(axis=1)
    daily = np.mean(np.abs(out["forecast"][scored] / actual[scored] - 1), axis=1) * 100
    pair = band(out)  # P10-P90 with the default levels
    low, high = (out[pair[0]], out[pair[1]]) if pair else (None, None)
    covered = (float(np.mean((actual[scored] >= low[scored]) & (actual[scored] <= high[scored])) * 100)
               if pair else float("nan"))
    return {"start": start.isoformat(), "daily_mape": daily.tolist(), "coverage": covered,
            "neural_kept": model.residual.neural_kept}


# --------------------------------------------------------------------------- search space
def param_space(space: SearchSpace) -> dict[str, Any]:
    """The YAML dimensions as Ray Tune sampling domains."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, dim in space.dimensions().items():
        if dim.type == "loguniform":
            out[name] = tune.loguniform(dim.low, dim.high)
        elif dim.type == "uniform":
            out[name] = tune.uniform(dim.low, dim.high)
        elif dim.type == "randint":
            out[name] = tune.randint(dim.low, dim.high + 1)  # Ray's upper bound is exclusive
        else:
            out[name] = tune.choice(list(dim.values))
    return out


def searcher(config: TuneConfig) -> Any:
    """The search algorithm: random (seeded), or Optuna's / HyperOpt's TPE from Ray Tune's integrations."""
    from stef_ray.exceptions import ConfigError

    search = config.search
    if search.algorithm == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=search.seed, max_concurrent=search.max_concurrent_trials or 0)
    try:
        if search.algorithm == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            algorithm = OptunaSearch(seed=search.seed)
        else:
            from ray.tune.search.hyperopt import HyperOptSearch

            algorithm = HyperOptSearch(random_state_seed=search.seed)
    except (ImportError, AssertionError):
        raise ConfigError(f"search.algorithm {search.algorithm} needs the {search.algorithm} package: "
                          f"pip install {search.algorithm} (or use search.algorithm: random)") from None
    if search.max_concurrent_trials:
        from ray.tune.search import ConcurrencyLimiter

        return ConcurrencyLimiter(algorithm, max_concurrent=search.max_concurrent_trials)
    return algorithm


# --------------------------------------------------------------------------- the trial
def run_trial(sampled: dict, data: HourlyData, base_model: dict, windows: list[str], window_days: int,
              threads: int) -> None:
    """Ray Tune function trainable: score one hybrid configuration window by window.

    On a restart (crash retry or ``--resume``) it continues after the last window of its checkpoint."""
    from ray import tune

    limit_threads(threads)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per window is noise
    config = apply_sampled(ModelConfig.model_validate(base_model), sampled)
    done: list[dict] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            done = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        logger.info("trial resumes after window %d", len(done))
    for start in windows[len(done):]:
        started = time.perf_counter()
        done.append(score_window(config, data, pd.Timestamp(start), window_days) | {"seconds": time.perf_counter() - started})
        days = np.concatenate([w["daily_mape"] for w in done])
        metrics = {
            METRIC: float(days.mean()),
            "windows": len(done),
            "window_mape": float(np.mean(done[-1]["daily_mape"])),
            "coverage": float(np.nanmean([w["coverage"] for w in done])),
            "neural_kept": sum(w["neural_kept"] for w in done),
            "window_seconds": done[-1]["seconds"],
        }
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / PROGRESS_FILE).write_text(json.dumps(done))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
