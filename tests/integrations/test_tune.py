"""Ray Tune adapter: config validation, a real tiny search, resume after an interruption, `ray job submit`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from ray import tune

from stef_ray.bundle import load_bundle
from stef_ray.config import load_config
from stef_ray.exceptions import ConfigError
from stef_ray.integrations.tune import (
    PROGRESS_FILE,
    WEIGHTS_FILE,
    SearchInterruptedError,
    resolve_gpus,
    run_search,
)
from stef_ray.integrations.tune_config import TuneConfig

REPO = Path(__file__).resolve().parents[2]


def write_yaml(path: Path, payload: dict) -> Path:
    path.write_text(yaml.safe_dump(payload))
    return path


# --------------------------------------------------------------------------- config
def test_tune_config__unknown_key_is_named(tmp_path):
    path = write_yaml(tmp_path / "t.yaml", {"search": {"space": {"hidden_sise": {"type": "choice", "values": [8]}}}})
    with pytest.raises(ConfigError, match=r"search\.space\.hidden_sise: unknown key"):
        load_config(TuneConfig, path)


def test_tune_config__inverted_range_is_named(tmp_path):
    space = {"learning_rate": {"type": "loguniform", "low": 0.1, "high": 0.001}}
    path = write_yaml(tmp_path / "t.yaml", {"search": {"space": space}})
    with pytest.raises(ConfigError, match=r"search\.space\.learning_rate\.loguniform: .*low \(0\.1\) must be below"):
        load_config(TuneConfig, path)


def test_tune_config__value_outside_model_limits_is_named(tmp_path):
    path = write_yaml(tmp_path / "t.yaml", {"search": {"space": {"hidden_size": {"type": "choice", "values": [8, 4096]}}}})
    with pytest.raises(ConfigError, match=r"search\.space: .*hidden_size: value 4096 is not allowed"):
        load_config(TuneConfig, path)


def test_tune_config__grace_beyond_max_epochs_is_refused(tmp_path):
    path = write_yaml(tmp_path / "t.yaml", {"scheduler": {"max_epochs": 3, "grace_period": 5}})
    with pytest.raises(ConfigError, match=r"scheduler: .*grace_period \(5\) exceeds max_epochs \(3\)"):
        load_config(TuneConfig, path)


def test_tune_config__shipped_configs_load_with_their_sizes():
    sizes = {}
    for name in ("smoke", "quick", "prod"):
        config = load_config(TuneConfig, REPO / "tune_configs" / f"{name}.yaml")
        sizes[name] = (config.search.num_samples, config.scheduler.max_epochs, config.resources.gpus_per_trial)
        assert config.data.exog == ["temperature", "workday"]
    assert sizes == {"smoke": (4, 2, 0), "quick": (5, 10, 0), "prod": (50, 100, 0.125)}


def test_tune_cmd__bad_config_is_one_line_nonzero(tmp_path, capsys):
    from stef_ray.cli.main import main

    path = write_yaml(tmp_path / "t.yaml", {"scheduler": {"type": "hyperband"}})
    assert main(["tune", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "scheduler.type" in err


# --------------------------------------------------------------------------- running
def test_resolve_gpus__cpu_only_cluster_runs_gpu_config_on_cpu(ray_session):
    assert ray_session.cluster_resources().get("GPU", 0) == 0
    gpus, note = resolve_gpus(0.25)
    assert gpus == 0.0
    assert "gpus_per_trial=0.25" in note
    assert resolve_gpus(0) == (0.0, None)


def test_run_search__tiny_search_builds_best_bundle(tiny_search, tiny_hourly):
    outcome, _config = tiny_search
    assert len(outcome.trials) == 3
    for trial in outcome.trials:
        assert list(trial.history["epoch"]) == list(range(1, trial.epochs_run + 1))
        assert trial.stop_reason in ("completed", "asha")
        assert trial.best_val_loss == pytest.approx(trial.history["val_loss"].min())
    best = min(outcome.trials, key=lambda t: t.best_val_loss)
    assert outcome.best_trial_id == best.trial_id
    # The model was trained on data before the holdout and the holdout is the last 7 days.
    assert outcome.holdout_start == tiny_hourly.frame.index[-24 * 7]
    assert outcome.model.training["end"] < outcome.holdout_start.isoformat()
    assert outcome.holdout_metrics["origins"] == 7
    assert 0 < outcome.holdout_metrics["MAPE"] < 10
    # The bundle holds the best trial's hyperparameters and its best checkpoint's weights.
    model, manifest = load_bundle(outcome.bundle_path)
    assert manifest["extra"]["tune"]["best_trial_id"] == best.trial_id
    assert model.config.residual.hidden_size == best.hyperparameters["hidden_size"]
    assert model.config.residual.learning_rate == pytest.approx(best.hyperparameters["learning_rate"])
    trial_dir = next(Path(outcome.experiment_path).glob(f"*{best.trial_id}*"))
    best_checkpoint = min(
        (c for c in trial_dir.glob("checkpoint_*")),
        key=lambda c: json.loads((c / PROGRESS_FILE).read_text())["best_val_loss"],
    )
    weights = torch.load(best_checkpoint / WEIGHTS_FILE, weights_only=True)
    assert model.training["lstm_kept"]  # it beat adding nothing on validation (min_gain 0 here)
    for key, value in model.residual.state_dict().items():
        assert torch.equal(value, weights[key]), key


class InterruptSecondTrial(tune.Callback):
    """Presses Ctrl-C once the second trial has reported epoch 2. Tune keeps its callbacks in the
    experiment state, so the restored search has it too: the flag file makes it fire only once."""

    def __init__(self, flag: Path):
        self.flag = flag

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.flag.exists() and trials.index(trial) == 1 and result["epoch"] == 2:
            self.flag.unlink()
            os.kill(os.getpid(), signal.SIGINT)


def test_run_search__interrupted_search_resumes_without_rerunning_finished_trials(
    ray_session, tiny_hourly, tmp_path, make_tune_config
):
    flag = tmp_path / "interrupt-once"
    flag.touch()
    config = make_tune_config(
        tmp_path / "ray_results", **{"scheduler.type": "fifo", "scheduler.max_epochs": 4,
                                     "search.max_concurrent_trials": 1}
    )
    with pytest.raises(SearchInterruptedError, match="--resume"):
        run_search(config, tiny_hourly, name="resume", bundle_out=tmp_path / "bundle",
                   callbacks=[InterruptSecondTrial(flag)])
    experiment = next((tmp_path / "ray_results").glob("resume_*"))
    trial_dirs = sorted(p for p in experiment.iterdir() if p.is_dir() and p.name.startswith("train_trial"))
    first_results = (trial_dirs[0] / "result.json").read_text()
    assert len(first_results.splitlines()) == 4  # the first trial had finished before the interruption
    second_epochs = [json.loads(line)["epoch"] for line in (trial_dirs[1] / "result.json").read_text().splitlines()]
    assert 2 <= max(second_epochs) < 4  # the second was midway

    outcome = run_search(config, tiny_hourly, name="resume", resume=True, bundle_out=tmp_path / "bundle")

    assert Path(outcome.experiment_path) == experiment
    assert (trial_dirs[0] / "result.json").read_text() == first_results  # not rerun
    assert len(outcome.trials) == 3
    assert all(t.epochs_run == 4 for t in outcome.trials)
    resumed = [json.loads(line)["epoch"] for line in (trial_dirs[1] / "result.json").read_text().splitlines()]
    assert resumed.count(1) == 1  # continued from its checkpoint, not from epoch 1
    assert resumed[-1] == 4
    assert not flag.exists()


def test_run_search__resume_without_a_search_is_a_clear_error(ray_session, tiny_hourly, tmp_path, make_tune_config):
    from stef_ray.integrations.tune import SearchFailedError

    config = make_tune_config(tmp_path / "ray_results")
    with pytest.raises(SearchFailedError, match="nothing to resume"):
        run_search(config, tiny_hourly, name="never", resume=True)


# --------------------------------------------------------------------------- ray job submit
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit__tune_cli_succeeds_on_a_started_cluster(tmp_path, tiny_hourly, make_tune_config):
    from ray.job_submission import JobStatus, JobSubmissionClient

    ray_bin = Path(sys.executable).parent / "ray"
    stef_bin = Path(sys.executable).parent / "stef-ray"
    if not ray_bin.exists() or not stef_bin.exists():
        pytest.skip("ray / stef-ray console scripts not installed next to this Python")
    work = tmp_path / "job"
    work.mkdir()
    tiny_hourly.frame.reset_index().assign(timestamp=lambda f: f["timestamp"].map(lambda t: t.isoformat())).to_csv(
        work / "load.csv", index=False)
    config = make_tune_config("ray_results").model_dump(mode="json", exclude_none=True)
    config["search"]["num_samples"] = 2
    write_yaml(work / "tiny.yaml", config)

    gcs_port, dashboard_port = free_port(), free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={gcs_port}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--metrics-export-port={free_port()}", "--disable-usage-stats"],
        stdout=open(tmp_path / "head.log", "wb"), stderr=subprocess.STDOUT, env=env,  # noqa: SIM115
    )
    try:
        address = f"http://127.0.0.1:{dashboard_port}"
        client = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and client is None:
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
            try:
                client = JobSubmissionClient(address)
            except (ConnectionError, RuntimeError):
                time.sleep(1)
        assert client is not None, "Ray job API never came up"
        job_id = client.submit_job(
            entrypoint=f"{stef_bin} tune --config tiny.yaml --data load.csv",
            runtime_env={"working_dir": str(work),
                         "env_vars": {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}},
        )
        deadline = time.monotonic() + 300
        while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
            time.sleep(1)
        logs = client.get_job_logs(job_id)
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
        assert "champion gate: power-demand-hybrid version 1 -> champion" in logs
        assert "best val loss" in logs  # the top-trials table
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` takes its cluster down with it
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        # A `ray start` registers itself here for later ray.init() calls; forget it if it is ours.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{gcs_port}"):
            current.unlink()
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)  # never a URI another test left
    assert str(client.get_model_version_by_alias("power-demand-hybrid", "champion").version) == "1"
    shutil.rmtree(work, ignore_errors=True)
