"""Thread pools sized to the work (one thread per process unless asked): the setting, the user's own variables winning, and
the real libraries (numpy's BLAS, torch, OpenMP) honouring what the CLI sets before they load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stef_ray.exceptions import ConfigError
from stef_ray.threads import configure_threads, requested_threads


def test_requested_threads__one_by_default_a_count_or_off():
    assert requested_threads({}) == 1
    assert requested_threads({"STEF_RAY_THREADS": "auto"}) == 1
    assert requested_threads({"STEF_RAY_THREADS": "3"}) == 3
    assert requested_threads({"STEF_RAY_THREADS": "off"}) is None


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_requested_threads__a_bad_value_names_the_variable_and_the_choices(value):
    with pytest.raises(ConfigError, match=r"STEF_RAY_THREADS=.*whole number.*'auto'.*'off'"):
        requested_threads({"STEF_RAY_THREADS": value})


def test_configure_threads__sets_what_is_unset_and_keeps_what_the_user_set():
    environ = {"STEF_RAY_THREADS": "2", "OPENBLAS_NUM_THREADS": "4"}
    assert configure_threads(environ) == 2
    assert environ["OMP_NUM_THREADS"] == "2" and environ["OPENBLAS_NUM_THREADS"] == "4"  # the user's
    default = {}
    assert configure_threads(default) == 1 and default == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    off = {"STEF_RAY_THREADS": "off"}
    assert configure_threads(off) is None and off == {"STEF_RAY_THREADS": "off"}


def test_the_libraries_take_the_sizes_when_set_before_they_load():
    # What `stef-ray` does before a command's work, in a fresh process with no thread variables of its own.
    probe = (
        "from stef_ray.threads import configure_threads; n = configure_threads(); "
        "import numpy, torch, sklearn.ensemble, json; from threadpoolctl import threadpool_info; "
        "pools = {p['user_api']: p['num_threads'] for p in threadpool_info()}; "
        "print(json.dumps({'n': n, 'torch': torch.get_num_threads(), **pools}))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env["STEF_RAY_THREADS"] = "2"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    pools = json.loads(run.stdout.strip().splitlines()[-1])
    assert pools["n"] == 2 and pools["torch"] == 2 and pools["blas"] == 2 and pools["openmp"] == 2
    env.pop("STEF_RAY_THREADS")  # the default
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    pools = json.loads(run.stdout.strip().splitlines()[-1])
    assert pools["n"] == 1 and pools["torch"] == 1 and pools["blas"] == 1 and pools["openmp"] == 1


def test_cli__a_bad_thread_setting_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "STEF_RAY_THREADS": "many"}
    run = subprocess.run([sys.executable, "-m", "stef_ray", "data", "vic-elec", "--out", str(tmp_path / "v.csv")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "STEF_RAY_THREADS='many'" in run.stderr
    assert not (tmp_path / "v.csv").exists()
