"""MLflow adapter against a real SQLite store in tmp_path and a real `mlflow server` on a loopback port."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from stef_ray.bundle import load_bundle, save_bundle  # noqa: E402
from stef_ray.exceptions import ModelNotFoundError  # noqa: E402
from stef_ray.forecasting import forecast_from_frames  # noqa: E402
from stef_ray.integrations import registry, registry_gate, registry_pyfunc, registry_runs  # noqa: E402
from stef_ray.integrations.tune import score_holdout  # noqa: E402

MODEL = "power-demand-hybrid"


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    """MLflow tracking and registry in tmp_path (embedded default: cwd/mlflow.db, cwd/mlartifacts)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def worse_bundle(bundle: Path, out: Path) -> Path:
    """The same model with its level raised by 40 % (trend intercept + log 1.4): clearly worse forecasts."""
    model, _ = load_bundle(bundle)
    model.trend.intercept += float(np.log(1.4))
    return save_bundle(model, out, extra={"deliberately": "worse"})


def worse_recipe(data, out: Path, config) -> Path:
    """A worse configuration (a trend and a weekly shape only) fitted on all of ``data``."""
    from stef_ray.models.hybrid import HybridModel

    model_config = config.model.model_copy(deep=True)
    model_config.residual.enabled = model_config.residual.linear = False
    model_config.seasonality.daily_order = model_config.seasonality.weekday_profiles = 0
    model_config.seasonality.use_exog = False
    return save_bundle(HybridModel(model_config, data.exog).fit(data), out, extra={"deliberately": "worse"})


def test_decide__gate_rules():
    assert registry_gate.decide(5.0, None, 0.0)[0] == "champion"
    assert registry_gate.decide(5.0, 5.0, 0.0)[0] == "champion"  # no worse: takes the title
    assert registry_gate.decide(5.1, 5.0, 0.2)[0] == "champion"  # within the margin
    assert registry_gate.decide(5.3, 5.0, 0.2)[0] == "challenger"
    assert registry_gate.decide(float("nan"), 5.0, 0.2)[0] == "challenger"


def test_log_search__parent_child_runs_registered_champion(tiny_search, tiny_hourly, sqlite_store):
    outcome, config = tiny_search
    result = registry_runs.log_search(outcome, config, tiny_hourly)

    assert result.tracking_uri == f"sqlite:///{sqlite_store / 'mlflow.db'}"
    client = mlflow.MlflowClient(result.tracking_uri)
    parent = client.get_run(result.run_id)
    assert parent.info.run_name == f"weekly_retrain_{datetime.now(UTC):%Y%m%d}"
    assert parent.data.params["holdout_start"] == outcome.holdout_start.isoformat()
    assert parent.data.params["fourier_orders"] == f"[{outcome.best_config.seasonality.daily_order}, 3, 0]"
    assert parent.data.metrics["trend_r2"] == pytest.approx(outcome.model.training.trend_r2)
    assert parent.data.metrics["holdout_MAPE"] == pytest.approx(outcome.holdout_metrics["MAPE"])
    assert parent.data.tags["gate_decision"] == "champion"
    assert parent.info.artifact_uri.startswith((sqlite_store / "mlartifacts").as_uri())
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"search_progress.png", "tune_config.json",
                                                                     "best_model_config.json"}

    children = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert len(children) == len(outcome.trials) == 3
    for trial in outcome.trials:
        run = client.get_run(result.child_run_ids[trial.trial_id])
        assert int(run.data.params["seasonality.daily_order"]) == trial.hyperparameters["seasonality.daily_order"]
        curve = client.get_metric_history(run.info.run_id, "mape")
        assert [m.step for m in sorted(curve, key=lambda m: m.step)] == list(range(1, trial.windows + 1))
        assert sorted(curve, key=lambda m: m.step)[-1].value == pytest.approx(trial.mape)

    assert result.version == "1"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    # The registered pyfunc forecasts exactly what the bundle does, with the components.
    need = outcome.model.history_hours  # the 48 h lookback and the temperature smoothing's warm-up
    example = registry_pyfunc.example_input(tiny_hourly, outcome.holdout_start, need, 24, ["temperature", "workday"])
    predicted = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(example)
    # The same hours of history: the interval scale, and with it the MAPE point's move, reads the days
    # before them where a caller sends them.
    history = tiny_hourly.frame.loc[tiny_hourly.frame.index < outcome.holdout_start].iloc[-need:]
    future = tiny_hourly.frame.loc[tiny_hourly.frame.index >= outcome.holdout_start, ["temperature", "workday"]]
    expected = forecast_from_frames(outcome.model, history, future).frame
    assert list(predicted.columns) == ["timestamp", "forecast", "trend", "seasonality", "residual", "p10", "p50", "p90"]
    assert predicted["timestamp"].iloc[0] == outcome.holdout_start.isoformat()
    np.testing.assert_allclose(predicted["forecast"], expected["forecast"], rtol=1e-6)
    np.testing.assert_allclose(predicted[["trend", "seasonality", "residual"]].sum(axis=1), predicted["forecast"], rtol=1e-9)


