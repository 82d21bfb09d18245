"""Plots people would rather look at than read: a forecast with its history, band and components."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stef_ray.quantiles import band, band_label


def plot_forecast(history: pd.Series, forecast: pd.DataFrame, path: str | Path,
                  actual: pd.Series | None = None, title: str = "", residual_label: str = "residual") -> Path:
    """Top: the last 7 days of load, the forecast and its band (P10–P90 with the default levels; the widest
    its quantile columns give) and actuals when known;
    bottom: the forecast's components in MW, the residual labelled with the models in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2.2, 1]})
    recent = history.iloc[-168:]
    top.plot(recent.index, recent.to_numpy(), color="0.35", lw=1.2, label="load (last 7 days)")
    times = pd.DatetimeIndex(forecast["timestamp"])
    pair = band(forecast.columns)  # P10-P90 with the default levels
    if pair is not None:
        top.fill_between(times, forecast[pair[0]], forecast[pair[1]], color="tab:blue", alpha=0.2,
                         label=band_label(pair))
    top.plot(times, forecast["forecast"], color="tab:blue", lw=2, label="forecast")
    if actual is not None and actual.notna().any():
        top.plot(actual.index, actual.to_numpy(), color="black", lw=1.2, ls="--", label="actual")
    top.set_ylabel("MW")
    top.set_title(title or f"{len(times)} h forecast from {times[0]:%Y-%m-%d %H:%M %Z}")
    top.legend(loc="upper left", ncols=4, fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(times, forecast["trend"] - forecast["trend"].mean(), label="trend (minus its mean)")
    bottom.plot(times, forecast["seasonality"], label="seasonality")
    bottom.plot(times, forecast["residual"], label=residual_label)
    bottom.axhline(0, color="0.6", lw=0.8)
    bottom.set_ylabel("MW")
    bottom.legend(loc="upper left", ncols=3, fontsize=8)
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
