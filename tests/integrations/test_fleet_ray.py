"""The fleet on a real local Ray: one task per series, results as series finish, a series with bad data
reported while the others are scored; the same through `stef-ray backtest --fleet`."""

from __future__ import annotations

import pandas as pd
import pytest

from stef_ray.fleet import load_fleet
from stef_ray.integrations.fleet_ray import run_fleet_backtest


@pytest.fixture
def small_fleet(tmp_path, fleet_files, tiny_model_config) -> str:
    """Three series: two good ones in different formats, one naming a load column its file lacks."""
    write_series, write_fleet = fleet_files
    folder = tmp_path
    write_series(folder, "north", 1)
    write_series(folder, "south", 2, load_column="SOUTH_MW", timestamp_format="%d.%m.%Y %H:%M")
    write_series(folder, "east", 3)
    model = tiny_model_config.model_dump(mode="json")
    model["residual"]["enabled"] = False
    return write_fleet(folder, {
        "north": {"path": "north.csv"},
        "south": {"path": "south.csv", "target_col": "SOUTH_MW", "timestamp_format": "%d.%m.%Y %H:%M"},
        "east": {"path": "east.csv", "target_col": "EAST_MW"},  # no such column: this series fails
    }, model=model)


def test_fleet_ray__scores_every_good_series_and_reports_the_bad_one(local_ray, small_fleet):
    fleet = load_fleet(small_fleet)
    seen = []
    run = run_fleet_backtest(fleet, pd.Timestamp("2020-02-20"), 7, 7,
                             on_result=lambda outcome, done, total: seen.append((outcome.series_id, done, total)))
    by_id = {o.series_id: o for o in run.outcomes}
    assert sorted(by_id) == ["east", "north", "south"]
    assert [done for _, done, _ in seen] == [1, 2, 3] and {total for *_, total in seen} == {3}
    for name in ("north", "south"):
        assert by_id[name].status == "ok" and by_id[name].days == 7
        assert 0 < by_id[name].mape < 10 and 0 <= by_id[name].coverage <= 100
    assert by_id["east"].status == "failed" and "EAST_MW" in by_id["east"].error
    # The series were scored as `stef-ray backtest` scores one: the same number for the same data.
    from stef_ray.fleet import backtest_series

    alone = backtest_series("north", fleet.data_config("north"), fleet.model, pd.Timestamp("2020-02-20"), 7, 7)
    assert by_id["north"].mape == pytest.approx(alone.mape, rel=1e-9)  # (thread counts differ: rounding)


def test_fleet_ray__series_with_the_most_data_are_submitted_first(tmp_path, fleet_files):
    from stef_ray.integrations.fleet_ray import largest_first

    write_series, write_fleet = fleet_files
    for name, seed in (("north", 1), ("south", 2)):
        write_series(tmp_path, name, seed)
    fleet = load_fleet(write_fleet(tmp_path, {"north": {"path": "north.csv"}, "south": {"path": "south.csv"},
                                              "gone": {"path": "gone.csv"}}))
    (tmp_path / "south.csv").write_text((tmp_path / "south.csv").read_text() * 2)  # twice the rows
    assert largest_first(fleet, {}) == ["south", "north", "gone"]
    tables = {"a": pd.DataFrame({"x": range(3)}), "b": pd.DataFrame({"x": range(9)})}
    fleet.series = {"a": {"path": "long.csv"}, "b": {"path": "long.csv"}}
    assert largest_first(fleet, tables) == ["b", "a"]


