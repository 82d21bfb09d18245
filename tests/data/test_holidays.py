"""Holiday calendars: pandas' US federal one, NERC's six and the `holidays` package's countries and regions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.config import DataConfig, TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.data import frame_to_hourly
from stef_ray.data.builtin import vic_elec
from stef_ray.data.holidays import holiday_flags
from stef_ray.exceptions import ConfigError, DataError


def test_holidays__victoria_calendar_marks_exactly_the_weekdays_off_in_the_real_vic_elec_data():
    # The built-in data's `workday` column comes from the source (AEMO/fpp2), not from this package: on
    # the 261 weekdays of 2014 its days off must be the calendar's holidays, Melbourne Cup day included.
    frame = vic_elec().set_index("timestamp")
    flags = pd.Series(holiday_flags(frame.index, "AU-VIC"), index=frame.index)
    weekdays = frame.index.dayofweek < 5
    day_off = (frame["workday"] == 0)[weekdays].groupby(frame.index[weekdays].date).first()
    holiday = (flags == 1)[weekdays].groupby(frame.index[weekdays].date).first()
    assert len(day_off) == 261 and day_off.sum() == 10
    assert (day_off == holiday).all()
    assert holiday[pd.Timestamp("2014-11-04").date()]  # Melbourne Cup: Victoria's, not Australia's
    nation = pd.Series(holiday_flags(frame.index, "AU"), index=frame.index)
    assert nation.loc["2014-11-04"].eq(0).all() and nation.loc["2014-12-25"].eq(1).all()


def test_holidays__country_calendar_follows_the_local_date_of_each_hour():
    # 14 July (Bastille Day) in Paris: hours 00:00-23:00 local, which begin at 22:00 UTC the day before.
    table = pd.DataFrame({
        "timestamp": pd.date_range("2024-07-12 22:00", periods=72, freq="h", tz="UTC").map(lambda t: t.isoformat()),
        "load": np.full(72, 1000.0),
    })
    data = frame_to_hourly(table, DataConfig(holidays="fr", timezone="Europe/Paris"))
    assert data.exog == ["holiday"]
    flags = data.frame["holiday"]
    assert flags.loc["2024-07-14"].eq(1).all() and len(flags.loc["2024-07-14"]) == 24
    assert flags.drop(flags.loc["2024-07-14"].index).eq(0).all()


def test_holidays__us_stays_the_federal_calendar():
    index = pd.date_range("2017-01-01", "2017-12-31 23:00", freq="h", tz="US/Eastern")
    days = pd.Index(index[holiday_flags(index, "US") == 1].normalize().unique())
    assert len(days) == 10  # the federal ten (2017: New Year's observed on 2 Jan), no state holidays
    assert pd.Timestamp("2017-01-02", tz="US/Eastern") in days


def test_holidays__nerc_keeps_the_six_days_load_drops_sunday_to_monday_saturday_stays():
    index = pd.date_range("2015-01-01", "2017-12-31 23:00", freq="h", tz="US/Eastern")
    flags = pd.Series(holiday_flags(index, " nerc"), index=index)
    days = {str(day) for day in flags[flags == 1].index.date}
    assert len(days) == 18  # six a year
    assert {"2016-11-24", "2016-05-30", "2016-09-05", "2017-07-04"} <= days
    assert "2016-12-26" in days and "2016-12-25" not in days  # Christmas 2016 was a Sunday: Monday instead
    assert "2015-07-04" in days and "2015-07-03" not in days  # 4 July 2015 was a Saturday: it stays there
    # Days most people work, which the federal calendar flags: Martin Luther King, Presidents', Columbus, Veterans.
    federal = pd.Series(holiday_flags(index, "US"), index=index)
    for day in ("2016-01-18", "2016-02-15", "2016-10-10", "2016-11-11"):
        assert flags.loc[day].eq(0).all() and federal.loc[day].eq(1).all()
    assert flags.loc["2016-11-24"].eq(1).all() and len(flags.loc["2016-11-24"]) == 24


@pytest.mark.parametrize(
    ("name", "expected"),
    [("XX", "unknown holiday calendar 'XX': use an ISO 3166 country code"),
     ("XX", "; or NERC for the six US holidays on which load drops"),
     ("AU-ZZ", "unknown holiday calendar 'AU-ZZ': AU has no region ZZ (AU-ACT, ")],
)
def test_holidays__unknown_calendar_is_a_config_error_naming_the_key(tmp_path, name, expected):
    path = tmp_path / "train.yaml"
    path.write_text(f"data:\n  holidays: {name}\n")
    with pytest.raises(ConfigError, match=r"data\.holidays: ") as err:
        load_config(TrainConfig, path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_holidays__a_holiday_column_already_in_the_data_is_refused_not_overwritten():
    table = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=48, freq="h").strftime("%Y-%m-%d %H:%M"),
        "load": np.full(48, 1000.0),
        "holiday": np.zeros(48),
    })
    with pytest.raises(DataError, match="already has a 'holiday' column") as err:
        frame_to_hourly(table, DataConfig(exog=["holiday"], holidays="GB-ENG"), source="in.csv")
    assert str(err.value).startswith("in.csv: ")
