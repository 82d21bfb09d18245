"""How long one refit of the hybrid takes on a long series: PJM East's shipped model (configs/pjme.yaml)
fitted on the data before 2017, the first refit of the 2017 backtest (eight years of per-hour ridge
windows, four walk-forward folds and the served ridges: five ridge fits of 24 per-hour ridges, each with
three reweighting passes). One thread, as `stef-ray` runs. Writes benchmarks/results/refit_speed.md.

    python benchmarks/refit_speed.py              # needs ../shared/data/pjme
    PYTHONPATH=<checkout of an older commit> python benchmarks/refit_speed.py --label old --no-write
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pjme" / "PJME_hourly.csv"
RESULTS = Path(__file__).parent / "results" / "refit_speed.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    from stef_ray.threads import configure_threads

    configure_threads()
    from stef_ray.cli.options import load_data
    from stef_ray.config import TrainConfig
    from stef_ray.config_loading import load_config
    from stef_ray.models.hybrid import HybridModel

    config = load_config(TrainConfig, ROOT / "configs" / "pjme.yaml")
    config.data.path = str(DATA)
    data = load_data(config.data, end="2017-01-01")
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        HybridModel(config.model, data.exog).fit(data)
        seconds.append(time.perf_counter() - started)
    line = f"| {args.label} | {min(seconds):.1f} s | {', '.join(f'{s:.1f}' for s in seconds)} |"
    print(line)
    if not args.no_write:
        RESULTS.write_text("\n".join([
            f"# One refit on a long series ({date.today().isoformat()})", "",
            "`python benchmarks/refit_speed.py`: PJM East's shipped model fitted on the data before 2017 (the "
            "first refit of the 2017 backtest), one thread, alone on the machine.", "",
            "| code | best | runs |", "|---|---|---|", line, ""]))


if __name__ == "__main__":
    main()
