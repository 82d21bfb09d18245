"""The data layer: every bad-input case gives its one-line error; DST, hour-ending, sub-hourly, gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.config import DataConfig
from stef_ray.data import frame_to_hourly, load_hourly
from stef_ray.data.loading import read_table
from stef_ray.exceptions import DataError


def _table(hours: int = 48, start: str = "2024-01-01 00:00", freq: str = "h") -> pd.DataFrame:
    index = pd.date_range(start, periods=hours, freq=freq)
    return pd.DataFrame({
        "timestamp": index.strftime("%Y-%m-%d %H:%M"),
        "load": 1000 + 100 * np.sin(np.arange(hours) / 24 * 2 * np.pi),
        "temperature": np.linspace(10, 20, hours),
    })


def _error(table: pd.DataFrame, **config) -> str:
    with pytest.raises(DataError) as caught:
        frame_to_hourly(table, DataConfig(**config), source="in.csv")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_loading__missing_column_names_it_and_the_flag():
    message = _error(_table(), target_col="demand")
    assert "column 'demand' not found" in message and "--target-col" in message


def test_loading__missing_exog_column():
    assert "--exog" in _error(_table(), exog=["humidity"])


def test_loading__unparsable_timestamp_names_the_row():
    table = _table()
    table.loc[5, "timestamp"] = "yesterday"
    message = _error(table)
    assert "row 7" in message and "'yesterday'" in message and "--timestamp-format" in message


def test_loading__unparsable_number_names_column_and_row():
    table = _table()
    table["load"] = table["load"].astype(object)
    table.loc[3, "load"] = "12,5 MW"
    message = _error(table)
    assert "column 'load' row 5" in message and "not a number" in message


def test_loading__non_positive_load_is_refused():
    table = _table()
    table.loc[10, "load"] = 0.0
    message = _error(table)
    assert "row 12" in message and "not positive" in message


def test_loading__unsorted_refused_unless_sort():
    table = _table().iloc[::-1].reset_index(drop=True)
    assert "not sorted" in _error(table) and "--sort" in _error(table)
    data = frame_to_hourly(table, DataConfig(sort=True))
    assert data.frame.index.is_monotonic_increasing and len(data) == 48


def test_loading__duplicated_timestamp_refused():
    table = pd.concat([_table(), _table().iloc[[5]]]).sort_values("timestamp", kind="stable").reset_index(drop=True)
    assert "appears twice" in _error(table)


def test_loading__coarser_than_hourly_refused():
    assert "not hourly" in _error(_table(freq="2h"))


def test_loading__sub_hourly_aggregated_to_hourly_means():
    table = _table(hours=96, freq="30min")
    data = frame_to_hourly(table, DataConfig())
    assert len(data) == 48
    expected = table["load"].to_numpy().reshape(-1, 2).mean(axis=1)
    np.testing.assert_allclose(data.load, expected)
    assert data.report.source_step_minutes == 30


def test_loading__short_gap_interpolated_and_reported():
    table = _table().drop(index=[10, 11]).reset_index(drop=True)
    data = frame_to_hourly(table, DataConfig())
    assert len(data) == 48 and np.isfinite(data.load).all()
    assert data.report.interpolated == [(data.frame.index[10], 2)]


def test_loading__long_gap_kept_missing_and_reported():
    table = _table(hours=96).drop(index=range(20, 30)).reset_index(drop=True)
    data = frame_to_hourly(table, DataConfig())
    assert np.isnan(data.load[20:30]).all() and np.isfinite(data.load[:20]).all()
    assert data.report.long_gaps == [(data.frame.index[20], 10)]
    assert any("gap of 10 h" in line for line in data.report.lines())


def test_loading__flatline_of_a_day_reported():
    table = _table(hours=96)
    table.loc[30:60, "load"] = 777.0
    data = frame_to_hourly(table, DataConfig())
    assert data.report.flatlines and data.report.flatlines[0][1] == 31


def test_loading__spring_forward_day_has_23_hours_without_shift():
    # Europe/Amsterdam, 2024-03-31: 02:00 does not exist; a meter writes 00:00, 01:00, 03:00, ...
    index = pd.date_range("2024-03-31 00:00", "2024-03-31 23:00", freq="h", tz="Europe/Amsterdam")
    table = pd.DataFrame({"timestamp": index.tz_localize(None).strftime("%Y-%m-%d %H:%M"),
                          "load": np.arange(1, len(index) + 1, dtype=float)})
    data = frame_to_hourly(table, DataConfig(timezone="Europe/Amsterdam"))
    assert len(data) == 23
    assert not data.report.interpolated  # nothing invented: the hour never existed
    assert data.frame.loc["2024-03-31 03:00", "load"].item() == 3.0  # values stay on their hours


def test_loading__fall_back_day_has_25_hours_with_repeated_hour_in_order():
    index = pd.date_range("2024-10-27 00:00", "2024-10-27 23:00", freq="h", tz="Europe/Amsterdam")
    assert len(index) == 25
    table = pd.DataFrame({"timestamp": index.tz_localize(None).strftime("%Y-%m-%d %H:%M"),
                          "load": np.arange(1, 26, dtype=float)})
    data = frame_to_hourly(table, DataConfig(timezone="Europe/Amsterdam"))
    assert len(data) == 25
    np.testing.assert_array_equal(data.load, np.arange(1, 26))
    assert (data.frame.index == index).all()


def test_loading__hour_ending_shifts_to_hour_beginning_pjm_style():
    # PJM writes the repeated fall-back hour as '02:00' twice in hour-ending time.
    labels = ["2014-11-02 01:00", "2014-11-02 02:00", "2014-11-02 02:00", "2014-11-02 03:00"]
    table = pd.DataFrame({"timestamp": labels, "load": [1.0, 2.0, 3.0, 4.0]})
    data = frame_to_hourly(table, DataConfig(timezone="US/Eastern", hour_ending=True))
    utc = data.frame.index.tz_convert("UTC")
    assert list(utc.strftime("%H:%M")) == ["04:00", "05:00", "06:00", "07:00"]
    np.testing.assert_array_equal(data.load, [1, 2, 3, 4])


def test_loading__aware_timestamps_converted_to_timezone():
    table = _table()
    table["timestamp"] = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC").map(lambda t: t.isoformat())
    data = frame_to_hourly(table, DataConfig(timezone="Asia/Seoul"))
    assert str(data.frame.index.tz) == "Asia/Seoul" and data.frame.index[0].hour == 9


def test_loading__offsets_that_change_with_dst_read_as_instants_without_a_warning():
    # What `stef-ray data` and pandas write for a zone with DST: -04:00 and -05:00 in one column. pandas
    # warns that mixing them will one day raise; the loader reads them as instants either way.
    import warnings

    table = _table(hours=72)
    stamps = pd.date_range("2021-11-06", periods=72, freq="h", tz="America/New_York")  # clocks back on the 7th
    table["timestamp"] = stamps.map(lambda t: t.isoformat())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = frame_to_hourly(table, DataConfig(timezone="America/New_York"))
    assert data.frame.index.equals(pd.DatetimeIndex(stamps, name="timestamp"))


def test_loading__us_holiday_flag_added():
    table = _table(hours=24 * 10, start="2024-07-01 00:00")
    data = frame_to_hourly(table, DataConfig(holidays="US", timezone="US/Eastern"))
    assert "holiday" in data.exog
    flags = data.frame["holiday"]
    assert flags.loc["2024-07-04"].eq(1).all() and flags.loc["2024-07-05"].eq(0).all()


def test_loading__missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_hourly(DataConfig(), tmp_path / "nope.csv")
    bad = tmp_path / "data.xlsx"
    bad.write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_hourly(DataConfig(), bad)


def test_loading__parquet_round_trip(tmp_path):
    table = _table()
    table.to_parquet(tmp_path / "d.parquet")
    data = load_hourly(DataConfig(exog=["temperature"]), tmp_path / "d.parquet")
    assert len(data) == 48 and data.exog == ["temperature"]


def test_loading__day_first_format(tmp_path):
    table = _table(hours=30, start="2024-01-12 00:00")
    table["timestamp"] = pd.to_datetime(table["timestamp"]).dt.strftime("%d-%m-%Y %H:%M")
    data = frame_to_hourly(table, DataConfig(timestamp_format="%d-%m-%Y %H:%M"))
    assert data.frame.index[0] == pd.Timestamp("2024-01-12", tz="UTC")


def test_loading__a_series_without_a_day_off_input_is_told_how_to_add_one():
    def hint(data) -> list[str]:
        return [line for line in data.report.lines() if line.startswith("no holiday or working-day input")]

    plain = frame_to_hourly(_table(), DataConfig(exog=["temperature"]))
    assert len(hint(plain)) == 1 and "--holidays" in hint(plain)[0]
    assert hint(frame_to_hourly(_table(), DataConfig(holidays="NERC"))) == []
    table = _table().assign(workday=1.0)  # a 0/1 column of its own (all ones is still 0/1)
    assert hint(frame_to_hourly(table, DataConfig(exog=["temperature", "workday"]))) == []


def _entsoe_table() -> pd.DataFrame:
    # As the ENTSO-E Transparency Platform exports a country's load: interval timestamps on the local wall
    # clock (the fall-back hour written twice, summer time first), '-' where no value is published yet.
    utc = pd.date_range("2015-10-24 22:00", periods=72, freq="h", tz="UTC")  # 24-26 Oct 2015, Berlin
    local = utc.tz_convert("Europe/Berlin").tz_localize(None)
    load = (50_000 + 5_000 * np.sin(np.arange(72) / 24 * 2 * np.pi)).round(0).astype(object)
    load[-3:] = "-"
    load[30] = "n/e"
    zone = utc.tz_convert("Europe/Berlin").strftime(" (%Z)")  # newer exports mark the zone on the DST day
    marks = np.where(local.normalize() == pd.Timestamp("2015-10-25"), zone, "")
    return pd.DataFrame({
        "Time (CET/CEST)": [f"{t:%d.%m.%Y %H:%M}{m} - {t + pd.Timedelta(hours=1):%d.%m.%Y %H:%M}{m}"
                            for t, m in zip(local, marks, strict=True)],
        "Actual Total Load [MW] - Germany (DE)": load,
    })


def test_loading__entsoe_export_reads_interval_starts_and_dashes_as_missing():
    config = DataConfig(timestamp_col="Time (CET/CEST)", target_col="Actual Total Load [MW] - Germany (DE)",
                        timestamp_format="%d.%m.%Y %H:%M", timezone="Europe/Berlin")
    data = frame_to_hourly(_entsoe_table(), config, source="entsoe.csv")
    index = data.frame.index
    assert index[0] == pd.Timestamp("2015-10-25 00:00", tz="Europe/Berlin")  # the start, not the end
    assert len(index) == 72 and (np.diff(index.asi8) == 3600 * 10**9).all()  # the 25-hour day kept whole
    assert np.isnan(data.load[-3:]).all()  # trailing '-': missing, not an error
    assert np.isfinite(data.load[:-3]).all()  # 'n/e' inside: an interpolated one-hour gap
    assert data.report.interpolated == [(index[30], 1)]
    assert any("intervals ('start - end'" in line for line in data.report.lines())


def test_loading__entsoe_intervals_with_hour_ending_is_a_one_line_error():
    config = DataConfig(timestamp_col="Time (CET/CEST)", target_col="Actual Total Load [MW] - Germany (DE)",
                        timestamp_format="%d.%m.%Y %H:%M", timezone="Europe/Berlin", hour_ending=True)
    message = _error(_entsoe_table(), **config.model_dump(exclude_defaults=True))
    assert "holds intervals ('start - end')" in message and "drop --hour-ending" in message


def test_loading__a_dash_in_an_iso_offset_is_not_an_interval():
    table = _table()
    table["timestamp"] = pd.date_range("2024-01-01", periods=48, freq="h", tz="US/Eastern").map(lambda t: t.isoformat())
    data = frame_to_hourly(table, DataConfig(timezone="US/Eastern"))
    assert data.frame.index[0] == pd.Timestamp("2024-01-01 00:00", tz="US/Eastern")
    assert not any("intervals" in line for line in data.report.lines())


@pytest.mark.parametrize(
    ("text", "note"),
    [("Datum;Last, MW;Temperatur\n01.01.2024 00:00;51234,5;-1,5\n01.01.2024 01:00;50000;-2\n", "semicolons"),
     ("timestamp\tload\ttemperature\n2024-01-01 00:00\t51234.5\t-1.5\n2024-01-01 01:00\t50000\t-2\n", "tabs")],
)
def test_loading__csv_delimiter_is_read_off_the_header(tmp_path, text, note):
    path = tmp_path / "load.csv"
    path.write_text(text)
    table = read_table(path)
    assert table.shape == (2, 3), note
    assert table.iloc[0, 1] == 51234.5 and table.iloc[1, 2] == -2  # decimal commas too, after semicolons


def test_loading__a_windows_encoded_csv_is_read(tmp_path):
    path = tmp_path / "load.csv"
    path.write_bytes("Zeit;Last [MW];Temperatur [°C]\n01.01.2024 00:00;51234,5;-1,5\n".encode("cp1252"))
    table = read_table(path)
    assert list(table.columns) == ["Zeit", "Last [MW]", "Temperatur [°C]"] and table.iloc[0, 1] == 51234.5


def test_loading__hour_ending_24_00_is_midnight_of_the_next_day():
    # ERCOT-style: 'Hour Ending' from 01:00 to 24:00 each day, US Central time.
    days = pd.date_range("2021-03-01", periods=3, freq="D")
    stamps = [f"{day:%m/%d/%Y} {hour:02d}:00" for day in days for hour in range(1, 25)]
    table = pd.DataFrame({"Hour Ending": stamps, "ERCOT": np.linspace(40_000, 45_000, len(stamps))})
    config = DataConfig(timestamp_col="Hour Ending", target_col="ERCOT", timestamp_format="%m/%d/%Y %H:%M",
                        timezone="US/Central", hour_ending=True)
    data = frame_to_hourly(table, config)
    index = data.frame.index
    assert len(index) == 72 and (np.diff(index.asi8) == 3600 * 10**9).all()
    assert index[0] == pd.Timestamp("2021-03-01 00:00", tz="US/Central")  # 01:00 ending: 00:00-01:00
    assert index[23] == pd.Timestamp("2021-03-01 23:00", tz="US/Central")  # '03/01/2021 24:00' ending
    assert data.load[23] == pytest.approx(table["ERCOT"].iloc[23])


def test_loading__a_truncated_gzip_is_a_one_line_error(tmp_path):
    import gzip

    packed = gzip.compress(("timestamp,load\n" + "2024-01-01 00:00,1000\n" * 5000).encode())
    path = tmp_path / "load.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"load\.csv\.gz: cannot be read \(Compressed file ended") as caught:
        read_table(path)
    assert "\n" not in str(caught.value)


def test_loading__a_glob_reads_every_delivery_and_the_later_file_wins_where_they_overlap(tmp_path):
    index = pd.date_range("2020-03-01", periods=24 * 6, freq="h")
    load = 1000 + np.arange(len(index), dtype=float)
    folder = tmp_path / "deliveries"
    folder.mkdir()
    # Two weekly files that overlap by a day; the second corrects that day. Written out of time order.
    second = pd.DataFrame({"timestamp": index[72:], "load": load[72:]})
    second.loc[:23, "load"] += 0.5
    second.to_csv(folder / "week_2.csv", index=False)
    pd.DataFrame({"timestamp": index[:96], "load": load[:96]}).to_csv(folder / "week_1.csv", index=False)
    (folder / "notes.txt").write_text("not data")

    data = load_hourly(DataConfig(path=str(folder / "week_*.csv")))
    expected = load.copy()
    expected[72:96] += 0.5
    np.testing.assert_array_equal(data.frame["load"].to_numpy(), expected)
    assert len(data.frame) == len(index)
    assert "read 2 files matching" in "\n".join(data.report.lines())

    with pytest.raises(DataError, match=r"no file matches .*week_9\*.csv; check the folder"):
        load_hourly(DataConfig(path=str(folder / "week_9*.csv")))


def _three_weeks() -> pd.DataFrame:
    """Three weeks of a daily shape between about 800 and 1,200 MW, with one dip to a tenth at noon of
    day 10, a run of four hours at a third on day 14, and one real peak at 2.2 times the week's median."""
    from stef_ray.data.synthetic import synthetic_load

    table = synthetic_load(hours=24 * 21, seed=4, base_mw=1_000.0, temperature_effect=0.0)
    table.loc[24 * 10 + 12, "load"] /= 10
    table.loc[24 * 14 + 2 : 24 * 14 + 5, "load"] /= 3
    table.loc[24 * 17 + 15, "load"] *= 2.0
    return table[["timestamp", "load"]]


