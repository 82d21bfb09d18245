"""The monitor's Flux query (InfluxDB 2, which cannot run here) through Flux's own parser and type checker."""

from __future__ import annotations

import pandas as pd

from stef_ray.integrations.influx_points import (
    ACTUAL_FIELD,
    MEASUREMENT_ACTUAL,
    MEASUREMENT_FORECAST,
    TAG_ISSUE_TIME,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_SERIES_ID,
)
from stef_ray.ops.monitor_readers import FORECAST_FIELD, flux_query


def test_monitor__its_flux_queries_pass_fluxs_parser_and_type_checker(flux_errors):
    start, end = pd.Timestamp("2026-11-01", tz="UTC"), pd.Timestamp("2026-11-30 23:00", tz="UTC")
    queries = {
        "forecasts": flux_query("stef_ray", MEASUREMENT_FORECAST, FORECAST_FIELD,
                                (TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_ISSUE_TIME, TAG_SERIES_ID), start, end),
        "actuals": flux_query("stef_ray", MEASUREMENT_ACTUAL, ACTUAL_FIELD, (TAG_SERIES_ID,), start, end),
        # A bucket name with a quote in it stays one string literal.
        "quoted bucket": flux_query('ops "east"', MEASUREMENT_ACTUAL, ACTUAL_FIELD, (), start, end),
    }
    assert flux_errors(queries) == {name: [] for name in queries}
    assert "stop: 2026-11-30T23:00:01Z" in queries["actuals"]  # the window's last hour is read
