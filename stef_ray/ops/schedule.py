"""Weekly retraining as Ray jobs: the schedule's configuration, what it has handled so far, and the
scheduler that submits the retraining job at each due time (catching up a run missed while it was down).

When a cron falls due is `stef_ray.ops.schedule_cron`'s business; how a job reaches Ray and is followed to its
end is `stef_ray.ops.schedule_jobs`'. The champion gate lives in the tune job itself; the scheduler only starts
it and reports.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stef_ray.exceptions import ConfigError, ServiceUnavailableError
from stef_ray.ops.schedule_cron import next_run_times, parse_cron, time_zone
from stef_ray.ops.schedule_jobs import JobOutcome, job_client, submit_and_follow

logger = logging.getLogger(__name__)

UTC = dt.UTC
SCHEDULED_FOR = "{scheduled_for}"  # in an entrypoint: the due time of the run it starts
DEFAULT_TUNE_CONFIG = "tune_configs/prod.yaml"  # the weekly search; SCHEDULE_TUNE_CONFIG picks another


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
        time_zone(value)
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