def test_loading__outliers_are_reported_and_repaired_as_gaps():
    table = _three_weeks()
    data = frame_to_hourly(table, DataConfig())
    load = data.frame["load"]
    flagged = [ts for ts, _, _ in data.report.outliers]
    assert flagged == [load.index[24 * 10 + 12], *load.index[24 * 14 + 2 : 24 * 14 + 6]]
    # The single hour is interpolated between its neighbours; the four-hour run is a gap kept out of training.
    dip = 24 * 10 + 12
    assert load.iloc[dip] == pytest.approx((table["load"][dip - 1] + table["load"][dip + 1]) / 2)
    assert load.iloc[24 * 14 + 2 : 24 * 14 + 6].isna().all()
    assert data.report.long_gaps == [(load.index[24 * 14 + 2], 4)]
    assert load.iloc[24 * 17 + 15] == pytest.approx(table["load"][24 * 17 + 15])  # a peak at 2x stays
    line = next(line for line in data.report.lines() if "outlier" in line)
    assert line.startswith("5 outlier hour(s) of load") and "keep them with outlier_ratio: 0" in line


def test_loading__outlier_ratio_zero_keeps_every_value():
    table = _three_weeks()
    data = frame_to_hourly(table, DataConfig(outlier_ratio=0))
    assert data.report.outliers == [] and data.frame["load"].notna().all()
    np.testing.assert_allclose(data.frame["load"].to_numpy(), table["load"].to_numpy())
