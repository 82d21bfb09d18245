"""What the accuracy monitor does when a window's MAPE is too high: the `forecast_alert` points for the
dashboards, a JSON POST to a webhook, and an early retraining job on Ray.

Each action stands on its own: the monitor's loop (`stef_ray.ops.monitor.evaluate`) decides whether to alert
and which of them to take, and keeps the retraining cooldown.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
import uuid
from typing import TYPE_CHECKING

from stef_ray.exceptions import ServiceUnavailableError
from stef_ray.integrations.influx_points import MEASUREMENT_ALERT, TAG_MODEL_NAME, TAG_SCOPE, TAG_SERIES_ID
from stef_ray.ops.schedule_jobs import job_client, submit_and_follow

if TYPE_CHECKING:
    import pandas as pd

    from stef_ray.ops.monitor_report import MonitorReport
    from stef_ray.ops.schedule import ScheduleConfig

logger = logging.getLogger(__name__)

ALERT_MODEL_ALL = "all"  # model_name tag of an alert about all models together


def alert_lines(report: MonitorReport, now: pd.Timestamp) -> list[str]:
    """The `forecast_alert` points of an alert, at `now`: one about all models together when the overall
    MAPE is above the threshold (scope overall), one per series above it (scope series, its series_id)."""
    from influxdb_client import Point, WritePrecision

    def point(scope: str, mape: float, series_id: str | None = None) -> str:
        alert = Point(MEASUREMENT_ALERT).tag(TAG_MODEL_NAME, ALERT_MODEL_ALL).tag(TAG_SCOPE, scope)
        if series_id is not None:
            alert = alert.tag(TAG_SERIES_ID, series_id)
        return (alert.field("mape", float(mape)).field("threshold", float(report.threshold))
                .time(int(now.timestamp()), WritePrecision.S).to_line_protocol())

    lines = [point("overall", report.overall_mape)] if report.overall_mape > report.threshold else []
    mape = {score.series_id: score.mape for score in report.by_series}
    return lines + [point("series", mape[series_id], series_id) for series_id in report.series_alerts]


def post_webhook(url: str, payload: dict, timeout_s: float = 5.0) -> bool:
    """POST `payload` as JSON; True on a 2xx answer. Never raises: a broken webhook must not stop the monitor."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except Exception as err:  # HTTP error, refused, timeout, bad URL: log and carry on
        logger.error("alert webhook %s failed: %s", url, err)
        return False


def submit_early_retrain(job: ScheduleConfig, reason: str, follow: bool = False) -> str:
    """Submit the retraining job to Ray now; returns its id.

    Without `follow` it returns once Ray accepted the job: a monitor run from cron should not wait
    hours for a tune job. With `follow` it is the scheduler's own `submit_and_follow`.

    Raises:
        ServiceUnavailableError: the Ray job API cannot be reached or refuses the job.
    """
    client = job_client(job.ray_address)
    if follow:
        outcome = submit_and_follow(
            client, job.entrypoint, runtime_env=job.runtime_env, poll_interval_s=job.poll_interval_s,
            timeout_s=job.job_timeout_s,
        )
        log = logger.info if outcome.succeeded else logger.error
        log("early retraining job %s %s after %.0f s", outcome.job_id, outcome.status, outcome.duration_s)
        return outcome.job_id
    submission_id = f"stef-ray-early-retrain-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    try:
        job_id = client.submit_job(
            entrypoint=job.entrypoint,
            submission_id=submission_id,
            runtime_env=job.runtime_env,
            metadata={"submitted_by": "stef-ray monitor", "reason": reason[:200]},
        )
    except RuntimeError as err:
        raise ServiceUnavailableError(f"Ray refused the early retraining job: {str(err).splitlines()[0][:200]}") from None
    logger.info("submitted early retraining job %s: %s", job_id, job.entrypoint)
    return job_id
