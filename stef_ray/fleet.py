"""Many series: a fleet file names each series' data (its own file and read options, as utilities send
them) and the model settings they share; the per-series work is one plain function each, which the Ray
adapter (``stef_ray.integrations.fleet_ray``) runs in parallel. Core: no Ray here.

A fleet YAML::

    data:                      # read options every series shares (any key of a config's data section)
      timezone: US/Eastern
      hour_ending: true
      holidays: NERC
    model: {...}               # the model section of a config, for every series
    series:                    # per series: its file (relative to this YAML) and its own read options
      PJME: {path: PJME_hourly.csv, timestamp_col: Datetime, target_col: PJME_MW, dayfirst: true}
      AEP:  {path: AEP_hourly.csv, timestamp_col: Date_time_str, target_col: AEP_MW,
             timestamp_format: "%m/%d/%y %H:%M"}
    resources: {cpus_per_series: 1, retries: 1}

or, every series in one long file (a row per series and hour), read with ``data``'s options::

    data: {timestamp_col: timestamp, target_col: load, exog: [temperature]}
    long_format: {path: zones.parquet, series_col: series_id}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import Field, PrivateAttr, ValidationError

from stef_ray.config import DataConfig, ModelConfig, StrictModel
from stef_ray.config_loading import format_validation_error, read_yaml
from stef_ray.exceptions import ConfigError, StefRayError


class FleetResources(StrictModel):
    cpus_per_series: float = Field(1.0, gt=0, description="CPUs reserved by each series' task (also its torch and "
                                   "BLAS threads)")
    retries: int = Field(1, ge=0, le=5, description="times a series is run again after its worker died (a crash, "
                         "a lost node); an error in its data is reported at once, not retried")


class FleetRegistry(StrictModel):
    """Where ``stef-ray train --fleet --register`` puts each series' model: its own registered model with
    its own champion (the MLflow adapter reads this; the core only scores the holdout it needs)."""

    model_prefix: str = Field("power-demand", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                              description="registered model name before the series id: power-demand-<series_id>")
    experiment: str = Field("power-demand-fleet", description="MLflow experiment of the per-series runs")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; $MLFLOW_TRACKING_URI wins; default "
                                     "sqlite:///<cwd>/mlflow.db")
    holdout_days: int = Field(28, ge=1, le=366, description="last days of each series kept out of the first fit "
                              "and scored; the champion gate compares versions on them")
    champion_margin: float = Field(0.0, ge=0, description="MAPE points by which a new version may be worse and "
                                   "still take 'champion'")

    def registered_name(self, series_id: str) -> str:
        return f"{self.model_prefix}-{series_id}"


class LongFormat(StrictModel):
    path: str = Field(description="one CSV or Parquet file holding every series, a row per series and hour")
    series_col: str = Field("series_id", description="the column naming each row's series")


class FleetConfig(StrictModel):
    """What a fleet YAML holds; ``series`` maps a series id to its data section (``path`` and the read options
    that differ from ``data``'s), or ``long_format`` names one file holding every series (read with ``data``'s
    options, split by its series column)."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    series: dict[str, dict] = Field(default_factory=dict, description="series id -> its data options (path at least)")
    long_format: LongFormat | None = Field(None, description="every series in one long file instead of `series`")
    resources: FleetResources = Field(default_factory=FleetResources)
    registry: FleetRegistry = Field(default_factory=FleetRegistry, description="per-series registered models "
                                    "(train --fleet --register)")
    _tables: dict | None = PrivateAttr(None)  # a long file's rows per series, once read (split_long_format)

    def data_config(self, series_id: str) -> DataConfig:
        """The series' data section: the shared one with the series' own options on top."""
        return DataConfig.model_validate(self.data.model_dump() | self.series[series_id])


