"""``stef-ray forecast``: the 24 hours after the last observation (or after --origin) from a bundle."""

from __future__ import annotations

import argparse

from stef_ray.cli.options import DATA_HELP, add_data_arguments

DESCRIPTION = """\
Forecast the next 24 hours from a model bundle and recent data. Writes forecast_YYYYMMDD_HHMMSS.csv
(timestamp, forecast, trend, seasonality, residual, p10, p50, p90) and a PNG of the last 7 days and the
forecast with its components. When the data holds actual load for the forecast window, prints and writes
MAE, MSE, RMSE, R2, MAPE and SMAPE.

Known future exogenous values (e.g. a temperature forecast) are taken from rows after the last observed
load in --data, or from --future FILE. Where none are given, the same hour one week earlier is used, with
a warning (persistence fallback). A 'holiday' input made from a calendar (--holidays, data.holidays) is
known ahead: the forecast hours take the calendar's flags.

examples:
  stef-ray forecast --model models/production --data data/vic_elec.csv
  stef-ray forecast --model models/production --data data/vic_elec.csv --origin 2014-12-24
  stef-ray forecast --model models:/power-demand-hybrid@champion --data latest.csv --future weather.csv
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "forecast", help="forecast the next 24 h from a bundle", description=DESCRIPTION, epilog=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="models/production",
                        help="bundle folder or models:/NAME@ALIAS (default: %(default)s)")
    parser.add_argument("--origin", metavar="TIME", help="first forecast hour, local time (default: after the last load)")
    parser.add_argument("--future", metavar="FILE", help="known future exogenous values (same columns)")
    parser.add_argument("--out", default=".", metavar="DIR", help="folder for the CSV and PNG (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the neural residual runs")
    parser.add_argument("--influx", action="store_true",
                        help="also send the forecast (and metrics) to InfluxDB (settings from env/.env)")
    add_data_arguments(parser, data_required=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from stef_ray.bundle import load_bundle
    from stef_ray.cli.model_source import resolve_bundle_path
    from stef_ray.cli.options import data_config_with_overrides
    from stef_ray.data import load_hourly
    from stef_ray.data.hourly import LOAD
    from stef_ray.evaluation.metrics import point_metrics
    from stef_ray.exceptions import ConfigError
    from stef_ray.forecasting import forecast_at

    bundle_path = resolve_bundle_path(args.model)
    model, manifest = load_bundle(bundle_path, device=args.device)
    data_config = data_config_with_overrides(manifest.data, args)
    data = load_hourly(data_config)
    future = None
    if args.future:
        future_config = data_config.model_copy(update={"target_col": data_config.target_col})
        future = _load_future(args.future, future_config)
    origin = None
    if args.origin:
        try:
            origin = pd.Timestamp(args.origin)
        except ValueError:
            raise ConfigError(f"--origin {args.origin!r} is not a time; use e.g. '2014-12-24 00:00'") from None
    result = forecast_at(model, data, origin, future)
    for note in result.notes:
        print(f"warning: {note}")
    frame = result.frame
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    csv_path = out_dir / f"forecast_{stamp}.csv"
    frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat())).to_csv(csv_path, index=False, float_format="%.3f")

    version = manifest.model_version or ""
    print(f"forecast from {result.origin:%Y-%m-%d %H:%M %Z} by {bundle_path}{f' (version {version})' if version else ''}")
    for column in ("trend", "seasonality", "residual", "forecast"):
        print(f"  {column:<12} [{frame[column].min():>10.1f}, {frame[column].max():>10.1f}] MW")
    print(f"  residual models: {model.residual_summary()}")
    actual = data.frame[LOAD].reindex(pd.DatetimeIndex(frame["timestamp"]))
    metrics = None
    if actual.notna().all():
        metrics = point_metrics(actual.to_numpy(), frame["forecast"].to_numpy())
        print("  evaluation against actuals: " + "  ".join(f"{k} {v:,.2f}" for k, v in metrics.items()))
        pd.DataFrame([metrics]).to_csv(out_dir / f"metrics_{stamp}.csv", index=False)
    print(f"✓ wrote {csv_path}")
    if not args.no_plot:
        from stef_ray.evaluation.plotting import plot_forecast

        history = data.frame[LOAD].loc[: result.origin - pd.Timedelta(hours=1)]
        png = plot_forecast(history, frame, out_dir / f"forecast_{stamp}.png",
                            actual=actual if actual.notna().any() else None,
                            residual_label=f"residual ({model.residual_summary().split(';')[0]})")
        print(f"✓ wrote {png}")
    if args.influx:
        _send_to_influx(frame, metrics, manifest, result.origin, data)
    del np
    return 0


def _load_future(path: str, data_config):
    """Future exogenous rows: the same columns as the data, without the load column."""
    from stef_ray.data import frame_to_hourly
    from stef_ray.data.loading import read_table

    table = read_table(path)
    if data_config.target_col not in table.columns:
        table[data_config.target_col] = 1.0  # placeholder so validation can run; only exog is used
    return frame_to_hourly(table, data_config, source=path)


def _send_to_influx(frame, metrics, manifest, origin, data) -> None:
    """Forecast, metrics and the recent actuals; points wait in the local spool if InfluxDB is down."""
    from stef_ray.data.hourly import LOAD
    from stef_ray.integrations.influx import InfluxSink

    name, version = manifest.model_name or "local-bundle", manifest.model_version or "0"
    with InfluxSink.from_env() as sink:
        sink.submit_forecast(frame, model_name=name, model_version=version, issue_time=origin)
        if metrics:
            sink.submit_metrics(metrics, model_name=name, model_version=version, issue_time=origin)
        recent = data.frame[[LOAD]].dropna().iloc[-24 * 8 :].rename_axis("timestamp").reset_index()
        sink.submit_actuals(recent, value_column=LOAD)
        delivered = sink.flush(timeout_s=10)
    print("✓ sent to InfluxDB" if delivered
          else "warning: InfluxDB unreachable; points kept in the local spool and sent on the next run")
