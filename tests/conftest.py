"""Shared fast settings: tiny torch models on CPU, seeded synthetic data, one vic-elec file per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from stef_ray.threads import configure_threads

configure_threads()  # as the CLI does: one BLAS and one OpenMP thread, for this process and those it starts

MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _isolate_mlflow_uris():
    """mlflow.set_tracking_uri/set_registry_uri also write os.environ; undo both after each test so no
    test talks to a store (or a stopped server) that an earlier test configured."""
    before = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def local_ray():
    """The one local Ray of the test session (2 CPUs, no dashboard), shared by the Tune and Serve tests.

    address="local" never joins a cluster that some `ray start` left registered in /tmp/ray; one
    thread per worker keeps torch from oversubscribing 2 cores.
    """
    from stef_ray.serving.mode import use_throughput_mode

    use_throughput_mode()  # the Serve tests run the app as `stef-ray serve` runs it (before ray.serve's import)
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING", runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    if "ray.serve" in sys.modules:
        from ray import serve

        serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_config():
    """A ModelConfig whose LSTM trains in a second or two."""
    from stef_ray.config import ModelConfig, ResidualConfig

    return ModelConfig(
        residual=ResidualConfig(
            enabled=True, hidden_size=8, max_epochs=2, patience=2, validation_days=7, validation_blocks=2, batch_size=256, device="cpu",
            window_stride_hours=2,
        )
    )


@pytest.fixture(scope="session")
def synthetic_frame():
    """60 days of seeded synthetic hourly load with temperature and workday (UTC)."""
    from stef_ray.data.synthetic import synthetic_load

    return synthetic_load(hours=24 * 60, seed=1)


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory, synthetic_frame) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic.csv"
    synthetic_frame.assign(timestamp=synthetic_frame["timestamp"].map(lambda t: t.isoformat())).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def synthetic_hourly(synthetic_frame):
    from stef_ray.config import DataConfig
    from stef_ray.data import frame_to_hourly

    return frame_to_hourly(synthetic_frame, DataConfig(exog=["temperature", "workday"]))


@pytest.fixture(scope="session")
def fitted_model(synthetic_hourly, tiny_model_config):
    from stef_ray.models.hybrid import HybridModel

    # Without the seasonality's cross-validation, which leaves this winter series' temperature out and the
    # gradient-boosted trees with it: the bundle and forecast tests want every component present.
    config = tiny_model_config.model_copy(deep=True)
    config.seasonality.cross_validate = False
    return HybridModel(config, synthetic_hourly.exog).fit(synthetic_hourly)


@pytest.fixture(scope="session")
def thanksgiving_eve(tiny_model_config):
    """(data config, data, fitted model): 60 days of synthetic New York load with temperature and the US
    federal calendar's `holiday` input (Columbus and Veterans Day in it), ending the night before
    Thanksgiving 2021, and the hour the clocks went back on 7 November."""
    from stef_ray.config import DataConfig
    from stef_ray.data import frame_to_hourly
    from stef_ray.data.synthetic import synthetic_load
    from stef_ray.models.hybrid import HybridModel

    data_config = DataConfig(exog=["temperature"], holidays="US")
    table = synthetic_load(hours=24 * 60 + 1, start="2021-09-26", timezone="America/New_York", seed=3)
    data = frame_to_hourly(table, data_config)
    return data_config, data, HybridModel(tiny_model_config, data.exog).fit(data)


@pytest.fixture(scope="session")
def vic_elec_csv(tmp_path_factory) -> Path:
    from stef_ray.data.builtin import write_dataset

    return write_dataset("vic-elec", tmp_path_factory.mktemp("vic") / "vic_elec.csv")


SHARED_PJME = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pjme" / "PJME_hourly.csv"


@pytest.fixture(scope="session")
def fleet_files():
    """(write_series, write_fleet): a synthetic series file in a folder (its own load column and timestamp
    format where asked), and a fleet YAML there naming series (with temperature and workday as inputs)."""
    import yaml

    from stef_ray.data.synthetic import synthetic_load

    def write_series(folder, name: str, seed: int, load_column: str = "load", timestamp_format: str | None = None) -> str:
        table = synthetic_load(hours=24 * 60, seed=seed).rename(columns={"load": load_column})
        if timestamp_format:
            table["timestamp"] = table["timestamp"].dt.tz_localize(None).dt.strftime(timestamp_format)
        table.to_csv(folder / f"{name}.csv", index=False)
        return f"{name}.csv"

    def write_fleet(folder, series: dict, **sections) -> str:
        path = folder / "fleet.yaml"
        path.write_text(yaml.safe_dump({"data": {"exog": ["temperature", "workday"]}, "series": series, **sections}))
        return str(path)

    return write_series, write_fleet


FLUX_LSP = Path(__file__).resolve().parents[1] / ".tools" / "flux-lsp" / "node_modules" / "@influxdata" / "flux-lsp-node"


@pytest.fixture(scope="session")
def flux_errors():
    """Flux's own parser and type checker (the Flux language server, run by scripts/flux_check.js; `make
    services` installs it), for queries no local server can run: a function from {name: query} to {name:
    [error, ...]}. Unknown functions, misspelt or missing arguments and type errors are errors."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None or not (FLUX_LSP / "package.json").is_file():
        pytest.skip("the Flux language server is not installed: run `make services` (needs Node.js and npm)")
    script = Path(__file__).resolve().parents[1] / "scripts" / "flux_check.js"

    def check(queries: dict[str, str]) -> dict[str, list[str]]:
        payload = json.dumps([{"name": name, "flux": query} for name, query in queries.items()])
        done = subprocess.run([node, str(script), str(FLUX_LSP)], input=payload, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return {item["name"]: item["errors"] for item in json.loads(done.stdout)}

    return check
