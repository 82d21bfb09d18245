"""Public-holiday flags from a named calendar.

``US`` is pandas' US federal calendar (what the PJM East benchmark uses). Any other name is a country of
the ``holidays`` package, by ISO 3166 code, with an optional subdivision after a dash the way ISO 3166-2
writes it: ``FR``, ``DE``, ``GB-ENG``, ``AU-VIC`` (Victoria's Melbourne Cup day), ``US-TX``. A national
load series without its own holiday column thus still gets one, the input that matters most after the
calendar itself (holiday flag and bridge days: PJM East 9.120 -> 9.082 % for trend + Fourier alone).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

US_FEDERAL = "US"
HOLIDAY_COLUMN = "holiday"  # the input ``DataConfig.holidays`` adds


def split_calendar(name: str) -> tuple[str, str | None]:
    """``'AU-VIC'`` -> (``'AU'``, ``'VIC'``); ``'FR'`` -> (``'FR'``, None)."""
    country, _, subdivision = name.strip().partition("-")
    return country.upper(), (subdivision.upper() or None)


def check_calendar(name: str) -> str:
    """``name`` normalised (``'au-vic'`` -> ``'AU-VIC'``), or ValueError saying what is known."""
    if name.strip().upper() == US_FEDERAL:
        return US_FEDERAL
    import holidays  # ~0.1 s to import; only where a calendar is asked for

    country, subdivision = split_calendar(name)
    known = holidays.list_supported_countries()
    if country not in known:
        raise ValueError(
            f"unknown holiday calendar '{name}': use an ISO 3166 country code the `holidays` package "
            f"knows ({len(known)} of them, e.g. US, GB, FR, DE, AU), optionally with a region: GB-ENG, AU-VIC"
        )
    if subdivision is not None and subdivision not in known[country]:
        regions = ", ".join(f"{country}-{code}" for code in known[country][:8])
        more = ", ..." if len(known[country]) > 8 else ""
        raise ValueError(f"unknown holiday calendar '{name}': {country} has no region {subdivision} "
                         f"({regions or 'no regions'}{more})")
    return country if subdivision is None else f"{country}-{subdivision}"


def holiday_flags(index: pd.DatetimeIndex, calendar: str) -> np.ndarray:
    """1.0 for hours whose local date is a holiday of ``calendar`` (see the module docstring), else 0.0."""
    local_dates = index.tz_localize(None).normalize() if index.tz is not None else index.normalize()
    if not len(local_dates):
        return np.zeros(0)
    if calendar.strip().upper() == US_FEDERAL:
        from pandas.tseries.holiday import USFederalHolidayCalendar

        days = USFederalHolidayCalendar().holidays(start=local_dates.min(), end=local_dates.max())
    else:
        import holidays

        country, subdivision = split_calendar(calendar)
        years = range(local_dates.min().year, local_dates.max().year + 1)
        days = pd.DatetimeIndex(sorted(holidays.country_holidays(country, subdiv=subdivision, years=years)))
    return np.isin(local_dates.values, days.values).astype(float)
