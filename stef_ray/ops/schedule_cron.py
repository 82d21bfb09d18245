"""Cron expressions read in a time zone: when the weekly retraining (or any cron-driven job) falls due.

`parse_cron` reads the five-field syntax and @macros; `next_run_times` turns an expression into instants,
right across daylight-saving changes, by these rules:
- a wall time that does not exist (spring forward, e.g. 02:30 on the last Sunday of March in Europe)
  runs once, at the first instant after the gap (03:00 local), like Vixie cron;
- a wall time that happens twice (fall back) runs once, at its first occurrence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stef_ray.exceptions import ConfigError

UTC = dt.UTC
MAX_SEARCH_DAYS = 366 * 8  # a Feb 29 on a Monday needs up to 28 years of search; such crons are refused
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field cron expression (minute hour day-of-month month day-of-week)."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    day_of_month_restricted: bool
    day_of_week_restricted: bool

    def matches_day(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = (day.weekday() + 1) % 7 in self.days_of_week
        # cron's rule: when both day fields are restricted, either one matching is enough.
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return dom or dow
        return dom and dow


def _parse_field(text: str, low: int, high: int, names: tuple[str, ...] = (), name_base: int = 0) -> set[int]:
    def value(token: str) -> int:
        token = token.lower()
        if token in names:
            return names.index(token) + name_base
        if not token.isdigit():
            raise ValueError(f"{token!r} is not a number")
        number = int(token)
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}-{high}")
        return number

    values: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() else None
        if step_text and (step is None or step == 0):
            raise ValueError(f"bad step in {item!r}")
        if span == "*":
            start, stop = low, high
        elif "-" in span:
            first, last = span.split("-", 1)
            start, stop = value(first), value(last)
            if start > stop:
                raise ValueError(f"range {span!r} runs backwards")
        else:
            start = value(span)
            stop = high if step else start
        values.update(range(start, stop + 1, step or 1))
    return values


def parse_cron(expression: str) -> CronExpression:
    """Parse `m h dom mon dow` (lists, ranges, steps, month and weekday names) or an @macro.

    Raises:
        ConfigError: the expression is not valid cron.
    """
    text = _MACROS.get(expression.strip(), expression)
    fields = text.split()
    if len(fields) != 5:
        raise ConfigError(f"cron {expression!r} must have 5 fields (minute hour day month weekday), e.g. '0 2 * * 0'")
    try:
        minutes = _parse_field(fields[0], 0, 59)
        hours = _parse_field(fields[1], 0, 23)
        days_of_month = _parse_field(fields[2], 1, 31)
        months = _parse_field(fields[3], 1, 12, _MONTHS, 1)
        days_of_week = {day % 7 for day in _parse_field(fields[4], 0, 7, _WEEKDAYS)}
    except ValueError as err:
        raise ConfigError(f"cron {expression!r}: {err}") from None
    return CronExpression(
        tuple(sorted(minutes)),
        tuple(sorted(hours)),
        frozenset(days_of_month),
        frozenset(months),
        frozenset(days_of_week),
        day_of_month_restricted=not fields[2].startswith("*"),
        day_of_week_restricted=not fields[4].startswith("*"),
    )


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``.

    Raises:
        ConfigError: no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}: use an IANA name such as 'Asia/Seoul'") from None


def _to_utc(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The instant a local wall time means; a wall time skipped by DST means the end of the gap."""
    while True:
        candidate = wall.replace(tzinfo=zone)  # fold=0: the first of two occurrences
        instant = candidate.astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            return instant
        wall += dt.timedelta(minutes=1)  # inside a gap: walk to its end


def next_run_times(
    cron: str | CronExpression, timezone: str, after: dt.datetime, n: int = 1
) -> list[dt.datetime]:
    """The next `n` times the cron fires in `timezone`, strictly after `after`.

    Args:
        after: a timezone-aware instant.
    Returns:
        tz-aware datetimes in `timezone`, increasing, without repeats.
    Raises:
        ConfigError: bad cron or zone, naive `after`, or a cron that never fires.
    """
    if after.tzinfo is None:
        raise ConfigError(f"after={after} has no timezone")
    expression = parse_cron(cron) if isinstance(cron, str) else cron
    zone = time_zone(timezone)
    after_utc = after.astimezone(UTC)
    first_day = after_utc.astimezone(zone).date() - dt.timedelta(days=1)
    found: list[dt.datetime] = []
    for offset in range(MAX_SEARCH_DAYS):
        day = first_day + dt.timedelta(days=offset)
        if not expression.matches_day(day):
            continue
        for hour in expression.hours:
            for minute in expression.minutes:
                instant = _to_utc(dt.datetime(day.year, day.month, day.day, hour, minute), zone)
                if instant > after_utc and (not found or instant > found[-1]):
                    found.append(instant)
                    if len(found) == n:
                        return [moment.astimezone(zone) for moment in found]
    raise ConfigError(f"cron {cron!r} does not fire within {MAX_SEARCH_DAYS // 366} years")