def load_fleet(path: str | Path) -> FleetConfig:
    """Read and check a fleet YAML: every series' data section is validated (errors name
    ``series.<id>.<key>``), and relative paths are taken from the YAML's folder."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        fleet = FleetConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
    if fleet.long_format is not None:
        if fleet.series:
            raise ConfigError(f"{path}: give either series (a file each) or long_format (one file), not both")
        file = Path(fleet.long_format.path).expanduser()
        fleet.long_format.path = str(file if file.is_absolute() else path.parent / file)
        return fleet
    if not fleet.series:
        raise ConfigError(f"{path}: series: name at least one series (id: {{path: FILE}}), or give long_format")
    for series_id, options in fleet.series.items():
        if not isinstance(options, dict) or not options.get("path"):
            raise ConfigError(f"{path}: series.{series_id}: needs a path (the series' data file)")
        options = dict(options)
        file = Path(options["path"]).expanduser()
        options["path"] = str(file if file.is_absolute() else path.parent / file)
        fleet.series[series_id] = options
        try:
            fleet.data_config(series_id)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, str(path), prefix=f"series.{series_id}")) from None
    return fleet


def split_long_format(fleet: FleetConfig) -> dict[str, pd.DataFrame]:
    """For a ``long_format`` fleet: read the file once, one table per series (the series column dropped),
    and fill ``fleet.series`` with each id (the path the long file's, for the bundles' manifests). Empty
    for a fleet of files."""
    from stef_ray.data.loading import read_table
    from stef_ray.exceptions import DataError

    if fleet.long_format is None:
        return {}
    if fleet._tables is not None:
        return fleet._tables
    long = fleet.long_format
    table = read_table(long.path)
    if long.series_col not in table.columns:
        raise DataError(f"{long.path}: no series column '{long.series_col}' (columns: "
                        f"{', '.join(map(str, table.columns[:8]))}); set long_format.series_col")
    tables = {str(series_id): rows.drop(columns=long.series_col).reset_index(drop=True)
              for series_id, rows in table.groupby(long.series_col, sort=True)}
    fleet.series = {series_id: {"path": long.path} for series_id in tables}
    fleet._tables = tables
    return tables


@dataclass
class SeriesOutcome:
    """One series' result: its scores, or the one-line reason it failed."""

    series_id: str
    status: str  # "ok" or "failed"
    mape: float = float("nan")
    coverage: float = float("nan")  # share of actuals inside the band (P10-P90 with the default levels)
    days: int = 0
    seconds: float = 0.0
    error: str = ""
    bundle: str = ""  # where ``train_series`` wrote the series' model
    outliers: int = 0  # load hours the data layer set missing as outliers
    data_report: list[str] = field(default_factory=list)  # what validating the series' file found and did
    holdout_mape: float = float("nan")  # train_series with holdout_days: the first fit's score on them
    holdout_from: str = ""  # ISO time of the holdout's first hour
    registered: str = ""  # "<name> version N -> champion|challenger: reason" once registered
    others: dict[str, float] = field(default_factory=dict)  # a backtest's other models (baselines, peers): MAPE
    tables: dict[str, pd.DataFrame] | None = None  # a backtest's tables, to write where the driver keeps them

    def row(self) -> dict:
        return {"series_id": self.series_id, "status": self.status, "MAPE": self.mape,
                "coverage": self.coverage, "days": self.days, "seconds": self.seconds,
                "outliers": self.outliers, "bundle": self.bundle, "holdout_MAPE": self.holdout_mape,
                "registered": self.registered,
                **{f"MAPE_{name}": value for name, value in self.others.items()},
                "error": self.error, "data_report": " | ".join(self.data_report)}

    @property
    def best_other(self) -> tuple[str, float] | None:
        """The other model with the lowest MAPE (what the first one has to beat), if any."""
        scored = [(name, value) for name, value in self.others.items() if value == value]  # NaN: not scored
        return min(scored, key=lambda item: item[1], default=None)


def series_data(series_id: str, data_config: DataConfig, table: pd.DataFrame | None = None,
                end: pd.Timestamp | None = None):
    """The series' validated hourly data (before ``end``, a naive end in the series' own zone): from its own
    file, or from its rows of a long file."""
    from stef_ray.data import frame_to_hourly, load_hourly

    if table is None:
        data = load_hourly(data_config)
    else:
        data = frame_to_hourly(table, data_config, source=f"{data_config.path} [{series_id}]")
    if end is not None:
        data = data.window(end=end.tz_localize(data.frame.index.tz) if end.tzinfo is None else end)
    return data