def test_champion_gate__worse_model_gets_challenger_equal_one_takes_champion(
    tiny_search, tiny_hourly, sqlite_store
):
    outcome, config = tiny_search
    client = registry.connect()
    experiment_id = registry.ensure_experiment(client, "gate-test")
    example = registry_pyfunc.example_input(tiny_hourly, outcome.holdout_start, outcome.model.history_hours, 24,
                                            ["temperature", "workday"])

    def register(bundle: Path, mape: float) -> tuple[str, registry_gate.GateDecision, str]:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = registry_pyfunc.log_bundle_model(bundle, example)
            version, decision = registry_gate.register_and_gate(
                client, info.model_uri, config.mlflow, mape, tiny_hourly, outcome.holdout_start, run.info.run_id)
        return version, decision, run.info.run_id

    first, decision, _ = register(outcome.bundle_path, outcome.holdout_metrics["MAPE"])
    assert (first, decision.alias, decision.champion_mape) == ("1", "champion", None)

    # The champion's bundle was refitted on all the data, the holdout too: the gate refits its configuration
    # on the data before the holdout, which gives what the search scored it at.
    worse = worse_recipe(tiny_hourly, sqlite_store / "worse", config)
    worse_config = load_bundle(worse)[0].config
    from stef_ray.models.hybrid import HybridModel

    refitted = HybridModel(worse_config, tiny_hourly.exog).fit(tiny_hourly.window(end=outcome.holdout_start))
    version, decision, run_id = register(worse, score_holdout(refitted, tiny_hourly, outcome.holdout_start)["MAPE"])
    assert version == "2"
    assert decision.alias == "challenger", decision.reason
    assert decision.new_mape > decision.champion_mape == pytest.approx(outcome.holdout_metrics["MAPE"])
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    run = client.get_run(run_id)
    assert run.data.tags["gate_decision"] == "challenger"
    assert run.data.metrics["holdout_mape"] == pytest.approx(decision.new_mape)
    assert run.data.metrics["champion_holdout_mape"] == pytest.approx(decision.champion_mape)

    version, decision, _ = register(outcome.bundle_path, outcome.holdout_metrics["MAPE"])  # no worse: takes over
    assert (version, decision.alias, decision.champion_version) == ("3", "champion", "1")
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "3"



def test_champion_gate__a_champion_trained_before_the_holdout_is_scored_as_it_is(tiny_search, tiny_hourly, sqlite_store):
    # It never saw the holdout, so no refit: a bundle made worse after fitting (its level raised by 40 %)
    # is found out as it stands.
    from stef_ray.models.hybrid import HybridModel

    outcome, config = tiny_search
    client = registry.connect()
    experiment_id = registry.ensure_experiment(client, "gate-before-test")
    example = registry_pyfunc.example_input(tiny_hourly, outcome.holdout_start, outcome.model.history_hours, 24,
                                            ["temperature", "workday"])
    before = save_bundle(HybridModel(config.model, tiny_hourly.exog).fit(tiny_hourly.window(end=outcome.holdout_start)),
                         sqlite_store / "before")
    worse = worse_bundle(before, sqlite_store / "worse-before")
    decisions = []
    for bundle in (worse, before):
        mape = score_holdout(load_bundle(bundle)[0], tiny_hourly, outcome.holdout_start)["MAPE"]
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = registry_pyfunc.log_bundle_model(bundle, example)
            decisions.append(registry_gate.register_and_gate(client, info.model_uri, config.mlflow, mape, tiny_hourly,
                                                             outcome.holdout_start, run.info.run_id)[1])
    assert decisions[0].alias == "champion"  # the first version
    assert decisions[1].alias == "champion" and decisions[1].champion_mape > decisions[1].new_mape
    assert decisions[1].champion_mape == pytest.approx(
        score_holdout(load_bundle(worse)[0], tiny_hourly, outcome.holdout_start)["MAPE"])  # as it is


