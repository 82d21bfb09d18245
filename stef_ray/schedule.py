"""Weekly retraining as Ray jobs: when to run (cron in a time zone, right across DST) and what a run is
(submit the tune job through Ray's job submission API, follow it to the end, log the outcome).

The champion gate lives in the tune job itself; the scheduler only starts it and reports.

Daylight-saving rules (what `next_run_times` decided):
- a wall time that does not exist (spring forward, e.g. 02:30 on the last Sunday of March in Europe)
  runs once, at the first instant after the gap (03:00 local), like Vixie cron;
- a wall time that happens twice (fall back) runs once, at its first occurrence.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stef_ray.exceptions import ConfigError, ServiceUnavailableError

logger = logging.getLogger(__name__)

UTC = dt.UTC
MAX_SEARCH_DAYS = 366 * 8  # a Feb 29 on a Monday needs up to 28 years of search; such crons are refused
SCHEDULED_FOR = "{scheduled_for}"  # in an entrypoint: the due time of the run it starts
DEFAULT_TUNE_CONFIG = "tune_configs/prod.yaml"  # the weekly search; SCHEDULE_TUNE_CONFIG picks another
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


# ---- cron ---------------------------------------------------------------------------------------


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


def _zone(name: str) -> ZoneInfo:
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
    zone = _zone(timezone)
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


# ---- config and state ---------------------------------------------------------------------------


class ScheduleConfig(BaseModel):
    """When and how the retraining job is submitted."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(
        default_factory=lambda: os.environ.get("SCHEDULE_CRON", "0 2 * * 0"),
        description="cron expression (minute hour day month weekday) in local time; env SCHEDULE_CRON",
    )
    timezone: str = Field(
        default_factory=lambda: os.environ.get("SCHEDULE_TIMEZONE", "Asia/Seoul"),
        description="IANA time zone the cron expression is read in; env SCHEDULE_TIMEZONE",
    )
    entrypoint: str = Field(
        default_factory=lambda: f"stef-ray tune --config {os.environ.get('SCHEDULE_TUNE_CONFIG', DEFAULT_TUNE_CONFIG)}",
        description="shell command the Ray job runs, in the folder where the head was started (`ray start`); "
        "default: `stef-ray tune --config $SCHEDULE_TUNE_CONFIG` (tune_configs/prod.yaml; "
        "tune_configs/smoke.yaml fits 2 cores). {scheduled_for} in it becomes the run's due time (ISO), e.g. "
        "`--end {scheduled_for}` to train on the data up to then when a missed run is caught up late",
    )
    ray_address: str = Field(
        default_factory=lambda: os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
        description="Ray job API address (the dashboard's HTTP address); env RAY_ADDRESS",
    )
    runtime_env: dict | None = Field(None, description="Ray runtime_env for the job (working_dir, pip, env_vars)")
    state_file: Path = Field(
        Path(".stef_ray/schedule_state.json"), description="where the last handled run time is kept"
    )
    poll_interval_s: float = Field(5.0, gt=0, description="seconds between job status polls")
    job_timeout_s: float | None = Field(None, gt=0, description="stop the job if it runs longer (None: never)")
    retry_interval_s: float = Field(300.0, gt=0, description="wait before retrying when Ray is unreachable")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        _zone(value)
        return value


def load_state(path: Path) -> dt.datetime | None:
    """The instant up to which every scheduled run was handled, or None on a first start."""
    try:
        data = json.loads(Path(path).read_text())
        return dt.datetime.fromisoformat(data["handled_until"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"schedule state {path} is unreadable ({err}): delete it to start afresh") from None


def save_state(path: Path, handled_until: dt.datetime, **extra: object) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"handled_until": handled_until.isoformat(), **extra}, indent=2))
    os.replace(tmp, path)


