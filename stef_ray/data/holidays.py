"""Public-holiday flags from pandas' own calendars (no extra dependency)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.holiday import USFederalHolidayCalendar

CALENDARS = {"US": USFederalHolidayCalendar}


def holiday_flags(index: pd.DatetimeIndex, calendar: str) -> np.ndarray:
    """1.0 for hours whose local date is a holiday of ``calendar``, else 0.0."""
    local_dates = index.tz_localize(None).normalize() if index.tz is not None else index.normalize()
    days = CALENDARS[calendar]().holidays(start=local_dates.min(), end=local_dates.max())
    return np.isin(local_dates.values, days.values).astype(float)
