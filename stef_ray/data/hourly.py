"""The one in-memory shape of load data: a regular hourly grid, timezone-aware, plus what was repaired."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

LOAD = "load"  # the target column's name inside the package, whatever the file called it


@dataclass
class DataReport:
    """What validation found and did; printed by the CLI, logged by the adapters."""

    rows_read: int = 0
    rows_out: int = 0
    source_step_minutes: float = 60.0
    interpolated: list[tuple[pd.Timestamp, int]] = field(default_factory=list)
    long_gaps: list[tuple[pd.Timestamp, int]] = field(default_factory=list)
    flatlines: list[tuple[pd.Timestamp, int]] = field(default_factory=list)
    outliers: list[tuple[pd.Timestamp, float, float]] = field(default_factory=list)  # (hour, value, week's median)
    dropped_nonexistent: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.rows_read} rows read -> {self.rows_out} hourly rows"]
        if self.source_step_minutes < 60:
            out.append(f"aggregated {self.source_step_minutes:g}-minute data to hourly means")
        if self.interpolated:
            hours = sum(n for _, n in self.interpolated)
            first = ", ".join(f"{ts:%Y-%m-%d %H:%M} ({n} h)" for ts, n in self.interpolated[:3])
            out.append(f"interpolated {len(self.interpolated)} short gaps, {hours} h in all: {first}"
                       + (" ..." if len(self.interpolated) > 3 else ""))
        for start, hours in self.long_gaps[:5]:
            out.append(f"gap of {hours} h from {start:%Y-%m-%d %H:%M} kept out of training windows")
        if len(self.long_gaps) > 5:
            out.append(f"... and {len(self.long_gaps) - 5} more long gaps")
        for start, hours in self.flatlines[:5]:
            out.append(f"flat-lined load for {hours} h from {start:%Y-%m-%d %H:%M}: check the meter data")
        if self.outliers:
            first = ", ".join(f"{ts:%Y-%m-%d %H:%M} ({value:,.0f} against {median:,.0f})"
                              for ts, value, median in self.outliers[:3])
            out.append(f"{len(self.outliers)} outlier hour(s) of load, far from the median of their week, set "
                       f"missing: {first}" + (" ..." if len(self.outliers) > 3 else "")
                       + "; keep them with outlier_ratio: 0")
        if self.dropped_nonexistent:
            out.append(f"dropped {self.dropped_nonexistent} rows at local times skipped by DST")
        out.extend(self.notes)
        return out


@dataclass
class HourlyData:
    """A regular hourly series. ``frame`` is indexed by tz-aware hour-beginning timestamps (named
    ``timestamp``) with the column ``load`` (MW, NaN inside long gaps) and the exogenous columns.
    ``calendar``: the holiday calendar that made the 'holiday' column, if one did; its future values
    are then known for any hour."""

    frame: pd.DataFrame
    exog: list[str]
    report: DataReport = field(default_factory=DataReport)
    calendar: str | None = None

    @property
    def timezone(self) -> str:
        return str(self.frame.index.tz)

    @property
    def load(self) -> np.ndarray:
        return self.frame[LOAD].to_numpy(dtype=float)

    def __len__(self) -> int:
        return len(self.frame)

    def window(self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> HourlyData:
        """Rows with start <= timestamp < end."""
        index = self.frame.index
        mask = np.ones(len(index), dtype=bool)
        if start is not None:
            mask &= index >= start
        if end is not None:
            mask &= index < end
        return HourlyData(self.frame.loc[mask].copy(), list(self.exog), self.report, self.calendar)
