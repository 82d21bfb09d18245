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

import numpy as np
import pandas as pd
import pytest
import yaml
from ray import tune

from stef_ray.bundle import load_bundle
from stef_ray.config_loading import load_config
from stef_ray.exceptions import ConfigError
from stef_ray.integrations.tune import SearchInterruptedError, resolve_gpus, run_search
from stef_ray.integrations.tune_config import TuneConfig

REPO = Path(__file__).resolve().parents[2]


def write_yaml(path: Path, payload: dict) -> Path:
    path.write_text(yaml.safe_dump(payload))
    return path


# --------------------------------------------------------------------------- config
def test_tune_config__unknown_key_is_named(tmp_path):
    space = {"residual.hidden_sise": {"type": "choice", "values": [8]}}
    path = write_yaml(tmp_path / "t.yaml", {"search": {"space": space}})
    with pytest.raises(ConfigError, match=r"search\.space: .*residual\.hidden_sise: value 8 is not allowed "
                                          r"\(residual\.hidden_sise: unknown key\)"):
        load_config(TuneConfig, path)


def test_tune_config__a_key_without_its_section_is_named(tmp_path):
    path = write_yaml(tmp_path / "t.yaml", {"search": {"space": {"hidden_size": {"type": "choice", "values": [8]}}}})
    with pytest.raises(ConfigError, match=r"hidden_size: not a key of the model config \(write it as section\.key"):
        load_config(TuneConfig, path)


def test_tune_config__inverted_range_is_named(tmp_path):
    space = {"residual.learning_rate": {"type": "loguniform", "low": 0.1, "high": 0.001}}
    path = write_yaml(tmp_path / "t.yaml", {"search": {"space": space}})
    with pytest.raises(ConfigError, match=r"search\.space\.residual\.learning_rate\.loguniform: .*low \(0\.1\) must be below"):
        load_config(TuneConfig, path)


def test_tune_config__value_outside_model_limits_is_named(tmp_path):
    space = {"residual.hidden_size": {"type": "choice", "values": [8, 4096]}}
    path = write_yaml(tmp_path / "t.yaml", {"search": {"space": space}})
    with pytest.raises(ConfigError, match=r"search\.space: .*residual\.hidden_size: value 4096 is not allowed"):
        load_config(TuneConfig, path)


def test_tune_config__grace_beyond_the_windows_is_refused(tmp_path):
    path = write_yaml(tmp_path / "t.yaml", {"objective": {"windows": 3}, "scheduler": {"grace_period": 5}})
    with pytest.raises(ConfigError, match=r"grace_period \(5\) exceeds objective\.windows \(3\)"):
        load_config(TuneConfig, path)


def test_tune_config__shipped_configs_load_with_their_sizes():
    sizes = {}
    for name in ("smoke", "quick", "prod"):
        config = load_config(TuneConfig, REPO / "tune_configs" / f"{name}.yaml")
        sizes[name] = (config.search.num_samples, config.objective.windows, config.search.algorithm)
        assert "residual.architecture" in config.search.space.dimensions()  # the neural part is searched, "none" too
    assert sizes == {"smoke": (4, 2, "random"), "quick": (8, 4, "random"), "prod": (50, 8, "optuna")}
    # The weekly job (`stef-ray schedule` submits prod.yaml with no flag) reads the deliveries in data/.
    assert load_config(TuneConfig, REPO / "tune_configs" / "prod.yaml").data.path == "data/*.csv"


def test_apply_sampled__sets_dotted_keys_and_none_turns_the_neural_residual_off():
    from stef_ray.config import ModelConfig
    from stef_ray.integrations.tune_config import apply_sampled

    base = ModelConfig()  # the net is off by default; a sampled architecture turns it on
    config = apply_sampled(base, {"seasonality.daily_order": 6, "residual.architecture": "mlp"})
    assert config.seasonality.daily_order == 6 and config.residual.architecture == "mlp" and config.residual.enabled
    assert not base.residual.enabled  # the base is not changed
    on = base.model_copy(update={"residual": base.residual.model_copy(update={"enabled": True})})
    off = apply_sampled(on, {"residual.architecture": "none"})
    assert not off.residual.enabled and on.residual.enabled


