"""Ray jobs from outside the cluster: reach the job API (with the cluster's token where it has one),
submit a job, follow its log to the end and report the outcome.

The weekly scheduler (`stef_ray.ops.schedule`) and the monitor's early retrain both submit their job here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stef_ray.exceptions import ServiceUnavailableError

logger = logging.getLogger(__name__)

UTC = dt.UTC

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
