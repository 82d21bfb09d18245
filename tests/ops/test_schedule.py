"""Weekly retraining: cron times in Asia/Seoul and across DST, the missed-run rule, and a real Ray job."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from stef_ray.cli.main import main as cli_main
from stef_ray.exceptions import ConfigError, ServiceUnavailableError
from stef_ray.ops.schedule import RetrainScheduler, ScheduleConfig, load_state, missed_run, save_state
from stef_ray.ops.schedule_cron import next_run_times, parse_cron
from stef_ray.ops.schedule_jobs import job_client, submit_and_follow

SEOUL = ZoneInfo("Asia/Seoul")
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
UTC = dt.UTC


def test_next_run_times__default_is_sunday_0200_in_seoul():
    after = dt.datetime(2024, 6, 5, 12, 0, tzinfo=SEOUL)  # a Wednesday
    runs = next_run_times("0 2 * * 0", "Asia/Seoul", after, n=3)
    assert [run.isoformat() for run in runs] == [
        "2024-06-09T02:00:00+09:00",
        "2024-06-16T02:00:00+09:00",
        "2024-06-23T02:00:00+09:00",
    ]
    assert runs[0].astimezone(UTC) == dt.datetime(2024, 6, 8, 17, 0, tzinfo=UTC)


def test_next_run_times__strictly_after_a_run_time():
    at_run = dt.datetime(2024, 6, 9, 2, 0, tzinfo=SEOUL)
    assert next_run_times("0 2 * * 0", "Asia/Seoul", at_run)[0] == dt.datetime(2024, 6, 16, 2, 0, tzinfo=SEOUL)


def test_next_run_times__skipped_time_on_spring_forward_runs_at_end_of_gap():
    # Europe/Amsterdam jumps from 02:00 to 03:00 on 2024-03-31: 02:30 does not exist that day.
    after = dt.datetime(2024, 3, 30, 12, 0, tzinfo=AMSTERDAM)
    runs = next_run_times("30 2 * * *", "Europe/Amsterdam", after, n=3)
    assert [run.isoformat() for run in runs] == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_next_run_times__repeated_time_on_fall_back_runs_once_at_first_occurrence():
    # 2024-10-27 in Amsterdam: 02:00-02:59 happens twice (CEST, then CET).
    after = dt.datetime(2024, 10, 26, 12, 0, tzinfo=AMSTERDAM)
    runs = next_run_times("30 2 * * *", "Europe/Amsterdam", after, n=2)
    assert [run.astimezone(UTC) for run in runs] == [
        dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC),  # 02:30 CEST
        dt.datetime(2024, 10, 28, 1, 30, tzinfo=UTC),  # 02:30 CET the next day
    ]


def test_next_run_times__hourly_job_across_both_dst_changes_in_us_eastern():
    spring = next_run_times("0 * * * *", "US/Eastern", dt.datetime(2024, 3, 10, 5, 30, tzinfo=UTC), n=3)
    assert [run.isoformat() for run in spring] == [
        "2024-03-10T01:00:00-05:00",
        "2024-03-10T03:00:00-04:00",  # 02:00 is skipped, its run merges with 03:00's
        "2024-03-10T04:00:00-04:00",
    ]
    fall = next_run_times("0 * * * *", "US/Eastern", dt.datetime(2024, 11, 3, 4, 30, tzinfo=UTC), n=3)
    assert [run.astimezone(UTC).hour for run in fall] == [5, 7, 8]  # 01:00 EDT, then 02:00 EST: 01:00 EST not repeated


def test_parse_cron__lists_ranges_steps_names_and_day_rule():
    expression = parse_cron("*/15 9-17/4 1,15 jan-mar mon-fri")
    assert expression.minutes == (0, 15, 30, 45)
    assert expression.hours == (9, 13, 17)
    # Both day fields restricted: either matches (cron's OR rule). 2024-01-06 is a Saturday, the 15th a Monday.
    assert expression.matches_day(dt.date(2024, 1, 1))
    assert expression.matches_day(dt.date(2024, 1, 2))
    assert not expression.matches_day(dt.date(2024, 1, 6))
    assert not expression.matches_day(dt.date(2024, 4, 1))
    assert parse_cron("0 2 * * 7").days_of_week == frozenset({0})
    assert parse_cron("@weekly") == parse_cron("0 0 * * 0")


@pytest.mark.parametrize(
    ("cron", "message"),
    [("0 2 * *", "5 fields"), ("60 2 * * 0", "outside 0-59"), ("0 2 * * funday", "not a number"), ("0 0 30 2 *", "does not fire")],
)
def test_next_run_times__bad_cron_is_a_config_error(cron, message):
    with pytest.raises(ConfigError, match=message):
        next_run_times(cron, "Asia/Seoul", dt.datetime(2024, 1, 1, tzinfo=UTC))


def test_schedule_config__unknown_zone_and_unknown_key_are_refused():
    with pytest.raises(ConfigError, match="unknown time zone 'Asia/Seul'"):
        ScheduleConfig(timezone="Asia/Seul")
    with pytest.raises(ValueError, match="Extra inputs"):
        ScheduleConfig(crn="0 2 * * 0")


def test_missed_run__down_over_sunday_runs_once_at_start_up(tmp_path):
    config = ScheduleConfig(state_file=tmp_path / "state.json")
    save_state(config.state_file, dt.datetime(2024, 6, 1, 12, 0, tzinfo=SEOUL))  # handled up to a Saturday
    handled_until = load_state(config.state_file)
    monday = dt.datetime(2024, 6, 17, 9, 0, tzinfo=SEOUL)  # two Sundays were missed
    assert missed_run(config, handled_until, monday) == dt.datetime(2024, 6, 16, 2, 0, tzinfo=SEOUL)
    just_before_sunday_run = dt.datetime(2024, 6, 2, 1, 59, tzinfo=SEOUL)
    assert missed_run(config, handled_until, just_before_sunday_run) is None
    assert missed_run(config, None, monday) is None  # a first start has missed nothing


def test_load_state__corrupt_state_is_a_config_error(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        load_state(path)


def test_schedule_cmd__show_next_and_bad_cron_on_the_command_line(capsys):
    assert cli_main(["schedule", "--show-next", "2", "--cron", "0 2 * * 0", "--timezone", "Asia/Seoul"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(line.endswith("02:00:00+09:00") for line in lines)
    assert dt.datetime.fromisoformat(lines[0]).weekday() == 6
    assert cli_main(["schedule", "--show-next", "1", "--cron", "0 25 * * 0"]) == 2
    assert "outside 0-23" in capsys.readouterr().err


def test_schedule_cmd__once_with_ray_unreachable_is_a_one_line_error(capsys, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = cli_main(["schedule", "--once", "--address", f"http://127.0.0.1:{port}", "--state-file", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("error: Ray job API at")
    assert err.count("\n") == 1
    assert not (tmp_path / "s.json").exists(), "nothing was submitted, so nothing may be recorded as handled"


# ---- against a real Ray head ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_ray_head(ray_cli: Path, temp_dir: str, auth: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`ray start --head --block` on free ports; returns the process and the dashboard address once the job
    API answers. Its stderr goes to a file in ``temp_dir``, so a failed start can be read afterwards."""
    port, dashboard_port = _free_port(), _free_port()
    # No drain on shutdown: the default waits 30 s for work that a test cluster does not have.
    # Token auth off explicitly: Ray turns it on by itself when ~/.ray/auth_token exists (any earlier
    # ray.init() on the machine writes one), which would make this fixture depend on the machine's past.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_AUTH_MODE": "disabled",
        **(auth or {}),
    }
    with open(Path(temp_dir) / "ray_start.err", "ab") as stderr:
        process = subprocess.Popen(
            [
                str(ray_cli), "start", "--head", "--block", "--num-cpus", "1", "--port", str(port),
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
                "--include-dashboard=true", "--temp-dir", temp_dir, "--disable-usage-stats",
                # Ray's fixed default ports (agent 52365, client 10001, ...) clash with any other Ray on the machine.
                "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
                "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port()),
                "--ray-client-server-port", str(_free_port()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as response:
                if response.status == 200:
                    return process, address
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):  # up, and asking for the token
                return process, address
        except OSError:
            pass
        time.sleep(0.5)
    return process, ""


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)  # `ray start --block` then stops the processes it started
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(process.pid, signal.SIGKILL)


def _ray_head(auth: dict[str, str] | None = None):
    """A Ray head with the job API, started with `ray start --block` so that only it is stopped after."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the `ray` command is not installed next to this Python")
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths have a length limit
    # A second try on fresh ports: once in a full CI run `ray start` exited at once (a port picked free was
    # taken before Ray bound it, most likely, as other Ray clusters of the suite come and go).
    for _attempt in range(2):
        process, address = _start_ray_head(ray_cli, temp_dir, auth)
        if address:
            break
        _stop(process)
    else:
        errors = (Path(temp_dir) / "ray_start.err").read_text(errors="replace").strip().splitlines()[-3:]
        pytest.fail(f"Ray head did not start twice (exit {process.poll()}): {' | '.join(errors)}; logs in {temp_dir}")
    yield address
    _stop(process)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head():
    yield from _ray_head()


@pytest.fixture(scope="module")
def ray_head_with_token():
    """A head with token authentication on, as Ray now starts by default; yields (address, token)."""
    token = uuid.uuid4().hex * 2
    for address in _ray_head({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}):
        yield address, token


@pytest.mark.slow
def test_submit_and_follow__trivial_job_succeeds_and_its_log_is_followed(ray_head):
    lines: list[str] = []
    outcome = submit_and_follow(
        job_client(ray_head),
        f"{sys.executable} -c \"print('retrain ok')\"",
        poll_interval_s=0.5,
        on_log_line=lines.append,
    )
    assert outcome.status == "SUCCEEDED", outcome.message
    assert "retrain ok" in lines
    failed = submit_and_follow(job_client(ray_head), f"{sys.executable} -c \"raise SystemExit(3)\"", poll_interval_s=0.5)
    assert failed.status == "FAILED"


@pytest.mark.slow
def test_retrain_scheduler__missed_run_is_submitted_at_start_up(ray_head, tmp_path):
    state_file = tmp_path / "state.json"
    config = ScheduleConfig(
        entrypoint=f"{sys.executable} -c \"print('catch-up')\"",
        ray_address=ray_head,
        state_file=state_file,
        poll_interval_s=0.5,
    )
    started = dt.datetime.now(UTC)
    save_state(state_file, started - dt.timedelta(days=8))  # down for more than a week
    stop = threading.Event()
    scheduler = threading.Thread(target=RetrainScheduler(config).run_forever, args=(stop,))
    scheduler.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "last_status" not in json.loads(state_file.read_text()):
        time.sleep(0.5)
    stop.set()
    scheduler.join(timeout=30)
    state = json.loads(state_file.read_text())
    assert state["last_status"] == "SUCCEEDED"
    assert dt.datetime.fromisoformat(state["handled_until"]) >= started
    assert next_run_times(config.cron, config.timezone, load_state(state_file))[0] > started


@pytest.mark.slow
def test_job_client__a_token_cluster_is_reached_with_the_token_ray_would_read(ray_head_with_token, tmp_path, monkeypatch):
    # Ray's own job client sends the token only when RAY_AUTH_MODE=token is set on the client; ours reads
    # it where Ray keeps it, and says in one line what to do where there is none.
    address, token = ray_head_with_token
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ServiceUnavailableError, match=r"requires a token and none is set: set RAY_AUTH_TOKEN"):
        job_client(address)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    with pytest.raises(ServiceUnavailableError, match="this one was refused"):
        job_client(address)
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(token + "\n")
    outcome = submit_and_follow(job_client(address), f"{sys.executable} -c \"print('token ok')\"", poll_interval_s=0.5)
    assert outcome.status == "SUCCEEDED", outcome.message


def test_retrain_scheduler_due__first_start_records_then_each_sunday_is_due_once(tmp_path):
    # The driven-clock rule (scripts/week_in_the_life.py): nothing is due on a first start; a Sunday 02:00
    # Seoul run is due from that instant on, and once it is handled the next is a week later.
    scheduler = RetrainScheduler(ScheduleConfig(state_file=tmp_path / "state.json", ray_address="http://127.0.0.1:9"))
    saturday = dt.datetime(2014, 11, 8, tzinfo=UTC)
    assert scheduler.due(saturday) is None and scheduler.tick(saturday) is None
    assert load_state(tmp_path / "state.json") == saturday
    sunday_0200_seoul = dt.datetime(2014, 11, 8, 17, tzinfo=UTC)
    assert scheduler.due(sunday_0200_seoul - dt.timedelta(minutes=1)) is None
    assert scheduler.due(sunday_0200_seoul + dt.timedelta(hours=5)) == sunday_0200_seoul
    save_state(tmp_path / "state.json", sunday_0200_seoul)
    assert scheduler.due(sunday_0200_seoul + dt.timedelta(days=6)) is None
    assert scheduler.due(sunday_0200_seoul + dt.timedelta(days=7)) == sunday_0200_seoul + dt.timedelta(days=7)



@pytest.mark.slow
def test_schedule_once__the_shipped_job_sized_by_one_setting_trains_and_registers(tmp_path, monkeypatch):
    # As an operator on a 2-core machine: a head started in the project folder (the job runs there), the
    # data in data/*.csv, `SCHEDULE_TUNE_CONFIG=tune_configs/smoke.yaml stef-ray schedule --once` and no
    # other flag: the job reads the data, searches, registers and gates. Token authentication is on.
    import mlflow

    from stef_ray.data.builtin import write_dataset

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copytree(Path(__file__).resolve().parents[2] / "tune_configs", project / "tune_configs")
    write_dataset("vic-elec", project / "data" / "vic_elec.csv")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from local_stack import ray_head

    token = uuid.uuid4().hex * 2
    # The job runs `stef-ray` as the head finds it on its PATH, as where it is installed.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cwd = os.getcwd()
    os.chdir(project)  # `ray start` here: the job's working folder
    try:
        with ray_head(tmp_path, num_cpus=2, token=token) as head:
            env = {**os.environ, "RAY_AUTH_TOKEN": token, "SCHEDULE_TUNE_CONFIG": "tune_configs/smoke.yaml",
                   "RAY_ADDRESS": head.job_api}
            env.pop("MLFLOW_TRACKING_URI", None)
            run = subprocess.run([sys.executable, "-m", "stef_ray", "schedule", "--once", "--state-file",
                                  str(tmp_path / "state.json")], capture_output=True, text=True, env=env, timeout=900)
    finally:
        os.chdir(cwd)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "SUCCEEDED" in run.stdout
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(store, registry_uri=store)
    champion = client.get_model_version_by_alias("power-demand-hybrid", "champion")
    assert str(champion.version) == "1" and champion.tags["gate_decision"] == "champion"
