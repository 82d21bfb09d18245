"""Read CSV/Parquet load data into one regular hourly grid, with one-line errors for bad input.

Order of work: columns -> timestamps (parse, localise with DST, hour-ending shift) -> numbers ->
order and duplicates -> resolution (sub-hourly means) -> regular grid -> gaps and flat lines.

Exports of the ENTSO-E Transparency Platform, where most European national load comes from, read as
they are: their timestamps are intervals (``01.01.2015 00:00 - 01.01.2015 01:00``), of which the start
is read, and a value not (yet) there is written ``-`` or ``n/e``, which count as missing. A CSV whose
header is split by ``;`` is read with ``;`` between fields and ``,`` as the decimal mark (tab: tabs).
"""

from __future__ import annotations

import gzip
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from stef_ray.config import DataConfig
from stef_ray.data.holidays import HOLIDAY_COLUMN, holiday_flags
from stef_ray.data.hourly import LOAD, DataReport, HourlyData
from stef_ray.exceptions import DataError
from stef_ray.features import is_binary

OUTLIER_WINDOW_HOURS = 24 * 7  # the week around an hour that its load is judged against
logger = logging.getLogger(__name__)

# 'start - end', spaces around the dash required; a zone marker after the start, as ENTSO-E writes on DST
# days ('26.10.2025 02:00 (CEST) - ...'), is dropped: the repeated hour is read in file order anyway.
INTERVAL = re.compile(r"^\s*(\S.*?)(?:\s*\([A-Za-z]{2,5}\))?\s+-\s+\S.*$")
END_OF_DAY = r"\s24:(?=00(?::00)?$)"  # ' 24:00' or ' 24:00:00' at the end; the match is ' 24:
MISSING_MARKERS = ("-", "n/e")  # ENTSO-E's 'no value' and 'not expected'; pandas already reads N/A, NA

FLATLINE_HOURS = 24


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as strings-or-numbers, without interpreting timestamps yet."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found; pass an existing CSV or Parquet file with --data")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            dialect = _csv_dialect(path)
            try:
                return pd.read_csv(path, **dialect)
            except UnicodeDecodeError:
                # Not UTF-8: spreadsheet exports on Windows write cp1252 ('Originalauflösung', '°C').
                return pd.read_csv(path, encoding="cp1252", **dialect)
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot be read ({first_line}); check it is a valid CSV/Parquet file") from None
    raise DataError(f"{path}: unsupported file type '{suffix}'; use .csv or .parquet")


