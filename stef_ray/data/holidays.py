"""Public-holiday flags from a named calendar.

``US`` is pandas' US federal calendar. ``NERC`` is the six holidays the North American power industry
treats as off-peak days (New Year's Day, Memorial Day, Independence Day, Labor Day, Thanksgiving and
Christmas; one that falls on a Sunday moves to the Monday, one on a Saturday stays there): the days on
which US load really drops, and what the PJM East benchmark uses. On Martin Luther King, Presidents',
Columbus and Veterans Day most people work, and a federal flag there both misses those days and dilutes
the effect learnt for the real ones (PJM 2016, linear-only: 3.150 % with the federal flag, 3.110 % with
NERC's). Any other name is a country of the ``holidays`` package, by ISO 3166 code, with an optional
subdivision after a dash the way ISO 3166-2 writes it: ``FR``, ``DE``, ``GB-ENG``, ``AU-VIC`` (Victoria's
Melbourne Cup day), ``US-TX``. A national load series without its own holiday column thus still gets
one, the input that matters most after the calendar itself (holiday flag and bridge days: PJM East
9.120 -> 9.023 % for trend + Fourier alone, with NERC's holidays).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    Holiday,
    USFederalHolidayCalendar,
    USLaborDay,
    USMemorialDay,
    USThanksgivingDay,
    sunday_to_monday,
)

US_FEDERAL = "US"
NERC = "NERC"
HOLIDAY_COLUMN = "holiday"  # the input ``DataConfig.holidays`` adds


class NercHolidayCalendar(AbstractHolidayCalendar):
    """NERC's six off-peak holidays (see the module docstring)."""

    rules = [  # noqa: RUF012 - pandas reads this class attribute
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMemorialDay,
        Holiday("Independence Day", month=7, day=4, observance=sunday_to_monday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas Day", month=12, day=25, observance=sunday_to_monday),
    ]


PANDAS_CALENDARS = {US_FEDERAL: USFederalHolidayCalendar, NERC: NercHolidayCalendar}


def split_calendar(name: str) -> tuple[str, str | None]:
    """``'AU-VIC'`` -> (``'AU'``, ``'VIC'``); ``'FR'`` -> (``'FR'``, None)."""
    country, _, subdivision = name.strip().partition("-")
    return country.upper(), (subdivision.upper() or None)


def check_calendar(name: str) -> str:
    """``name`` normalised (``'au-vic'`` -> ``'AU-VIC'``), or ValueError saying what is known."""
    if name.strip().upper() in PANDAS_CALENDARS:
        return name.strip().upper()
    import holidays  # ~0.1 s to import; only where a calendar is asked for

    country, subdivision = split_calendar(name)
    known = holidays.list_supported_countries()
    if country not in known:
        raise ValueError(
            f"unknown holiday calendar '{name}': use an ISO 3166 country code the `holidays` package "
            f"knows ({len(known)} of them, e.g. US, GB, FR, DE, AU), optionally with a region: GB-ENG, AU-VIC; "
            "or NERC for the six US holidays on which load drops"
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
    if calendar.strip().upper() in PANDAS_CALENDARS:
        days = PANDAS_CALENDARS[calendar.strip().upper()]().holidays(start=local_dates.min(), end=local_dates.max())
    else:
        import holidays

        country, subdivision = split_calendar(calendar)
        years = range(local_dates.min().year, local_dates.max().year + 1)
        days = pd.DatetimeIndex(sorted(holidays.country_holidays(country, subdiv=subdivision, years=years)))
    return np.isin(local_dates.values, days.values).astype(float)