def test_objective_windows__spread_over_the_span_most_recent_first(tiny_hourly):
    import pandas as pd

    from stef_ray.integrations.tune import holdout_start
    from stef_ray.integrations.tune_config import ObjectiveConfig
    from stef_ray.integrations.tune_trial import objective_windows

    end = holdout_start(tiny_hourly, 7)
    windows = objective_windows(tiny_hourly, end, ObjectiveConfig(windows=4, window_days=3, span_days=30))
    assert windows[0] == max(windows) and windows[1] == min(windows)  # the newest, then the oldest
    assert all(w.hour == 0 for w in windows) and len(set(windows)) == 4
    assert max(windows) + pd.Timedelta(days=3) <= end  # every forecast before the holdout
    assert (max(windows) - min(windows)).days >= 26


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


def test_run_search__the_best_configuration_by_rolling_origin_mape_is_the_bundle(tiny_search, tiny_hourly):
    from stef_ray.integrations.tune_config import apply_sampled
    from stef_ray.integrations.tune_trial import score_window

    outcome, config = tiny_search
    assert len(outcome.trials) == 3
    for trial in outcome.trials:
        assert list(trial.history["window"]) == list(range(1, trial.windows + 1))
        assert trial.stop_reason in ("completed", "asha")
        assert trial.mape == pytest.approx(trial.history["mape"].iloc[-1])
    completed = [t for t in outcome.trials if t.completed]
    best = min(completed, key=lambda t: t.mape)
    assert outcome.best_trial_id == best.trial_id
    # A trial's score is the backtest's: refit before each window, MAPE of every 00:00 forecast in it.
    chosen = apply_sampled(config.model, best.hyperparameters)
    searched = tiny_hourly.window(end=outcome.holdout_start)
    days = [d for w in outcome.windows for d in score_window(chosen, searched, pd.Timestamp(w), 3)["daily_mape"]]
    assert best.mape == pytest.approx(float(np.mean(days)), rel=1e-6)
    # Holdout: the last 7 days, scored by the chosen configuration fitted before them; the bundle is that
    # configuration refitted on all the data.
    assert outcome.holdout_start == tiny_hourly.frame.index[-24 * 7]
    assert outcome.holdout_metrics["origins"] == 7 and 0 < outcome.holdout_metrics["MAPE"] < 10
    model, manifest = load_bundle(outcome.bundle_path)
    assert manifest.training.end == tiny_hourly.frame.index[-1].isoformat()
    assert manifest.extra["tune"]["best_trial_id"] == best.trial_id
    assert manifest.holdout_mape == pytest.approx(outcome.holdout_metrics["MAPE"])  # what /model reports
    assert model.config.seasonality.daily_order == best.hyperparameters["seasonality.daily_order"]
    assert model.config.residual.linear_alpha == pytest.approx(best.hyperparameters["residual.linear_alpha"])
    assert model.config.residual.enabled == (best.hyperparameters["residual.architecture"] != "none")


def test_run_search__optuna_draws_the_configurations(ray_session, tiny_hourly, tmp_path, make_tune_config):
    pytest.importorskip("optuna")
    config = make_tune_config(tmp_path / "ray_results", **{"search.algorithm": "optuna", "search.num_samples": 2,
                                                           "scheduler.type": "fifo", "objective.windows": 1})
    outcome = run_search(config, tiny_hourly, name="optuna", bundle_out=tmp_path / "bundle")
    assert len(outcome.trials) == 2 and all(t.completed for t in outcome.trials)
    assert {"seasonality.daily_order", "residual.linear_alpha"} <= set(outcome.trials[0].hyperparameters)


