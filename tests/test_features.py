"""The time axes (from integer nanoseconds) and the exponential smoothing (one scipy call for a batch):
the fast paths must give pandas' numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stef_ray.features import (
    absolute_hours,
    bridge_day_flag,
    exponential_smoothing,
    interaction_terms,
    wall_clock_hours,
    weekday_flags,
)


@pytest.mark.parametrize("span", [3, 24, 168])
def test_smoothing_of_one_segment_equals_pandas(span):
    values = np.random.default_rng(span).normal(20, 5, size=5000)
    expected = pd.Series(values).ewm(span=span, adjust=False, ignore_na=True).mean().to_numpy()
    np.testing.assert_allclose(exponential_smoothing(values, span, segment_rows=len(values)), expected,
                               rtol=1e-13, atol=0)


def test_smoothing_skips_nans_as_pandas_does():
    values = np.array([np.nan, 1.0, np.nan, np.nan, 3.0, 4.0])
    expected = pd.Series(values).ewm(span=3, adjust=False, ignore_na=True).mean().to_numpy()
    np.testing.assert_array_equal(exponential_smoothing(values, 3), expected)
    assert np.isnan(exponential_smoothing(values, 3)[0])


def test_smoothing_is_causal():
    values = np.random.default_rng(0).normal(size=300)
    changed = values.copy()
    changed[200:] += 50
    np.testing.assert_array_equal(exponential_smoothing(values, 24)[:200], exponential_smoothing(changed, 24)[:200])


def test_wall_clock_follows_local_time_across_dst():
    # Melbourne leaves summer time on 2014-04-06 03:00 local: 02:00 comes twice on the wall clock.
    index = pd.date_range("2014-04-05 14:00", periods=4, freq="h", tz="UTC").tz_convert("Australia/Melbourne")
    wall = wall_clock_hours(index)
    np.testing.assert_array_equal(np.diff(wall), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(np.diff(absolute_hours(index)), [1.0, 1.0, 1.0])
    assert wall[0] == (pd.Timestamp("2014-04-06 01:00") - pd.Timestamp("1970-01-01")) / pd.Timedelta(hours=1)


@pytest.mark.parametrize("unit", ["s", "us", "ns"])
def test_hours_do_not_depend_on_the_index_unit(unit):
    index = pd.date_range("2020-01-01", periods=5, freq="h", tz="UTC").as_unit(unit)
    expected = (index.tz_localize(None) - pd.Timestamp("1970-01-01")) / pd.Timedelta(hours=1)
    np.testing.assert_array_equal(absolute_hours(index), expected.to_numpy())
    np.testing.assert_array_equal(wall_clock_hours(index.tz_localize(None)), expected.to_numpy())


def test_smoothing_of_segments_restarts_at_each_segment():
    values = np.random.default_rng(1).normal(20, 5, size=3 * 50)
    values[60] = np.nan  # one segment with a gap goes the NaN-tolerant way
    together = exponential_smoothing(values, 24, segment_rows=50)
    alone = np.concatenate([exponential_smoothing(values[i:i + 50], 24) for i in (0, 50, 100)])
    np.testing.assert_allclose(together, alone, rtol=1e-13)
    finite = np.where(np.isnan(values), 1.0, values)
    np.testing.assert_allclose(exponential_smoothing(finite, 24, segment_rows=50),
                               np.concatenate([exponential_smoothing(finite[i:i + 50], 24) for i in (0, 50, 100)]),
                               rtol=1e-13)


def _dates(index: pd.DatetimeIndex, flag: np.ndarray) -> list[str]:
    return sorted({f"{day:%a %Y-%m-%d}" for day in index[flag > 0].tz_localize(None).normalize()})


def test_bridge_day__friday_after_thursday_holiday_and_monday_before_tuesday_holiday():
    index = pd.date_range("2017-06-26", "2017-07-09 23:00", freq="h", tz="US/Eastern")
    holiday = (index.tz_localize(None).normalize() == "2017-07-04").astype(float)  # a Tuesday
    assert _dates(index, bridge_day_flag(index, holiday)) == ["Mon 2017-07-03"]
    index = pd.date_range("2017-11-20", "2017-11-30 23:00", freq="h", tz="US/Eastern")
    holiday = (index.tz_localize(None).normalize() == "2017-11-23").astype(float)  # Thanksgiving
    assert _dates(index, bridge_day_flag(index, holiday)) == ["Fri 2017-11-24"]


def test_bridge_day__a_neighbour_outside_the_frame_counts_only_if_weekend():
    # The frame ends on Friday 24 Nov: Saturday is off by the calendar, Thursday by the flag.
    index = pd.date_range("2017-11-22", "2017-11-24 23:00", freq="h", tz="US/Eastern")
    holiday = (index.tz_localize(None).normalize() == "2017-11-23").astype(float)
    assert _dates(index, bridge_day_flag(index, holiday)) == ["Fri 2017-11-24"]
    # A Monday at the frame's end whose Tuesday holiday is not in the frame: no bridge known.
    index = pd.date_range("2017-07-01", "2017-07-03 23:00", freq="h", tz="US/Eastern")
    assert bridge_day_flag(index, np.zeros(len(index))).sum() == 0


def test_bridge_day__segments_are_judged_apart():
    # Two requests for the same Thursday and Friday, one marking Thursday a holiday and one not: only the
    # first one's Friday is a bridge day. Judged as one frame, the same dates would share the holiday.
    days = pd.date_range("2017-11-23", periods=48, freq="h", tz="US/Eastern")
    index = days.append(days)
    holiday = np.r_[np.ones(24), np.zeros(72)]
    flag = bridge_day_flag(index, holiday, segment_rows=48)
    np.testing.assert_array_equal(flag, np.r_[np.zeros(24), np.ones(24), np.zeros(48)])
    assert bridge_day_flag(index, holiday)[72:].sum() == 24


def test_interaction_terms__every_pair_left_slowest():
    left = np.array([[1.0, 2.0], [3.0, 4.0]])
    right = np.array([[10.0, 20.0, 30.0], [1.0, 0.0, -1.0]])
    np.testing.assert_array_equal(
        interaction_terms(left, right), [[10, 20, 30, 20, 40, 60], [3, 0, -3, 4, 0, -4]]
    )


def test_weekday_flags__local_day_of_week_monday_first():
    index = pd.DatetimeIndex(["2021-01-03 23:30", "2021-01-04 00:30"]).tz_localize("Europe/Amsterdam")
    assert weekday_flags(index).argmax(axis=1).tolist() == [6, 0]  # Sunday, Monday on the local clock
    assert weekday_flags(index.tz_convert("UTC")).argmax(axis=1).tolist() == [6, 6]  # both Sunday in UTC


def test_wall_clock_hours__reused_for_the_same_index_and_never_for_another():
    """One design reads the wall clock several times; the cached answer must be the index's own, and
    read-only, since every caller shares it."""
    from stef_ray.features import wall_clock_hours, weekday_flags

    first = pd.date_range("2024-03-30", periods=72, freq="h", tz="Europe/Amsterdam")  # a DST change
    hours = wall_clock_hours(first)
    assert wall_clock_hours(first) is hours
    assert not hours.flags.writeable
    other = pd.date_range("2024-03-30", periods=72, freq="h", tz="UTC")
    assert not np.array_equal(wall_clock_hours(other), hours)  # only Amsterdam's wall clock skips an hour
    np.testing.assert_array_equal(weekday_flags(first).argmax(axis=1), first.dayofweek.to_numpy())


def test_season_weights__gaussian_in_days_of_the_year_across_new_year():
    from stef_ray.features import season_weights

    reference = pd.Timestamp("2017-12-20 00:00", tz="US/Eastern")
    index = pd.DatetimeIndex(["2016-12-20 00:00", "2017-01-09 00:00", "2017-06-20 12:00", "2017-11-30 00:00"],
                             tz="US/Eastern")
    weight = season_weights(index, reference, days=20)
    # ±20 days, within the quarter day a 365.25-day year leaves
    np.testing.assert_allclose(weight[[0, 1, 3]], [1.0, np.exp(-0.5), np.exp(-0.5)], atol=0.01)
    assert weight[2] < 1e-15  # half a year away
    assert season_weights(index, reference, days=20, floor=0.1)[2] == pytest.approx(0.1)
