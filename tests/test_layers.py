"""The architecture's one rule that imports can check: the core (data, features, models, bundle, the forecast
path, evaluation, the Python API) never imports Ray, MLflow, the InfluxDB client or FastAPI; the adapters do."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import stef_ray

OUTSIDE_SYSTEMS = ("ray", "mlflow", "influxdb_client", "fastapi", "starlette")
ADAPTERS = ("stef_ray.integrations", "stef_ray.serving", "stef_ray.ops", "stef_ray.cli")


def core_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(stef_ray.__path__, "stef_ray.")]
    return sorted(name for name in names if not name.startswith(ADAPTERS) and name != "stef_ray.__main__")


def test_layers__the_core_modules_are_found():
    modules = core_modules()
    # The walk must see the core's packages, or the next test would pass on nothing.
    for expected in ("stef_ray.models.hybrid", "stef_ray.evaluation.backtest", "stef_ray.data.loading", "stef_ray.api"):
        assert expected in modules


def test_layers__importing_the_whole_core_loads_no_outside_system():
    # A fresh interpreter: this test process has Ray and MLflow loaded by other tests.
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OUTSIDE_SYSTEMS!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"the core imported {result.stdout.strip()}"