class InterruptSecondTrial(tune.Callback):
    """Presses Ctrl-C once the second trial has reported window 2. Tune keeps its callbacks in the
    experiment state, so the restored search has it too: the flag file makes it fire only once."""

    def __init__(self, flag: Path):
        self.flag = flag

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.flag.exists() and trials.index(trial) == 1 and result["windows"] == 2:
            self.flag.unlink()
            os.kill(os.getpid(), signal.SIGINT)


def test_run_search__interrupted_search_resumes_without_rerunning_finished_trials(
    ray_session, tiny_hourly, tmp_path, make_tune_config
):
    flag = tmp_path / "interrupt-once"
    flag.touch()
    config = make_tune_config(
        tmp_path / "ray_results", **{"scheduler.type": "fifo", "objective.windows": 4,
                                     "search.max_concurrent_trials": 1}
    )
    with pytest.raises(SearchInterruptedError, match="--resume"):
        run_search(config, tiny_hourly, name="resume", bundle_out=tmp_path / "bundle",
                   callbacks=[InterruptSecondTrial(flag)])
    experiment = next((tmp_path / "ray_results").glob("resume_*"))
    trial_dirs = sorted(p for p in experiment.iterdir() if p.is_dir() and p.name.startswith("run_trial"))
    first_results = (trial_dirs[0] / "result.json").read_text()
    assert len(first_results.splitlines()) == 4  # the first trial had finished before the interruption
    second = [json.loads(line)["windows"] for line in (trial_dirs[1] / "result.json").read_text().splitlines()]
    assert 2 <= max(second) < 4  # the second was midway

    outcome = run_search(config, tiny_hourly, name="resume", resume=True, bundle_out=tmp_path / "bundle")

    assert Path(outcome.experiment_path) == experiment
    assert (trial_dirs[0] / "result.json").read_text() == first_results  # not rerun
    assert len(outcome.trials) == 3
    assert all(t.windows == 4 for t in outcome.trials)
    resumed = [json.loads(line)["windows"] for line in (trial_dirs[1] / "result.json").read_text().splitlines()]
    assert resumed.count(1) == 1  # continued from its checkpoint, not from the first window
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
        assert "by rolling-origin MAPE" in logs  # the top-trials table
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


def test_tune_cmd__fleet_searches_each_series_and_registers_each_with_its_own_champion(
    ray_session, tmp_path, fleet_files, make_tune_config, monkeypatch, capsys,
):
    from stef_ray.cli.main import main

    write_series, write_fleet = fleet_files
    write_series(tmp_path, "north", 1)
    write_series(tmp_path, "south", 2, load_column="SOUTH_MW")
    fleet = write_fleet(tmp_path, {"north": {"path": "north.csv"}, "south": {"path": "south.csv", "target_col": "SOUTH_MW"},
                                   "east": {"path": "north.csv", "target_col": "EAST_MW"}})  # no such column
    config = make_tune_config(str(tmp_path / "ray_results")).model_dump(mode="json", exclude_none=True)
    config["search"]["num_samples"] = 2
    tune_yaml = write_yaml(tmp_path / "tiny.yaml", config)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    out = tmp_path / "tuned"

    code = main(["tune", "--config", str(tune_yaml), "--fleet", fleet, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed[-3000:]
    assert "east: failed:" in printed and "EAST_MW" in printed and "2 of 3 series ok" in printed
    summary = pd.read_csv(out / "summary.csv").set_index("series_id")
    assert list(summary["status"].sort_index()) == ["failed", "ok", "ok"]
    for series_id in ("north", "south"):
        row = summary.loc[series_id]
        assert row["bundle"] == str(out / series_id) and 0 < row["MAPE"] < 20 and 0 < row["holdout_MAPE"] < 20
        assert row["registered"].startswith(f"power-demand-{series_id} version 1 -> champion")
        _, manifest = load_bundle(out / series_id)
        assert manifest.data.target_col == ("SOUTH_MW" if series_id == "south" else "load")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    for series_id in ("north", "south"):
        assert str(client.get_model_version_by_alias(f"power-demand-{series_id}", "champion").version) == "1"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_registered_model("power-demand-east")
