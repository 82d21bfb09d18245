"""The quantile levels are named one way and flow through every layer: a model configured with levels other
than the default forecasts, answers, stores and scores those levels and their band, not P10-P90."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stef_ray.quantiles import (
    band,
    band_label,
    coverage_column,
    coverage_of,
    level_of,
    quantile_column,
    quantile_columns,
)


def test_quantiles__names_round_trip_and_the_band_is_the_widest_central_pair():
    assert [quantile_column(q) for q in (0.05, 0.1, 0.5, 0.975)] == ["p5", "p10", "p50", "p97.5"]
    assert level_of("p97.5") == pytest.approx(0.975) and level_of("pinball") is None and level_of("p") is None
    columns = ["timestamp", "forecast", "p90", "p50", "p10", "p97.5", "p2.5", "pinball"]
    assert quantile_columns(columns) == ["p2.5", "p10", "p50", "p90", "p97.5"]
    assert band(columns) == ("p2.5", "p97.5")
    assert band(["p10", "p50", "p90"]) == ("p10", "p90")
    assert band(["p50", "p90"]) is None and band(["forecast"]) is None
    assert band_label(("p5", "p95")) == "P5–P95" and coverage_column(("p10", "p90")) == "coverage_p10_p90"
    assert coverage_of({"model": "hybrid", "MAPE": 2.0, "coverage_p5_p95": 91.0}) == 91.0
    assert np.isnan(coverage_of(pd.Series({"model": "seasonal_naive_week", "MAPE": 5.0})))


@pytest.fixture(scope="module")
def wide_levels(tmp_path_factory, synthetic_hourly, tiny_model_config):
    """A model with P5, P50, P95 (no neural residual: the levels are what is tested), and its bundle."""
    from stef_ray.bundle import save_bundle
    from stef_ray.config import DataConfig
    from stef_ray.models.hybrid import HybridModel

    config = tiny_model_config.model_copy(deep=True)
    config.residual.enabled = False
    config.forecast.quantiles = [0.05, 0.5, 0.95]
    model = HybridModel(config, synthetic_hourly.exog).fit(synthetic_hourly.window(end=pd.Timestamp("2020-02-22", tz="UTC")))
    path = save_bundle(model, tmp_path_factory.mktemp("bundle") / "wide", DataConfig(exog=["temperature", "workday"]))
    return config, model, path


def test_quantiles__other_levels_flow_through_the_backtest_the_answer_the_points_and_the_csv(
    wide_levels, synthetic_hourly,
):
    from stef_ray.evaluation.backtest import run_backtest
    from stef_ray.integrations.influx_points import forecast_lines
    from stef_ray.serving.service import ForecastService

    config, _, path = wide_levels
    result = run_backtest(synthetic_hourly, config, pd.Timestamp("2020-02-22"), 3, 0, ["hybrid", "seasonal_naive_day"])
    hybrid = result.overall.set_index("model").loc["hybrid"]
    assert "coverage_p5_p95" in result.overall.columns and "coverage_p10_p90" not in result.overall.columns
    assert 0 <= coverage_of(hybrid) <= 100 and np.isfinite(hybrid["pinball"])
    assert {"p5", "p50", "p95"} <= set(result.forecasts.columns) and "p10" not in result.forecasts.columns
    rows = result.forecasts[result.forecasts["model"] == "hybrid"]
    assert (rows["p5"] <= rows["p50"]).all() and (rows["p50"] <= rows["p95"]).all()
    # The P5-P95 band is wider than any P10-P90 band would be: it covers at least as many hours.
    inside = ((rows["actual"] >= rows["p5"]) & (rows["actual"] <= rows["p95"])).mean() * 100
    assert coverage_of(hybrid) == pytest.approx(inside)

    # The HTTP answer carries the model's levels under their names.
    frame = synthetic_hourly.frame
    history, future = frame.iloc[-(200 + 24):-24], frame.iloc[-24:]
    body = {"history": [{"timestamp": t.isoformat(), "load": r["load"], "temperature": r["temperature"],
                         "workday": r["workday"]} for t, r in zip(history.index, history.to_dict("records"), strict=True)],
            "future": [{"timestamp": t.isoformat(), "temperature": r["temperature"], "workday": r["workday"]}
                       for t, r in zip(future.index, future.to_dict("records"), strict=True)]}
    service = ForecastService.from_source(str(path))
    answer = service.forecast(service.parse(json.dumps(body)))
    assert quantile_columns(answer) == ["p5", "p50", "p95"] and "p10" not in answer
    assert all(lo <= hi for lo, hi in zip(answer["p5"], answer["p95"], strict=True))

    # ... and the stored points carry them as fields of the same names.
    table = pd.DataFrame({"timestamp": pd.to_datetime(answer["timestamps"], utc=True),
                          **{name: answer[name] for name in ("forecast", "trend", "seasonality", "residual", "p5",
                                                              "p50", "p95")}})
    lines = forecast_lines(table, model_name="m", model_version="1", issue_time=pd.Timestamp(answer["origin"]))
    assert len(lines) == 24 and all(" p5=" in line or ",p5=" in line for line in lines)
    assert all("p95=" in line and "p10=" not in line for line in lines)