def _csv_dialect(path: Path) -> dict:
    """``read_csv`` arguments for the file's delimiter, read off its header line: European exports (ENTSO-E
    in some locales, national statistics offices) write ``;`` between fields and ``,`` before decimals,
    which read as one column otherwise. Plain comma-separated files keep pandas' defaults."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as file:
        header = file.readline()
    commas, semicolons, tabs = (header.count(sep) for sep in (",", ";", "\t"))
    if semicolons and semicolons >= commas:  # a tie: a comma inside a column name ('load, MW') is likelier
        return {"sep": ";", "decimal": ","}
    if tabs > commas:
        return {"sep": "\t"}
    return {}


GLOB_CHARS = set("*?[")


def load_hourly(config: DataConfig, path: str | Path | None = None) -> HourlyData:
    """Read ``path`` (or ``config.path``) and return the validated hourly grid.

    A path with ``*``, ``?`` or ``[`` is a glob: every matching file (e.g. one per weekly delivery) is read,
    in name order, and where files overlap the later one's row wins (a corrected delivery replaces the
    first); rows are then sorted by time, whatever order the files came in."""
    path = path or config.path
    if not path:
        raise DataError("no data given; pass --data FILE (or data.path, or data.store for the time-series store, in the config)")
    if not GLOB_CHARS & set(str(path)):
        return frame_to_hourly(read_table(path), config, source=str(path))
    pattern = Path(path).expanduser()
    files = sorted(p for p in pattern.parent.glob(pattern.name) if p.is_file())
    if not files:
        raise DataError(f"no file matches {path}; check the folder and the pattern (data.path / --data)")
    tables = [read_table(file) for file in files]
    for file, table in zip(files, tables, strict=True):
        if config.timestamp_col not in table.columns:
            raise DataError(f"{file}: column '{config.timestamp_col}' not found; every file of {path} needs it "
                            "(check --timestamp-col)")
    # Across files only: a timestamp written twice inside one file (a DST fall-back hour) is that file's own.
    table = tables[0]
    for later in tables[1:]:
        table = pd.concat([table[~table[config.timestamp_col].isin(later[config.timestamp_col])], later],
                          ignore_index=True)
    hourly = frame_to_hourly(table, config.model_copy(update={"sort": True}), source=str(path))
    hourly.report.notes.append(f"read {len(files)} files matching {path}")
    return hourly


def _row_label(position: int, source: str) -> str:
    # CSV row numbers as a spreadsheet shows them: header is row 1.
    return f"row {position + 2}" if source.endswith(".csv") else f"row {position}"


def _parse_timestamps(raw: pd.Series, config: DataConfig, source: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        text = raw.astype("string").str.strip()
        # Hour-ending US ISO files (ERCOT, MISO) end each day at '24:00', which pandas does not parse: read
        # it as 00:00 of the next day.
        midnight = text.str.contains(END_OF_DAY, regex=True, na=False)
        if midnight.any():
            text = text.where(~midnight, text.str.replace(END_OF_DAY, " 00:", regex=True))
        try:
            with warnings.catch_warnings():
                # pandas warns on mixed offsets (EST and EDT in one column) that it will raise one day; both
                # outcomes are handled below by parsing as UTC instants, so the warning would only alarm.
                warnings.simplefilter("ignore", FutureWarning)
                parsed = pd.to_datetime(
                    text, format=config.timestamp_format, dayfirst=config.dayfirst, errors="coerce", utc=False
                )
        except (ValueError, TypeError):
            # Mixed offsets (e.g. +10:00 and +11:00) come back as objects; parse as UTC instants instead.
            parsed = pd.to_datetime(text, format=config.timestamp_format, dayfirst=config.dayfirst,
                                    errors="coerce", utc=True)
        if parsed.dtype == object:
            parsed = pd.to_datetime(text, format=config.timestamp_format, dayfirst=config.dayfirst,
                                    errors="coerce", utc=True)
        if midnight.any():
            parsed = parsed.where(~midnight, parsed + pd.Timedelta(days=1))
        bad = parsed.isna() & text.notna()
        if bad.any() or parsed.isna().any():
            position = int(np.flatnonzero(bad.to_numpy() | parsed.isna().to_numpy())[0])
            hint = (f"format '{config.timestamp_format}'" if config.timestamp_format
                    else "pass --timestamp-format (e.g. '%d-%m-%Y %H:%M') or --dayfirst")
            raise DataError(
                f"{source}: column '{config.timestamp_col}' {_row_label(position, source)}: cannot parse "
                f"timestamp {raw.iloc[position]!r}; {hint}"
            )
    return parsed


def _localize(parsed: pd.Series, config: DataConfig, report: DataReport) -> pd.DatetimeIndex:
    """Tz-aware hour-beginning instants. Naive wall-clock times are localised with DST handled:
    a repeated fall-back hour is read as summer time first, winter time second; a time skipped by
    spring-forward does not exist and is dropped (reported)."""
    index = pd.DatetimeIndex(parsed)
    if index.tz is not None:
        tz = config.timezone or index.tz
        index = index.tz_convert(tz)
        if config.hour_ending:
            index = index - _step(index)
        return index
    tz = config.timezone or "UTC"
    if config.timezone is None:
        report.notes.append("naive timestamps read as UTC (pass --timezone to set their zone)")
    if config.hour_ending:
        # Shift on the wall clock before localising: PJM's 'hour ending 02:00' twice on a fall-back
        # day becomes 01:00 summer time and 01:00 winter time.
        index = index - _step(index)
    repeat = pd.Series(index).groupby(index).cumcount().to_numpy()
    localized = index.tz_localize(tz, ambiguous=repeat == 0, nonexistent="NaT")
    report.dropped_nonexistent = int(pd.isna(localized).sum())
    return localized


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    diffs = pd.Series(index.sort_values()).diff().dropna()
    diffs = diffs[diffs > pd.Timedelta(0)]
    return diffs.median() if len(diffs) else pd.Timedelta(hours=1)


def _interval_starts(raw: pd.Series) -> pd.Series | None:
    """The start of each 'start - end' interval, where every timestamp is written so; else None."""
    if pd.api.types.is_datetime64_any_dtype(raw) or not len(raw):
        return None
    text = raw.astype("string")
    starts = text.str.extract(INTERVAL, expand=False)
    written = text.notna() & (text.str.strip() != "")
    if not written.any() or starts[written].isna().any():
        return None
    return starts


def _parse_numbers(table: pd.DataFrame, column: str, source: str) -> np.ndarray:
    raw = table[column]
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        raw = raw.mask(raw.astype("string").str.strip().str.lower().isin(MISSING_MARKERS))
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna() & (raw.astype("string").str.strip() != "")
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{source}: column '{column}' {_row_label(position, source)}: {raw.iloc[position]!r} is not a "
            "number; fix or blank the cell (blanks count as missing)"
        )
    values = values.to_numpy(dtype=float)
    if np.isinf(values).any():
        position = int(np.flatnonzero(np.isinf(values))[0])
        raise DataError(f"{source}: column '{column}' {_row_label(position, source)}: infinite value; fix it")
    return values


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s), int(e - s)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def frame_to_hourly(table: pd.DataFrame, config: DataConfig, source: str = "input") -> HourlyData:
    """Validate a raw table and put it on a regular hourly grid. Raises DataError with one line."""
    report = DataReport(rows_read=len(table))
    wanted = [config.timestamp_col, config.target_col, *config.exog]
    for column in wanted:
        if column not in table.columns:
            listed = ", ".join(map(str, table.columns[:12]))
            flag = {config.timestamp_col: "--timestamp-col", config.target_col: "--target-col"}.get(column, "--exog")
            raise DataError(f"{source}: column '{column}' not found (columns: {listed}); check {flag}")
    if len(table) == 0:
        raise DataError(f"{source}: no rows")
    timestamps = table[config.timestamp_col]
    starts = _interval_starts(timestamps)
    if starts is not None:
        if config.hour_ending:
            raise DataError(f"{source}: column '{config.timestamp_col}' holds intervals ('start - end'), of which "
                            "the start is read; drop --hour-ending (hour_ending)")
        timestamps = starts
        report.notes.append(f"timestamps are intervals ('start - end', e.g. {table[config.timestamp_col].iloc[0]!r}): "
                            "read the start of each")
    parsed = _parse_timestamps(timestamps, config, source)
    load = _parse_numbers(table, config.target_col, source)
    bad_load = np.flatnonzero(load <= 0)
    if len(bad_load):
        position = int(bad_load[0])
        raise DataError(
            f"{source}: column '{config.target_col}' {_row_label(position, source)}: load {load[position]:g} "
            f"is not positive (the trend is log-linear); blank the cell to treat it as missing"
        )
    columns = {LOAD: load} | {name: _parse_numbers(table, name, source) for name in config.exog}
    index = _localize(parsed, config, report)
    frame = pd.DataFrame(columns, index=index)
    frame = frame[frame.index.notna()]
    if len(frame) == 0:
        raise DataError(f"{source}: no rows left after reading timestamps")

    order = frame.index.asi8
    unsorted = np.flatnonzero(np.diff(order) < 0)
    if len(unsorted):
        if not config.sort:
            position = int(unsorted[0]) + 1
            raise DataError(
                f"{source}: timestamps are not sorted at {_row_label(position, source)} "
                f"({frame.index[position]} comes after {frame.index[position - 1]}); sort the file or pass --sort"
            )
        frame = frame.sort_index(kind="stable")
        report.notes.append("input was not sorted: sorted by timestamp (--sort)")

    step = _step(frame.index)
    report.source_step_minutes = step / pd.Timedelta(minutes=1)
    if step > pd.Timedelta(hours=1):
        raise DataError(f"{source}: data is not hourly (typical step {step}); hourly or finer data is needed")
    if step < pd.Timedelta(hours=1):
        # Sub-hourly readings: hourly means over the hour that begins at each timestamp.
        utc = frame.tz_convert("UTC")
        frame = utc.groupby(utc.index.floor("h")).mean().tz_convert(frame.index.tz)
    else:
        duplicated = frame.index.duplicated()
        if duplicated.any():
            position = int(np.flatnonzero(duplicated)[0])
            raise DataError(
                f"{source}: timestamp {frame.index[position]} appears twice ({_row_label(position, source)}); "
                "remove the duplicate rows (a repeated DST fall-back hour must be written in file order)"
            )
        off_grid = frame.index.tz_convert("UTC").minute != 0
        if off_grid.any():
            position = int(np.flatnonzero(off_grid)[0])
            raise DataError(f"{source}: timestamp {frame.index[position]} is not on the hour; hourly data must be")

    grid = pd.date_range(frame.index[0], frame.index[-1], freq="h", name="timestamp")
    frame = frame.reindex(grid)
    frame.index.name = "timestamp"
    _drop_outliers(frame, config.outlier_ratio, report)
    _repair_gaps(frame, config.max_interpolate_hours, report)
    if config.holidays:
        if HOLIDAY_COLUMN in frame.columns:
            raise DataError(f"{source}: the data already has a 'holiday' column and `holidays: {config.holidays}` "
                            "would add another; drop one of them (or rename the column)")
        frame[HOLIDAY_COLUMN] = holiday_flags(frame.index, config.holidays)
    report.rows_out = len(frame)
    exog = list(config.exog) + ([HOLIDAY_COLUMN] if config.holidays else [])
    if not any(is_binary(frame[name].to_numpy(dtype=float)) for name in exog):
        # After the calendar, a day-off input is what national load depends on most (PJM East, trend +
        # Fourier: 9.120 -> 9.023 % with NERC's holidays; vic-elec: 2.983 -> 2.605 % linear-only).
        report.notes.append("no holiday or working-day input: public holidays will be forecast as ordinary days; "
                            "add one with --holidays (NERC or US for US load, a country code such as FR or "
                            "GB-ENG elsewhere) or a 0/1 column with --exog")
    for line in report.lines()[1:]:
        logger.info(line)
    return HourlyData(frame, exog, report, config.holidays)


def _drop_outliers(frame: pd.DataFrame, ratio: float, report: DataReport) -> None:
    """Set missing (and report) the load hours below 1/``ratio`` or above ``ratio`` times the median of the
    week around them: the single implausible hours real meter data holds (PJM's DOM zone: 1,253 MW in a
    week around 10,000), which a model would otherwise fit. A heat wave's peak stays: vic-elec's highest
    hour is 2.0 times its week's median, every PJM zone's within 1.8 (the default ``ratio`` is 2.5)."""
    if not ratio:
        return
    load = frame[LOAD]
    median = load.rolling(OUTLIER_WINDOW_HOURS, center=True, min_periods=72).median()  # 3 days at least
    outside = ((load < median / ratio) | (load > median * ratio)).to_numpy()
    if outside.any():
        for ts, value, mid in zip(frame.index[outside], load[outside], median[outside], strict=True):
            report.outliers.append((ts, float(value), float(mid)))
        frame.loc[outside, LOAD] = np.nan


def _repair_gaps(frame: pd.DataFrame, max_hours: int, report: DataReport) -> None:
    """Interpolate short gaps; leave long ones NaN (reported); report flat lines."""
    load_missing = frame[LOAD].isna().to_numpy()
    for start, length in _runs(load_missing):
        if start == 0 or start + length == len(frame):
            continue  # cannot happen for load (grid spans first..last reading); defensive
        if length <= max_hours:
            report.interpolated.append((frame.index[start], length))
        else:
            report.long_gaps.append((frame.index[start], length))
    for column in frame.columns:
        values = frame[column]
        missing = values.isna().to_numpy()
        short = np.zeros(len(frame), dtype=bool)
        for start, length in _runs(missing):
            if length <= max_hours and start > 0 and start + length < len(frame):
                short[start : start + length] = True
        if short.any():
            filled = values.interpolate(method="linear", limit_area="inside")
            frame.loc[short, column] = filled[short]
    load = frame[LOAD].to_numpy()
    same = np.concatenate([[False], np.isclose(load[1:], load[:-1])])
    for start, length in _runs(same):
        if length + 1 >= FLATLINE_HOURS:
            report.flatlines.append((frame.index[start - 1], length + 1))
