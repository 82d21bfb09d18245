"""A validated forecast request as the model's input rows, and the hourly-time helpers that request
parsing and the component batches share. ``PreparedForecast`` is what ``ForecastService.parse`` returns and
what the Serve ingress stacks into ``ComponentBatch``es; it is kept in numpy because it is built for every
request and crosses between replicas, while its ``frame`` gives the same rows as the DataFrame the CLI
builds. It lives apart from ``ForecastService`` so that the component code can use it without the parsing
rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel

from stef_ray.serving.schemas import RequestError

HOUR_NS = 3_600_000_000_000


@dataclass
class PreparedForecast:
    """A validated request: the model's input rows (history_hours + model horizon) as numpy arrays, and
    what was repaired or assumed. ``frame`` is the same rows as the DataFrame the CLI builds."""

    utc_ns: np.ndarray  # (n,) int64: UTC instants of the rows, hourly: history_hours + horizon
    values: np.ndarray  # (n, 1 + k): load (NaN from the origin on), then the exog columns
    columns: tuple[str, ...]  # load and the exog names, in the order of ``values``
    timezone: str
    origin: pd.Timestamp
    horizon: int
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The hours before history_hours that the client sent, up to the model's interval_history_hours:
    # (utc_ns, values) in the same layout, or None. They only scale the quantile band.
    older: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=local_index(self.utc_ns, self.timezone), columns=list(self.columns))

    @property
    def long_frame(self) -> pd.DataFrame | None:
        """The older hours followed by ``frame``'s rows, where there are older hours."""
        if self.older is None:
            return None
        utc_ns, values = np.concatenate([self.older[0], self.utc_ns]), np.concatenate([self.older[1], self.values])
        return pd.DataFrame(values, index=local_index(utc_ns, self.timezone), columns=list(self.columns))


def local_index(utc_ns: np.ndarray, timezone: str) -> pd.DatetimeIndex:
    """The hourly index of UTC instants ``utc_ns`` on the local clock of ``timezone``."""
    return pd.DatetimeIndex(utc_ns.astype("datetime64[ns]"), name="timestamp").tz_localize("UTC").tz_convert(timezone)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_ns(rows: Sequence[BaseModel]) -> np.ndarray:
    """UTC instants of the rows' (offset-aware) timestamps as int64 nanoseconds, exactly."""
    return np.fromiter(((row.timestamp - _EPOCH) // _MICROSECOND for row in rows), dtype=np.int64,
                       count=len(rows)) * 1000


def local_stamp(ns: int, timezone: str) -> pd.Timestamp:
    """``ns`` (UTC epoch nanoseconds) as a timestamp on the local clock of ``timezone``."""
    return pd.Timestamp(int(ns), tz="UTC").tz_convert(timezone)


def check_hourly(stamps: np.ndarray, section: str, timezone: str) -> None:
    """Rows ``section[i]`` at these epoch nanoseconds are hourly, increasing, each hour once; else a 422
    naming the first row at fault."""
    steps = np.diff(stamps)
    bad = np.flatnonzero((steps <= 0) | (steps % HOUR_NS != 0))
    if not len(bad):
        return
    i = int(bad[0]) + 1
    where = f"{section}[{i}].timestamp"
    this, before = local_stamp(stamps[i], timezone), local_stamp(stamps[i - 1], timezone)
    if steps[i - 1] == 0:
        raise RequestError(422, f"{this} appears twice (also {section}[{i - 1}]); remove the duplicate", where)
    if steps[i - 1] < 0:
        raise RequestError(422, f"{this} comes before {section}[{i - 1}] ({before}); sort the rows by time, "
                           "oldest first", where)
    raise RequestError(422, f"{this} is not a whole number of hours after {section}[{i - 1}]; rows must be "
                       "hourly (start of each hour)", where)
