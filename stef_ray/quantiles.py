"""The forecast's quantile levels, named one way everywhere: a level ``q`` is the column, HTTP key and stored
field ``p<100 q>`` (0.1 -> ``p10``, 0.975 -> ``p97.5``), and the band that is plotted and scored for
coverage is the widest central one the levels give (the lowest level below 0.5 and the highest above it:
P10-P90 with the default levels 0.1, 0.5, 0.9). Every layer (the backtest, the tune objective, the CSV,
the HTTP answer, the time-series points, the plot) reads them through here, so a model configured with
``quantiles: [0.05, 0.5, 0.95]`` forecasts, stores, plots and scores P5-P95. Core: no outside system."""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_LEVELS = (0.1, 0.5, 0.9)
COLUMN = re.compile(r"^p(\d+(?:\.\d+)?)$")


def quantile_column(q: float) -> str:
    """0.1 -> 'p10', 0.5 -> 'p50', 0.975 -> 'p97.5'."""
    return f"p{q * 100:g}"


def level_of(column: str) -> float | None:
    """'p10' -> 0.1; None for a name that is not a quantile column."""
    match = COLUMN.match(column)
    return float(match.group(1)) / 100 if match else None


def quantile_columns(columns: Iterable[str]) -> list[str]:
    """The quantile columns among ``columns`` (a frame's, an answer's keys), lowest level first."""
    found = [(level, name) for name in columns if (level := level_of(str(name))) is not None and 0 < level < 1]
    return [name for _, name in sorted(found)]


def band(columns: Iterable[str]) -> tuple[str, str] | None:
    """The widest central band among the quantile columns: (lowest below p50, highest above), or None."""
    names = quantile_columns(columns)
    low = [name for name in names if level_of(name) < 0.5]
    high = [name for name in names if level_of(name) > 0.5]
    return (low[0], high[-1]) if low and high else None


def band_label(pair: tuple[str, str]) -> str:
    """('p10', 'p90') -> 'P10–P90'."""
    return f"{pair[0].upper()}–{pair[1].upper()}"


def coverage_column(pair: tuple[str, str]) -> str:
    """('p10', 'p90') -> 'coverage_p10_p90': the backtest's name for the share of actuals inside the band."""
    return f"coverage_{pair[0]}_{pair[1]}"


def coverage_of(row) -> float:
    """The band coverage in a metrics row (a dict or a pandas Series of a backtest's overall table), whichever
    band the model issues; NaN where it has none (a baseline)."""
    keys = row.keys() if hasattr(row, "keys") else row.index
    for key in keys:
        if str(key).startswith("coverage_p"):
            value = row[key]
            return float(value) if value == value else float("nan")
    return float("nan")
