"""What ``--fleet`` commands share: reading the fleet file with the flags it replaces refused, a line as each
series finishes, the summary table and file, and the exit status (1 when a series failed)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def fleet_from_args(args: argparse.Namespace):
    from stef_ray.exceptions import ConfigError
    from stef_ray.fleet import load_fleet, split_long_format

    if args.config or args.data:
        raise ConfigError("--fleet names each series' data and the model itself; leave out --config and --data")
    fleet = load_fleet(args.fleet)
    split_long_format(fleet)  # a long file: read once here, its series counted
    if getattr(args, "epochs", None):
        fleet.model.residual.max_epochs = args.epochs
    return fleet


def report_line(score: str) -> Callable:
    """The progress callback: one line per finished series (``score`` names what its MAPE is)."""

    def report(outcome, finished: int, total: int) -> None:
        if outcome.status == "ok":
            what = f"{score} {outcome.mape:.3f} %"
            if not math.isnan(outcome.coverage):  # a backtest's; training has none
                what += f", coverage {outcome.coverage:.1f} %"
            if outcome.best_other:
                name, value = outcome.best_other
                what += f"; best other {name} {value:.3f} %"
            if outcome.bundle:
                what += f" -> {outcome.bundle}"
        else:
            what = f"failed: {outcome.error}"
        print(f"  [{finished}/{total}] {outcome.series_id}: {what} ({outcome.seconds:.0f} s)", flush=True)

    return report


def print_report(run, out: str) -> int:
    """The summary table, one line overall and each failure; writes ``out/summary.csv``. Returns the exit
    status: 1 when a series failed."""
    from stef_ray.fleet import summary_table

    table = summary_table(run.outcomes)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "summary.csv", index=False, float_format="%.4f")
    ok = table[table["status"] == "ok"]
    shown = table.drop(columns=["error", "data_report"] + (["bundle"] if not table["bundle"].any() else []))
    shown = shown.dropna(axis=1, how="all")
    print()
    print(shown.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    mean = f"mean MAPE {ok['MAPE'].mean():.3f} %; " if len(ok) else ""
    others = [column for column in ok.columns if column.startswith("MAPE_")]
    if len(ok) and others:  # a backtest beside baselines or peers: each model's mean over the same series
        means = ", ".join(f"{column[5:]} {ok[column].mean():.3f} %" for column in others)
        mean = f"mean MAPE {ok['MAPE'].mean():.3f} % (others: {means}); "
    print(f"\n{len(ok)} of {len(table)} series ok; {mean}{run.wall_seconds:.0f} s wall "
          f"({len(table) / max(run.wall_seconds, 1e-9) * 60:.2f} series/min); wrote {folder}/summary.csv")
    for failed in run.failed:
        print(f"{failed.series_id} failed: {failed.error}")
    return 1 if run.failed else 0