def test_resolve_model_uri__alias_path_and_errors(tiny_search, tiny_hourly, sqlite_store):
    outcome, config = tiny_search
    assert registry.resolve_model_uri(outcome.bundle_path) == outcome.bundle_path
    with pytest.raises(ModelNotFoundError, match=r"missing manifest\.json"):
        registry.resolve_model_uri(sqlite_store / "nothing-here")

    registry_runs.log_search(outcome, config, tiny_hourly)
    local = registry.resolve_model_uri(f"models:/{MODEL}@champion", sqlite_store / "download")
    assert local.is_relative_to(sqlite_store / "download")
    model, manifest = load_bundle(local)
    assert manifest.extra["tune"]["best_trial_id"] == outcome.best_trial_id
    assert score_holdout(model, tiny_hourly, outcome.holdout_start)["MAPE"] == pytest.approx(
        score_holdout(outcome.model, tiny_hourly, outcome.holdout_start)["MAPE"])
    with pytest.raises(ModelNotFoundError, match="cannot fetch models:/power-demand-hybrid@nobody"):
        registry.resolve_model_uri(f"models:/{MODEL}@nobody")


# --------------------------------------------------------------------------- a real mlflow server
@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """`mlflow server` on a free loopback port (scripts/local_stack.py, as the week-in-the-life drill starts
    it; stopped with everything it started): its URL and its artifact folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from local_stack import mlflow_server as start_mlflow_server

    try:
        with start_mlflow_server(tmp_path) as url:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            monkeypatch.chdir(tmp_path)
            yield url, tmp_path / "mlflow-artifacts"
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_log_search__against_a_real_mlflow_server(tiny_search, tiny_hourly, mlflow_server):
    url, artifact_root = mlflow_server
    outcome, config = tiny_search
    result = registry_runs.log_search(outcome, config, tiny_hourly)

    assert result.tracking_uri == url
    client = mlflow.MlflowClient(url)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert client.get_run(result.run_id).data.tags["gate_decision"] == "champion"
    # Artifacts went through the server into its own artifact folder, not into the working directory.
    assert list(artifact_root.rglob("manifest.json"))
    assert not (Path.cwd() / "mlartifacts").exists()
    local = registry.resolve_model_uri(f"models:/{MODEL}@champion", Path.cwd() / "download")
    frame = tiny_hourly.frame
    model, _ = load_bundle(local)
    history = frame.loc[frame.index < outcome.holdout_start]
    future = frame.loc[frame.index >= outcome.holdout_start, ["temperature", "workday"]]
    np.testing.assert_allclose(forecast_from_frames(model, history, future).frame["forecast"],
                               forecast_from_frames(outcome.model, history, future).frame["forecast"], rtol=1e-6)


def test_pyfunc__a_calendar_holiday_left_out_comes_from_the_calendar(thanksgiving_eve, sqlite_store, tmp_path):
    # The logged pyfunc, loaded back from a real MLflow store, on rows without a 'holiday' column at all,
    # the night before Thanksgiving: its signature lets the column be absent, and the history and the day
    # ahead take the calendar's flags, as `stef-ray forecast` does.
    data_config, data, model = thanksgiving_eve
    bundle = save_bundle(model, tmp_path / "bundle", data_config)
    history = data.frame.iloc[-800:]
    example = history[["load", "temperature", "holiday"]].rename_axis("timestamp").reset_index()
    example["timestamp"] = example["timestamp"].map(lambda ts: ts.isoformat())
    with mlflow.start_run():
        info = registry_pyfunc.log_bundle_model(bundle, example)
    predicted = mlflow.pyfunc.load_model(info.model_uri).predict(example.drop(columns="holiday"))
    future = history.iloc[-168:-144][["temperature"]].set_index(pd.date_range(
        history.index[-1], periods=25, freq="h")[1:])
    expected = forecast_from_frames(model, history, future.assign(holiday=1.0)).frame  # Thanksgiving
    np.testing.assert_allclose(predicted["forecast"], expected["forecast"], rtol=1e-9)
    workday = forecast_from_frames(model, history, future.assign(holiday=0.0)).frame
    assert np.abs(predicted["forecast"] - workday["forecast"]).max() > 1.0


def test_registry__pyfunc_requirements_pin_the_versions_it_was_logged_with():
    # `mlflow models serve` rebuilds the environment from these: an unpinned name takes whatever is newest.
    from importlib.metadata import version

    pins = dict(line.split("==") for line in registry_pyfunc.PIP_REQUIREMENTS)
    assert set(pins) >= {"numpy", "pandas", "torch", "mlflow", "stef-ray"}
    assert pins["numpy"] == version("numpy") and pins["mlflow"] == version("mlflow")
    assert "+" not in pins["torch"]  # a local build label (+cpu) would not resolve on PyPI


def test_registry__logged_models_find_the_pyfunc_where_their_code_file_imports_it():
    # Every logged model's code file, those logged before the pyfunc had a module of its own included,
    # imports BundleForecaster from `registry`: the class must stay reachable there.
    assert "from stef_ray.integrations.registry import BundleForecaster" in registry_pyfunc.MODEL_CODE
    assert registry.BundleForecaster is registry_pyfunc.BundleForecaster
    assert issubclass(registry.BundleForecaster, mlflow.pyfunc.PythonModel)