def backtest_series(series_id: str, data_config: DataConfig, model_config: ModelConfig, start: pd.Timestamp,
                    days: int, refit_every: int, table: pd.DataFrame | None = None,
                    models: tuple[str, ...] = ("hybrid",), keep_tables: bool = False) -> SeriesOutcome:
    """One series' day-ahead backtest (as ``stef-ray backtest`` runs it) of ``models``: the first one's
    scores are the outcome's ``mape`` and coverage, the others' MAPE its ``others`` (the baselines and peers
    it is compared with, on the same days). ``keep_tables``: the backtest's tables (overall_metrics,
    horizon_metrics, forecasts) ride along in ``tables``. A problem with the series' data or window is its
    outcome (status "failed", the one-line message), not an exception: the fleet goes on."""
    from stef_ray.evaluation.backtest import run_backtest
    from stef_ray.evaluation.peers import available_peers
    from stef_ray.quantiles import coverage_of

    started = time.perf_counter()
    try:
        data = series_data(series_id, data_config, table)
        result = run_backtest(data, model_config, start, days, refit_every, list(models),
                              peers=available_peers(models))
    except StefRayError as err:
        return SeriesOutcome(series_id, "failed", seconds=time.perf_counter() - started, error=str(err))
    overall = result.overall.set_index("model")
    first = overall.loc[models[0]]
    return SeriesOutcome(series_id, "ok", float(first["MAPE"]), coverage_of(first),
                         int(result.forecasts["origin"].nunique()), time.perf_counter() - started,
                         outliers=len(data.report.outliers), data_report=data.report.lines(),
                         others={name: float(overall.loc[name, "MAPE"]) for name in models[1:]},
                         tables={"overall_metrics": result.overall, "horizon_metrics": result.by_horizon,
                                 "forecasts": result.forecasts, "refits": result.refits} if keep_tables else None)


def train_series(series_id: str, data_config: DataConfig, model_config: ModelConfig, out: str,
                 end: pd.Timestamp | None = None, table: pd.DataFrame | None = None,
                 holdout_days: int = 0) -> SeriesOutcome:
    """Fit one series' hybrid (as ``stef-ray train`` does, on the data before ``end`` where given) and write
    its bundle to ``out/<series_id>``; ``mape`` is the validation blocks' MAPE. With ``holdout_days``, a
    first fit on the data before the last ``holdout_days`` days is scored on them (day-ahead forecasts from
    each midnight, as ``stef-ray tune`` scores its holdout) before the fit on everything: the number a
    champion gate compares. A data problem is the outcome, as in ``backtest_series``."""
    from stef_ray.bundle import save_bundle
    from stef_ray.evaluation.backtest import holdout_start, score_holdout
    from stef_ray.models.hybrid import HybridModel

    started = time.perf_counter()
    holdout_mape, holdout_from = float("nan"), None
    try:
        data = series_data(series_id, data_config, table, end)
        if holdout_days:
            holdout_from = holdout_start(data, holdout_days)
            before = HybridModel(model_config, data.exog).fit(data.window(end=holdout_from))
            holdout_mape = score_holdout(before, data, holdout_from)["MAPE"]
        model = HybridModel(model_config, data.exog).fit(data)
        path = save_bundle(model, Path(out) / series_id, data_config)
    except StefRayError as err:
        return SeriesOutcome(series_id, "failed", seconds=time.perf_counter() - started, error=str(err))
    validation_mape = model.training.val_mape_log_approx
    return SeriesOutcome(series_id, "ok", float("nan") if validation_mape is None else validation_mape,
                         seconds=time.perf_counter() - started, bundle=str(path),
                         outliers=len(data.report.outliers), data_report=data.report.lines(),
                         holdout_mape=holdout_mape, holdout_from=holdout_from.isoformat() if holdout_from else "")


def summary_table(outcomes: list[SeriesOutcome]) -> pd.DataFrame:
    """One row per series (failed ones last), in the order of their MAPE."""
    table = pd.DataFrame([o.row() for o in outcomes])
    return table.sort_values(["status", "MAPE"], key=lambda c: c.map({"ok": 0, "failed": 1}) if c.name == "status"
                             else c).reset_index(drop=True)