def missed_run(config: ScheduleConfig, handled_until: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """The latest scheduled time in (handled_until, now], if any: a run missed while the scheduler was down.

    A first start (no state) has missed nothing.
    """
    if handled_until is None:
        return None
    missed = None
    cursor = handled_until
    while cursor < now:
        moment = next_run_times(config.cron, config.timezone, cursor, n=1)[0]
        if moment > now:
            break
        missed = cursor = moment
    return missed


# ---- jobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    duration_s: float
    message: str

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def ray_auth_token(environ: dict[str, str] | None = None) -> str | None:
    """The Ray cluster token where one is configured, from the places Ray itself reads, in its order:
    ``RAY_AUTH_TOKEN``, the file at ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token`` (written by `ray start`
    and `ray get-auth-token --generate`); None where there is none or ``RAY_AUTH_MODE=disabled``."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return environ["RAY_AUTH_TOKEN"].strip()
    path = Path(environ["RAY_AUTH_TOKEN_PATH"]) if environ.get("RAY_AUTH_TOKEN_PATH") else Path.home() / ".ray" / "auth_token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def job_client(address: str):
    """A Ray JobSubmissionClient, or ServiceUnavailableError with a one-line reason.

    Ray turns token authentication on by default (2.59 for local clusters), but its job client sends the
    token only when ``RAY_AUTH_MODE=token`` is set in the client's own environment. The token is sent here
    wherever one is configured (``ray_auth_token``); a cluster without authentication ignores it."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    token = ray_auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except (AuthenticationError, ConnectionError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, AuthenticationError) or "authentication" in reason.lower():
            raise ServiceUnavailableError(
                f"the Ray cluster at {address} requires a token and {'this one was refused' if token else 'none is set'}: "
                "set RAY_AUTH_TOKEN (the head's `ray get-auth-token` prints it) or put it in ~/.ray/auth_token"
            ) from None
        raise ServiceUnavailableError(f"Ray job API at {address} is unreachable ({reason[:160]})") from None


def submit_and_follow(
    client,
    entrypoint: str,
    *,
    runtime_env: dict | None = None,
    poll_interval_s: float = 5.0,
    timeout_s: float | None = None,
    submit_wait_s: float = 60.0,
    on_log_line: Callable[[str], None] | None = None,
) -> JobOutcome:
    """Submit one Ray job, pass its new log lines to `on_log_line` as they come, and wait for its end."""
    on_log_line = on_log_line or (lambda line: logger.info("job | %s", line))
    submission_id = f"stef-ray-retrain-{dt.datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    while True:
        try:
            job_id = client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata={"submitted_by": "stef-ray schedule"},
            )
            break
        except RuntimeError as err:
            # A head that has just started answers before its job agent is up: wait for it, briefly.
            if "No available agent" in str(err) and time.monotonic() - started < submit_wait_s:
                time.sleep(1.0)
                continue
            raise ServiceUnavailableError(f"Ray refused the job: {str(err).splitlines()[0][:200]}") from None
    logger.info("submitted Ray job %s: %s", job_id, entrypoint)
    seen_chars = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        for line in logs[seen_chars:].splitlines():
            on_log_line(line)
        seen_chars = len(logs)
        if status.is_terminal():
            break
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            logger.error("job %s ran past %.0f s; stopping it", job_id, timeout_s)
            client.stop_job(job_id)
        time.sleep(poll_interval_s)
    info = client.get_job_info(job_id)
    return JobOutcome(job_id, str(status.value), time.monotonic() - started, info.message or "")


class RetrainScheduler:
    """Runs the retraining job at each due time; remembers what it handled in `config.state_file`."""

    def __init__(self, config: ScheduleConfig, clock: Callable[[], dt.datetime] | None = None):
        self.config = config
        self.clock = clock or (lambda: dt.datetime.now(UTC))

    def run_cycle(self, scheduled_for: dt.datetime) -> JobOutcome:
        """Record the run as handled, then submit and follow it (at most one submission per due time)."""
        client = job_client(self.config.ray_address)
        # Saved before submitting: a crash after the submission must not submit the same run twice.
        save_state(self.config.state_file, scheduled_for)
        outcome = submit_and_follow(
            client,
            self.config.entrypoint.replace(SCHEDULED_FOR, scheduled_for.isoformat()),
            runtime_env=self.config.runtime_env,
            poll_interval_s=self.config.poll_interval_s,
            timeout_s=self.config.job_timeout_s,
        )
        log = logger.info if outcome.succeeded else logger.error
        log("retraining job %s %s after %.0f s %s", outcome.job_id, outcome.status, outcome.duration_s, outcome.message)
        save_state(
            self.config.state_file, scheduled_for, last_job_id=outcome.job_id, last_status=outcome.status
        )
        return outcome

    def due(self, now: dt.datetime) -> dt.datetime | None:
        """The scheduled time of the run that fell due by ``now`` and was not handled (the latest, if the
        scheduler was down over several); None when none is, or on a first start (no state yet)."""
        handled_until = load_state(self.config.state_file)
        return None if handled_until is None else missed_run(self.config, handled_until, now)

    def tick(self, now: dt.datetime) -> JobOutcome | None:
        """Run the retraining that fell due by ``now``, if one did, once; None when none is due. A first start
        only records ``now``. For a clock that is driven rather than slept on (scripts/week_in_the_life.py);
        ``run_forever`` is the same rule on the wall clock."""
        if load_state(self.config.state_file) is None:
            save_state(self.config.state_file, now)
            return None
        due = self.due(now)
        return None if due is None else self.run_cycle(due)

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Catch up a missed run once, then run at every due time until `stop` is set."""
        stop = stop or threading.Event()
        now = self.clock()
        handled_until = load_state(self.config.state_file)
        if handled_until is None:
            save_state(self.config.state_file, now)
            handled_until = now
        elif (missed := missed_run(self.config, handled_until, now)) is not None:
            logger.warning("a run due at %s was missed while the scheduler was down; running it now", missed)
            handled_until = self._attempt(now, stop)
        while not stop.is_set():
            due = next_run_times(self.config.cron, self.config.timezone, handled_until, n=1)[0]
            logger.info("next retraining at %s", due.isoformat())
            # Wake at least every minute: a suspended machine or a clock change must not oversleep.
            while not stop.is_set() and (wait_s := (due - self.clock()).total_seconds()) > 0:
                stop.wait(min(wait_s, 60.0))
            if stop.is_set():
                break
            handled_until = self._attempt(due, stop)

    def _attempt(self, scheduled_for: dt.datetime, stop: threading.Event) -> dt.datetime:
        while not stop.is_set():
            try:
                self.run_cycle(scheduled_for)
                return scheduled_for
            except ServiceUnavailableError as err:
                logger.error("%s; retrying in %.0f s", err, self.config.retry_interval_s)
                stop.wait(self.config.retry_interval_s)
        return scheduled_for
