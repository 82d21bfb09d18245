"""The accuracy monitor's numbers: forecasts joined with actuals over one window, and their MAPE.

A pair is a forecast whose target hour lies in the window (window_start, window_end] and has an actual of
the same series; its lead hour is 1 + (target - issue_time) in hours (issue_time is the forecast origin).
MAPE is reported over all pairs, by lead hour, by model name + version (so a champion and a challenger
that share the traffic can be compared) and, for a fleet, by series. Plain pandas: no store, no network.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import pandas as pd

from stef_ray.evaluation.metrics import point_metrics

logger = logging.getLogger(__name__)

HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class ModelMape:
    model_name: str
    model_version: str
    mape: float
    pairs: int


@dataclass(frozen=True)
class SeriesMape:
    series_id: str  # "" for the points of a single series (written without the tag)
    mape: float
    pairs: int


@dataclass
class MonitorReport:
    """MAPE of one window, and what was done about it. `pairs == 0` means nothing to evaluate."""

    window_start: pd.Timestamp
    window_end: pd.Timestamp
    threshold: float
    forecast_points: int
    actual_points: int
    pairs: int
    overall_mape: float | None
    by_lead_hour: dict[int, float] = field(default_factory=dict)
    by_model: list[ModelMape] = field(default_factory=list)
    by_series: list[SeriesMape] = field(default_factory=list)  # a fleet's series, worst first
    series_alerts: list[str] = field(default_factory=list)  # series above the threshold (with min_pairs each)
    alert: bool = False
    alert_point_delivered: bool | None = None  # None: not attempted; False: kept in the sink's spool
    webhook_delivered: bool | None = None
    retrain_job_id: str | None = None
    retrain_note: str | None = None

    @property
    def nothing_to_evaluate(self) -> bool:
        return self.pairs == 0

    def window_text(self) -> str:
        return f"{self.window_start:%Y-%m-%d %H:%MZ} .. {self.window_end:%Y-%m-%d %H:%MZ}"

    def summary(self) -> str:
        """One line for logs, the webhook and the CLI."""
        if self.nothing_to_evaluate:
            if not self.forecast_points:
                why = "no stored forecast"
            elif not self.actual_points:
                why = "no stored actual"
            else:
                why = "no forecast hour has an actual yet"
            return (
                f"nothing to evaluate in {self.window_text()}: {why} "
                f"({self.forecast_points} forecast and {self.actual_points} actual points)"
            )
        state = "above" if self.overall_mape > self.threshold else "within"
        text = (
            f"forecast MAPE {self.overall_mape:.2f} % over {self.window_text()} ({self.pairs} pairs) "
            f"is {state} the {self.threshold:g} % threshold"
        )
        if self.series_alerts:
            mape = {score.series_id: score.mape for score in self.by_series}
            text += "; above it: " + ", ".join(f"{sid} {mape[sid]:.2f} %" for sid in self.series_alerts)
        return text

    def to_dict(self) -> dict:
        """JSON-ready: the webhook body. `text` lets chat webhooks (Slack, Mattermost) show it as is."""
        return {
            "text": self.summary(),
            "alert": self.alert,
            "mape": self.overall_mape,
            "threshold": self.threshold,
            "pairs": self.pairs,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "by_model": [asdict(score) for score in self.by_model],
            "by_series": [asdict(score) for score in self.by_series],
            "series_alerts": list(self.series_alerts),
            "by_lead_hour": {str(hour): mape for hour, mape in self.by_lead_hour.items()},
        }


def _mape(pairs: pd.DataFrame) -> float:
    return point_metrics(pairs["load"].to_numpy(), pairs["forecast"].to_numpy())["MAPE"]


def compute_report(
    forecasts: pd.DataFrame, actuals: pd.DataFrame, window_start: pd.Timestamp, window_end: pd.Timestamp,
    threshold: float,
) -> MonitorReport:
    """MAPE over (window_start, window_end] of forecasts joined with actuals on the series and the target
    hour (a fleet's forecasts meet their own series' actuals only)."""
    def in_window(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["timestamp"] > window_start) & (frame["timestamp"] <= window_end)]

    forecasts, actuals = in_window(forecasts), in_window(actuals)
    pairs = forecasts.merge(actuals, on=["series_id", "timestamp"], how="inner")
    zero = pairs["load"] == 0
    if zero.any():
        logger.warning("leaving out %d pair(s) whose actual load is 0 (MAPE is undefined there)", int(zero.sum()))
        pairs = pairs[~zero]
    report = MonitorReport(
        window_start, window_end, threshold, len(forecasts), len(actuals), len(pairs), overall_mape=None
    )
    if pairs.empty:
        return report
    # Lead hour 1 starts at the origin (issue_time), as in the backtest and the sink.
    pairs = pairs.assign(lead_hour=((pairs["timestamp"] - pairs["issue_time"]) / HOUR).round().astype(int) + 1)
    report.overall_mape = _mape(pairs)
    report.by_lead_hour = {int(hour): _mape(group) for hour, group in pairs.groupby("lead_hour", sort=True)}
    report.by_model = [
        ModelMape(name, version, _mape(group), len(group))
        for (name, version), group in pairs.groupby(["model_name", "model_version"], sort=True)
    ]
    if (pairs["series_id"] != "").any():
        report.by_series = sorted((SeriesMape(series_id, _mape(group), len(group))
                                   for series_id, group in pairs.groupby("series_id", sort=True)),
                                  key=lambda score: -score.mape)
    return report