def test_fleet_ray__cli_prints_each_series_and_exits_1_when_one_failed(local_ray, small_fleet, tmp_path, capsys):
    from stef_ray.cli.main import main

    code = main(["backtest", "--fleet", small_fleet, "--start", "2020-02-20", "--days", "7", "--refit-every", "7",
                 "--models", "seasonal_naive_day,hybrid", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 1
    assert "[3/3]" in printed and "east: failed:" in printed and "2 of 3 series ok" in printed
    assert "best other seasonal_naive_day" in printed and "(others: seasonal_naive_day" in printed
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["status"]) == ["ok", "ok", "failed"]
    assert "rows read" in summary["data_report"].iloc[0] and summary["outliers"].iloc[0] == 0
    # The hybrid is each series' score whatever the order asked; the baseline sits beside it, from the
    # series' own tables, which are written per series as `stef-ray backtest` writes one series'.
    north = summary.set_index("series_id").loc["north"]
    overall = pd.read_csv(tmp_path / "out" / "north" / "overall_metrics.csv").set_index("model")
    assert north["MAPE"] == pytest.approx(overall.loc["hybrid", "MAPE"], abs=1e-4)
    assert north["MAPE_seasonal_naive_day"] == pytest.approx(overall.loc["seasonal_naive_day", "MAPE"], abs=1e-4)
    forecasts = pd.read_csv(tmp_path / "out" / "north" / "forecasts.csv")
    assert set(forecasts["model"]) == {"hybrid", "seasonal_naive_day"} and len(forecasts) == 2 * 7 * 24
    assert not (tmp_path / "out" / "east").exists()


def test_fleet_ray__train_writes_a_bundle_per_series_that_forecasts(local_ray, small_fleet, tmp_path, capsys):
    from stef_ray.bundle import load_bundle
    from stef_ray.cli.main import main

    out = tmp_path / "models"
    code = main(["train", "--fleet", small_fleet, "--out", str(out), "--end", "2020-02-20"])
    printed = capsys.readouterr().out
    assert code == 1 and "east: failed:" in printed and "2 of 3 series ok" in printed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["north", "south"]
    model, manifest = load_bundle(out / "south")
    assert manifest.data.target_col == "SOUTH_MW"
    assert manifest.training.end.startswith("2020-02-19")  # fitted on the data before --end only
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[summary["series_id"] == "north", "bundle"].item() == str(out / "north")
    # The bundle reads its series' file with the options its manifest kept, and forecasts from it.
    from stef_ray.data import load_hourly
    from stef_ray.forecasting import forecast_at

    data = load_hourly(manifest.data)
    forecast = forecast_at(model, data, pd.Timestamp("2020-02-20")).frame
    assert len(forecast) == 24 and forecast["forecast"].notna().all()


def test_fleet_ray__a_long_format_file_is_split_into_its_series(local_ray, tmp_path, tiny_model_config):
    from stef_ray.data.synthetic import synthetic_load

    frames = []
    for i, name in enumerate(["alpha", "beta"]):
        table = synthetic_load(hours=24 * 60, seed=10 + i)
        frames.append(table.assign(zone=name))
    frames.append(synthetic_load(hours=24 * 3, seed=12).assign(zone="gamma"))  # three days: too short
    pd.concat(frames).to_parquet(tmp_path / "zones.parquet", index=False)
    model = tiny_model_config.model_dump(mode="json")
    model["residual"]["enabled"] = False
    import yaml

    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({
        "data": {"exog": ["temperature", "workday"]}, "model": model,
        "long_format": {"path": "zones.parquet", "series_col": "zone"}}))
    fleet = load_fleet(tmp_path / "fleet.yaml")
    run = run_fleet_backtest(fleet, pd.Timestamp("2020-02-20"), 7, 7)
    by_id = {o.series_id: o for o in run.outcomes}
    assert sorted(by_id) == ["alpha", "beta", "gamma"]
    assert by_id["alpha"].status == by_id["beta"].status == "ok" and by_id["gamma"].status == "failed"
    # The same rows read from a file of their own score the same.
    from stef_ray.fleet import backtest_series

    frames[0].drop(columns="zone").to_csv(tmp_path / "alpha.csv", index=False)
    alone = backtest_series("alpha", fleet.data_config("alpha").model_copy(update={"path": str(tmp_path / "alpha.csv")}),
                            fleet.model, pd.Timestamp("2020-02-20"), 7, 7)
    assert by_id["alpha"].mape == pytest.approx(alone.mape, rel=1e-9)


@pytest.mark.slow
def test_fleet_ray__register_gives_each_series_its_own_model_and_champion_gate(local_ray, fleet_files, tmp_path,
                                                                              tiny_model_config, capsys, monkeypatch):
    import mlflow

    from stef_ray.cli.main import main

    write_series, write_fleet = fleet_files
    write_series(tmp_path, "north", 1)
    write_series(tmp_path, "south", 2)
    model = tiny_model_config.model_dump(mode="json")
    model["residual"]["enabled"] = False
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fleet = write_fleet(tmp_path, {"north": {"path": "north.csv"}, "south": {"path": "south.csv"}}, model=model,
                        registry={"tracking_uri": store, "holdout_days": 7})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "--fleet", fleet, "--out", str(tmp_path / "week1"), "--register", "--end", "2020-02-20"]) == 0
    first = capsys.readouterr().out
    assert "registered north: power-demand-north version 1 -> champion: first version" in first
    assert "registered south: power-demand-south version 1 -> champion: first version" in first
    assert main(["train", "--fleet", fleet, "--out", str(tmp_path / "week2"), "--register", "--end", "2020-02-27"]) == 0
    second = capsys.readouterr().out
    client = mlflow.MlflowClient(store, registry_uri=store)
    for series in ("north", "south"):
        name = f"power-demand-{series}"
        newest = client.get_model_version(name, "2")
        decision = newest.tags["gate_decision"]
        assert newest.tags["series_id"] == series
        assert f"registered {series}: {name} version 2 -> {decision}:" in second
        assert "champion's" in second.split(f"registered {series}:")[1].splitlines()[0]  # the champion was scored
        expected = "2" if decision == "champion" else "1"
        assert str(client.get_model_version_by_alias(name, "champion").version) == expected
    summary = pd.read_csv(tmp_path / "week2" / "summary.csv")
    assert summary["holdout_MAPE"].between(0, 20).all() and summary["registered"].str.contains("version 2").all()
    with pytest.raises(SystemExit):
        main(["train", "--register", "--out", str(tmp_path / "x"), "--data", "north.csv", "--bad-flag"])
    assert main(["train", "--register", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "north.csv")]) == 2
    assert "--register goes with --fleet" in capsys.readouterr().err
