"""What a Ray Tune search produced, as the CLI report, MLflow and the tests read it: one summary per trial
(its configuration, its score window by window, why it stopped) and the search's outcome (the best
configuration's hybrid, its bundle and holdout score). Also read from Tune's results here: how many trials
an interrupted search left unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stef_ray.config import ModelConfig
from stef_ray.integrations.tune_trial import METRIC
from stef_ray.models.hybrid import HybridModel


@dataclass
class TrialSummary:
    """One trial as the report, MLflow and the tests see it."""

    trial_id: str
    hyperparameters: dict
    mape: float  # mean daily MAPE (%) over the windows it evaluated; inf when it failed
    windows: int
    stop_reason: str  # "completed", "asha", "error"
    history: pd.DataFrame  # window, window_start, window_mape, mape

    @property
    def completed(self) -> bool:
        return self.stop_reason == "completed"


@dataclass
class TuneOutcome:
    """What a search produced: the best configuration's hybrid, its bundle, its holdout score, every trial."""

    model: HybridModel
    bundle_path: Path
    holdout_metrics: dict[str, float]
    holdout_start: pd.Timestamp
    trials: list[TrialSummary]
    best_trial_id: str
    best_config: ModelConfig
    experiment_path: str
    data_window: dict
    wall_seconds: float
    windows: list[str] = field(default_factory=list)
    dashboard_url: str | None = None
    gpus_per_trial: float = 0.0
    notes: list[str] = field(default_factory=list)

    def top(self, n: int = 5) -> list[TrialSummary]:
        """The best ``n``: trials that evaluated every window first, by MAPE."""
        return sorted(self.trials, key=lambda t: (-t.windows, t.mape))[:n]

    @property
    def trial_windows(self) -> int:
        return sum(t.windows for t in self.trials)


def unfinished_trials(experiment_path: str, expected: int | None) -> int:
    """Trials not finished according to the experiment state on disk (after Ctrl-C Tune marks the trials
    it stopped TERMINATED in memory, but saves them as PENDING), including trials never created."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(experiment_path).trials
    open_trials = sum(t.status not in ("TERMINATED", "ERROR") for t in trials)
    return open_trials + max((expected or 0) - len(trials), 0)


def summarize_trials(result_grid: Any, windows: int) -> list[TrialSummary]:
    """Per-trial configuration, scores window by window and why it stopped, from the result grid."""
    statuses = {t.trial_id: t.status for t in result_grid._experiment_analysis.trials}  # only Trials have them
    out = []
    for result in result_grid:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        sampled = dict(result.config or {})
        if frame is None or frame.empty or METRIC not in frame:
            out.append(TrialSummary(trial_id, sampled, float("inf"), 0, "error",
                                    pd.DataFrame(columns=["window", "window_mape", METRIC])))
            continue
        # A restored trial may repeat windows it had reported before the interruption: keep the last report.
        history = (frame[["windows", "window_mape", METRIC]].drop_duplicates("windows", keep="last")
                   .sort_values("windows").rename(columns={"windows": "window"}).reset_index(drop=True))
        done = int(history["window"].max())
        if done >= windows:
            reason = "completed"
        elif statuses.get(trial_id) == "ERROR" or result.error is not None:
            reason = "error"
        else:
            reason = "asha"
        out.append(TrialSummary(trial_id, sampled, float(history[METRIC].iloc[-1]), done, reason, history))
    return out
