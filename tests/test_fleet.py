"""The fleet file: each series' own file and read options, checked up front with errors naming the series;
one series' backtest as a plain function whose data problems are its outcome, not an exception."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from stef_ray.exceptions import ConfigError
from stef_ray.fleet import backtest_series, load_fleet, summary_table


def test_fleet__series_take_their_own_read_options_and_paths_relative_to_the_file(tmp_path, fleet_files):
    write_series, write_fleet = fleet_files
    write_series(tmp_path, "north", 1)
    write_series(tmp_path, "south", 2, load_column="SOUTH_MW", timestamp_format="%d.%m.%Y %H:%M")
    fleet = load_fleet(write_fleet(tmp_path, {
        "north": {"path": "north.csv"},
        "south": {"path": "south.csv", "target_col": "SOUTH_MW", "timestamp_format": "%d.%m.%Y %H:%M"},
    }))
    south = fleet.data_config("south")
    assert south.path == str(tmp_path / "south.csv")
    assert (south.target_col, south.timestamp_format, south.exog) == ("SOUTH_MW", "%d.%m.%Y %H:%M",
                                                                       ["temperature", "workday"])
    assert fleet.data_config("north").target_col == "load"


@pytest.mark.parametrize(("series", "words"), [
    ({}, "series: name at least one series"),
    ({"east": {"target_col": "x"}}, "series.east: needs a path"),
    ({"east": {"path": "east.csv", "target_column": "x"}}, "series.east.target_column: unknown key"),
])
def test_fleet__a_bad_series_entry_is_one_line_naming_it(tmp_path, fleet_files, series, words):
    _, write_fleet = fleet_files
    with pytest.raises(ConfigError) as caught:
        load_fleet(write_fleet(tmp_path, series))
    message = str(caught.value)
    assert "\n" not in message and words in message


def test_fleet__a_series_with_bad_data_is_a_failed_outcome_with_the_reason(tmp_path, fleet_files, tiny_model_config):
    write_series, write_fleet = fleet_files
    write_series(tmp_path, "north", 1)
    fleet = load_fleet(write_fleet(tmp_path, {"north": {"path": "north.csv", "target_col": "MW"}}))
    outcome = backtest_series("north", fleet.data_config("north"), tiny_model_config, pd.Timestamp("2020-02-20"), 7, 7)
    assert outcome.status == "failed" and "MW" in outcome.error and "\n" not in outcome.error


def test_fleet__summary_lists_ok_series_by_mape_and_failed_ones_last(tiny_model_config):
    from stef_ray.fleet import SeriesOutcome

    table = summary_table([SeriesOutcome("b", "failed", error="bad file"), SeriesOutcome("c", "ok", 3.0, 80.0, 7),
                           SeriesOutcome("a", "ok", 2.0, 81.0, 7)])
    assert list(table["series_id"]) == ["a", "c", "b"]


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "pjm_regions").is_dir(), reason="the PJM zones are not in this workspace")
def test_fleet__the_shipped_pjm_fleet_reads_every_zone_in_its_own_format():
    from stef_ray.data import load_hourly

    fleet = load_fleet(Path(__file__).resolve().parents[1] / "configs" / "pjm_fleet.yaml")
    assert len(fleet.series) == 9
    for series_id in fleet.series:
        config = fleet.data_config(series_id)
        folder = SHARED / ("pjme" if series_id == "PJME" else "pjm_regions")
        data = load_hourly(config, folder / Path(config.path).name)
        frame = data.frame
        assert str(frame.index.tz) == "US/Eastern" and len(frame) > 4 * 8760, series_id
        assert frame.index.is_monotonic_increasing and (frame.index.year == 2017).sum() >= 8760 - 24, series_id
        assert data.exog == ["holiday"], series_id
