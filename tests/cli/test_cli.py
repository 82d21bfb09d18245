"""The CLI end to end on small data, in subprocesses as a user runs it; bad input -> one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

TINY_CONFIG = """\
data:
  exog: [temperature, workday]
model:
  residual:
    enabled: true
    hidden_size: 8
    max_epochs: 2
    patience: 2
    validation_days: 7
    validation_blocks: 2
    batch_size: 256
    window_stride_hours: 2
    device: cpu
"""


def stef_ray(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stef_ray", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, synthetic_csv):
    folder = tmp_path_factory.mktemp("cli")
    (folder / "tiny.yaml").write_text(TINY_CONFIG)
    return folder


@pytest.fixture(scope="module")
def trained(workdir, synthetic_csv):
    run = stef_ray("train", "--config", workdir / "tiny.yaml", "--data", synthetic_csv, "--out", workdir / "bundle")
    assert run.returncode == 0, run.stderr
    return run


def test_cli__train_prints_stages_and_epoch_table_and_writes_a_bundle(trained, workdir):
    out = trained.stdout
    assert "TRAINING TREND MODEL" in out and "Kd (daily): 3  Kw (weekly): 7" in out
    assert "Epoch  Train Loss    Val Loss    Best Val" in out
    epochs = [line.split()[0] for line in out.splitlines() if line[:5].strip().isdigit()]
    assert epochs[:2] == ["1", "2"]  # one table row per epoch
    assert "note: the forecast is the MAPE point" in out
    assert (workdir / "bundle" / "manifest.json").is_file()


def test_cli__forecast_writes_csv_png_and_metrics_when_actuals_exist(trained, workdir, synthetic_csv):
    out_dir = workdir / "fc"
    run = stef_ray("forecast", "--model", workdir / "bundle", "--data", synthetic_csv,
                   "--origin", "2020-02-25 00:00", "--out", out_dir)
    assert run.returncode == 0, run.stderr
    csv = next(out_dir.glob("forecast_*.csv"))
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["timestamp", "forecast", "trend", "seasonality", "residual", "p10", "p50", "p90"]
    assert len(frame) == 24 and frame["timestamp"].iloc[0].startswith("2020-02-25T00:00:00")
    assert next(out_dir.glob("forecast_*.png")).stat().st_size > 10_000
    assert "MAPE" in run.stdout and next(out_dir.glob("metrics_*.csv")).is_file()


def test_cli__forecast_after_the_data_warns_about_the_fallback(trained, workdir, synthetic_csv):
    run = stef_ray("forecast", "--model", workdir / "bundle", "--data", synthetic_csv, "--out", workdir / "fc2",
                   "--no-plot")
    assert run.returncode == 0, run.stderr
    assert "warning: no known future values for temperature, workday" in run.stdout


def test_cli__backtest_writes_the_metric_tables(trained, workdir, synthetic_csv):
    out_dir = workdir / "bt"
    run = stef_ray("backtest", "--config", workdir / "tiny.yaml", "--data", synthetic_csv, "--start", "2020-02-22",
                   "--days", "3", "--refit-every", "0", "--out", out_dir)
    assert run.returncode == 0, run.stderr
    overall = pd.read_csv(out_dir / "overall_metrics.csv")
    assert set(overall["model"]) == {"hybrid", "trend_fourier", "seasonal_naive_week", "seasonal_naive_day"}
    assert list(overall.columns[:7]) == ["model", "MAE", "MSE", "RMSE", "R2", "MAPE", "SMAPE"]
    assert len(pd.read_csv(out_dir / "horizon_metrics.csv")) == 4 * 24
    assert "MAPE" in run.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["forecast", "--model", "no/such/bundle", "--data", "{csv}"], "no model bundle at no/such/bundle"),
        (["train", "--data", "missing.csv"], "data file missing.csv not found"),
        (["train", "--data", "{csv}", "--target-col", "demand"], "column 'demand' not found"),
        (["train", "--data", "{csv}", "--config", "{bad_yaml}"], "model.residual.hidden_sise: unknown key"),
        (["train", "--data", "{csv}", "--holidays", "XX"], "data.holidays: Value error, unknown holiday calendar 'XX'"),
        (["backtest", "--data", "{csv}", "--start", "not-a-date"], "--start 'not-a-date' is not a date"),
        (["forecast", "--model", "{bundle}", "--data", "{csv}", "--origin", "2020-01-02"], "needs the last 168 hours"),
    ],
)
def test_cli__bad_input_gives_one_line_and_exit_2(args, expected, workdir, synthetic_csv, trained):
    bad_yaml = workdir / "bad.yaml"
    bad_yaml.write_text("model:\n  residual:\n    hidden_sise: 8\n")
    filled = [a.format(csv=synthetic_csv, bad_yaml=bad_yaml, bundle=workdir / "bundle") for a in args]
    run = stef_ray(*filled, cwd=workdir)
    assert run.returncode == 2
    assert expected in run.stderr
    assert "Traceback" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.startswith("error:")]) == 1


def test_cli__help_teaches_each_command():
    for command in ("train", "forecast", "backtest", "data"):
        run = stef_ray(command, "--help")
        assert run.returncode == 0 and "example" in run.stdout.lower(), command


def test_cli__data_vic_elec_writes_the_real_dataset(tmp_path):
    run = stef_ray("data", "vic-elec", "--out", tmp_path / "vic.csv")
    assert run.returncode == 0, run.stderr
    frame = pd.read_csv(tmp_path / "vic.csv")
    assert list(frame.columns) == ["timestamp", "load", "temperature", "workday"]
    assert len(frame) == 8760 and frame["timestamp"].iloc[0] == "2014-01-01T00:00:00+10:00"
    assert 2500 < frame["load"].mean() < 6000  # MW, Victoria


def test_cli__data_to_an_unwritable_path_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = stef_ray("data", "taylor", "--out", blocker / "taylor.csv")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "cannot write" in run.stderr and "--out" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_cli__data_taylor_writes_twelve_weeks_of_england_and_wales_hourly(tmp_path):
    run = stef_ray("data", "taylor", "--out", tmp_path / "taylor.csv")
    assert run.returncode == 0, run.stderr
    frame = pd.read_csv(tmp_path / "taylor.csv")
    assert list(frame.columns) == ["timestamp", "load"] and len(frame) == 12 * 7 * 24
    assert frame["timestamp"].iloc[0] == "2000-06-05T00:00:00+01:00"  # a Monday, British Summer Time
    assert frame["timestamp"].iloc[-1] == "2000-08-27T23:00:00+01:00"
    assert frame["load"].min() > 18_000 and frame["load"].max() < 40_000  # MW, England & Wales
