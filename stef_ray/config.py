"""Typed configuration: pydantic models loaded from YAML, ``extra="forbid"`` so a typo is an error that
names the key. Every field carries a description; ``stef-ray ... --help`` and the docs draw on them.
``stef_ray.config_loading`` reads them from YAML files."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stef_ray.spec import ForecastSpec


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreSource(StrictModel):
    """Training data read back from the time-series store: the `power_demand_actual` points that
    `stef-ray ingest`, `POST /actuals` and `stef-ray forecast --influx` write (load only, no weather)."""

    reader: Literal["influx", "export"] = Field(
        "influx", description="'influx' = InfluxDB 2's Flux query API (INFLUXDB_* settings from the environment "
        "or .env); 'export' = a Prometheus-style /api/v1/export server (victoria-metrics) at export_url")
    export_url: str | None = Field(None, description="base URL of the export server (reader 'export')")
    days: int = Field(1460, ge=28, le=36600, description="days of history to read, ending at `end`")
    end: str | None = Field(None, description="end of the window, ISO time (naive = UTC); default: now")

    @model_validator(mode="after")
    def _export_needs_url(self) -> StoreSource:
        if self.reader == "export" and not self.export_url:
            raise ValueError("reader 'export' needs export_url (e.g. http://127.0.0.1:8428)")
        return self


class DataConfig(StrictModel):
    """Where the hourly load comes from and how to read it."""

    path: str | None = Field(None, description="CSV or Parquet file with one row per timestamp, or a glob of "
                             "such files (data/deliveries/*.csv: read in name order, the later file's row wins "
                             "where they overlap)")
    timestamp_col: str = Field("timestamp", description="column holding the timestamps")
    target_col: str = Field("load", description="column holding the load (MW, > 0)")
    exog: list[str] = Field(
        default_factory=list,
        description="exogenous columns used as known-future inputs (e.g. temperature, workday)",
    )
    timezone: str | None = Field(
        None,
        description="IANA zone of naive timestamps (e.g. Asia/Seoul); also the local clock of the "
        "calendar features. Aware timestamps are converted to it. Default: the file's offset, else UTC.",
    )
    timestamp_format: str | None = Field(
        None, description="strftime format of the timestamps, e.g. '%d-%m-%Y %H:%M' (default: inferred)"
    )
    dayfirst: bool = Field(False, description="read ambiguous dates day-first (31-12-2002)")
    hour_ending: bool = Field(
        False,
        description="timestamps label the END of each interval (01:00 = 00:00-01:00, as PJM does); "
        "default: the start (hour-beginning)",
    )
    sort: bool = Field(False, description="sort unsorted input instead of refusing it")
    holidays: str | None = Field(
        None, description="add a 'holiday' 0/1 column from a public-holiday calendar: NERC (the six US "
        "holidays on which load drops), US (federal, from pandas) or any ISO 3166 country code of the "
        "`holidays` package, with an optional region: FR, DE, GB-ENG, AU-VIC"
    )
    max_interpolate_hours: int = Field(
        3, ge=0, le=24, description="gaps up to this many hours are interpolated; longer ones are kept out"
    )
    outlier_ratio: float = Field(
        2.5, ge=0, description="load below the median of its surrounding week divided by this, or above that "
        "median times this, is an outlier (a meter or data error, not load): reported, and set missing before "
        "the gap repair (a short run is interpolated, a long one kept out of training). 0 keeps every value"
    )
    store: StoreSource | None = Field(
        None, description="read the load from the time-series store instead of a file (`path`); --data FILE "
        "on the command line still reads the file"
    )

    @field_validator("holidays")
    @classmethod
    def _known_calendar(cls, name: str | None) -> str | None:
        from stef_ray.data.holidays import check_calendar

        return None if name is None else check_calendar(name)


class TrendConfig(StrictModel):
    """Log-linear trend: log(load) = a + b * years."""

    enabled: bool = Field(True, description="fit a trend (else a constant level)")


class SeasonalityConfig(StrictModel):
    """Fourier seasonality (and linear exogenous effects) on the detrended log load."""

    daily_order: int = Field(3, ge=0, le=12, description="Kd: daily harmonics (the seed's fixed 3)")
    weekly_order: int = Field(7, ge=0, le=20, description="Kw: weekly harmonics")
    yearly_order: int = Field(3, ge=0, le=20, description="Ky: yearly harmonics (dropped on < 2 years)")
    min_years_for_yearly: float = Field(
        2.0, gt=0, description="history (years) below which yearly terms are dropped"
    )
    grid_search: bool = Field(False, description="search (Kd, Kw, Ky) on a time-ordered validation split")
    daily_grid: list[int] = Field(default_factory=lambda: [2, 3, 4, 6], description="Kd values searched")
    weekly_grid: list[int] = Field(default_factory=lambda: [3, 5, 7, 10], description="Kw values searched")
    yearly_grid: list[int] = Field(default_factory=lambda: [0, 3, 6], description="Ky values searched")
    use_exog: bool = Field(True, description="exogenous regressors enter linearly here")
    holiday_season: bool = Field(
        True, description="a 24 Dec - 1 Jan flag: the Christmas/New Year dip that holiday and working-day "
        "flags miss (a zero column, hence no effect, where training has no such days)"
    )
    daily_yearly_interaction: int = Field(
        4, ge=0, le=12, description="the first N daily harmonics times the first "
        "`yearly_interaction_order` yearly harmonics: a daily load shape that changes through the year "
        "(used only where the yearly terms are, i.e. on multi-year history); 0 = off"
    )
    yearly_interaction_order: int = Field(
        2, ge=1, le=6, description="yearly harmonics in `daily_yearly_interaction`"
    )
    weekday_profiles: int = Field(
        6, ge=0, le=12, description="the first N daily harmonics times a flag per day of the week: each "
        "weekday gets its own daily shape (Saturday's late morning, Monday's start-up); 0 = off"
    )
    bridge_day_share: float = Field(
        0.5, ge=0, le=1, description="on a bridge day (a working weekday between two days off, e.g. the "
        "Friday after Thanksgiving) the binary exogenous columns move this share of the way to their day-off "
        "value, so it gets that share of the learnt holiday effect (0.5: half a day off). Days off are "
        "weekends and the days a binary column marks: a column that is mostly 1 on weekdays, like "
        "'workday', marks them with 0, any other with 1. 0 = off"
    )
    min_weeks_for_profiles: float = Field(
        26.0, gt=0, description="history (weeks) below which `exog_hinge_daily_interaction` is dropped and "
        "`weekday_profiles` kept only where `cross_validate` finds they help (dropped without it): on a few "
        "weeks their many columns can over-fit"
    )
    temperature_knots: int = Field(
        6, ge=0, le=12, description="hinge knots (at quantiles) for non-binary exogenous columns"
    )
    exog_daily_interaction: int = Field(
        4, ge=0, le=6, description="daily harmonics interacted with each non-binary exogenous column"
    )
    exog_hinge_daily_interaction: int = Field(
        2, ge=0, le=6, description="the first N daily harmonics times each hinge term of a non-binary "
        "exogenous column: heating and cooling act at different hours (air conditioning in the afternoon); "
        "0 = off"
    )
    smoothing_hours: list[int] = Field(
        default_factory=lambda: [3, 12, 24, 72, 168],
        description="exponential smoothing spans (h) of non-binary exogenous columns (thermal inertia)",
    )
    smoothing_window_hours: int = Field(
        504, ge=0, le=2016, description="the smoothing reads each hour's last N hours only (its weights cut "
        "there and renormalised), so a forecast needs N - 1 hours of exogenous history before its lookback "
        "window and then equals the forecast from the whole history; 0 = from the frame's first row"
    )
    ridge_alpha: float = Field(1e-2, ge=0, description="ridge penalty on standardized columns")
    cross_validate: bool = Field(
        True, description="where there are non-binary exogenous inputs (weather): choose their columns' ridge "
        "penalty (among `cv_alphas` and `ridge_alpha`) and which of them to use by a time-blocked "
        "cross-validation. An input is left out (its hinge, smoothing and daily-shape columns, and its channel "
        "in the residual models) where it does not lower the cross-validated error: a weather series that "
        "says nothing new about load otherwise fits chance co-movements and moves the forecast. The calendar "
        "and binary columns keep `ridge_alpha`. Off: `ridge_alpha` and every input"
    )
    cv_alphas: list[float] = Field(
        default_factory=lambda: [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0],
        description="ridge penalties tried for the weather columns by `cross_validate`",
    )
    cv_folds: int = Field(5, ge=2, le=20, description="contiguous time blocks of `cross_validate`")

    @field_validator("cv_alphas")
    @classmethod
    def _alphas_valid(cls, values: list[float]) -> list[float]:
        if not values or any(value < 0 for value in values):
            raise ValueError("give at least one penalty, none negative")
        return values


class ResidualConfig(StrictModel):
    """The residual models on the scaled log residuals: the forecast's lookback in, its horizon out
    (``ModelConfig.forecast``). Per-hour ridges (``linear``) with gradient-boosted trees beside them (``boosted_weight``), and a
    neural residual (``enabled``: an LSTM or an MLP) that learns what those two get wrong out of sample."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, values: object) -> object:
        # Bundles before format 7 (and older configs) carry `min_gain`, the 5 % gate on one 28-day block
        # that the paired comparison over several blocks (`gate_z`) replaced: read, then dropped.
        if isinstance(values, dict) and "min_gain" in values:
            values = {k: v for k, v in values.items() if k != "min_gain"}
        return values

    enabled: bool = Field(
        False, description="train the neural residual (`architecture`) on the out-of-sample errors of the ridges "
        "and trees, and keep it where it beats them on the validation blocks (`gate_z`). Off by default: in "
        "the rolling backtests it made no series better (docs/model.md); `stef-ray tune` "
        "turns it on for the trials that sample an architecture"
    )
    architecture: Literal["lstm", "mlp"] = Field(
        "lstm", description="the neural residual: lstm (an LSTM encoder over the lookback, an MLP head over it "
        "and the known future inputs) or mlp (one MLP over the flattened window, some 20x faster on a CPU)"
    )
    linear: bool = Field(
        True, description="a closed-form ridge on the same windows carries the linear residual dynamics; "
        "the neural residual learns what it misses"
    )
    linear_alpha: float = Field(1.0, ge=0, description="ridge penalty of the linear residual model")
    linear_robust_iterations: int = Field(
        3, ge=0, le=20, description="reweighting passes of the linear residual model: each window weighted by "
        "1 / its mean absolute error, an absolute loss (what MAPE measures) in place of the squared one; 0 = "
        "plain ridge"
    )
    linear_hour_width: int = Field(
        2, ge=-1, le=12, description="one linear residual ridge per local origin hour, fitted on the windows "
        "whose origin lies within this many hours of it (the last week maps to the next day differently "
        "from midnight than from noon); -1 = one ridge for every origin"
    )
    linear_train_days: int = Field(
        0, ge=0, description="fit the linear residual model on windows of the most recent N days only (0 = "
        "all): a ridge has no epochs, so it can use years more history than the neural residual's `train_days`, and its "
        "24 per-hour ridges need it"
    )
    linear_season_days: float = Field(
        40, ge=0, le=366, description="weight the linear residual's training windows by how near their day of "
        "the year lies to the end of training (a Gaussian of this many days; 0 = equal weights): residuals "
        "persist differently in heat spells than in cold ones (PJM 2017, 8 years of windows, linear-only: "
        "20 days 3.459 %, 30 days 3.429 %, 40 days 3.427 %, equal weights 3.509 %)"
    )
    linear_season_floor: float = Field(
        0.0, ge=0, le=1, description="the least weight a window of the opposite season keeps (see `linear_season_days`)"
    )
    linear_season_min_years: float = Field(
        3.0, ge=0, description="weight by season only when the linear residual's windows span at least this "
        "many years (on less, each season holds too few windows for 24 ridges: PJM on 2 years 3.587 % against "
        "3.583 % with equal weights; vic-elec, one year, 3.846 % against 2.686 %)"
    )
    boosted_weight: float = Field(
        0.2, ge=0, le=1, description="share of gradient-boosted trees (on the recent residual, load level and "
        "smoothed exogenous values) in the residual forecast, the per-hour ridges keeping the rest: a "
        "non-linear response to weather, averaged rather than stacked; used with `linear`, lookback_hours >= 168 "
        "and a non-binary exogenous column such as temperature (vic-elec: 2.686 -> 2.620 %); 0 = off"
    )
    boosted_iterations: int = Field(300, ge=1, le=5000, description="boosting rounds of the trees")
    boosted_max_rows: int = Field(
        50_000, ge=1000, description="windows the trees learn from at most, one row each at a random lead "
        "hour (a random sample of the ridges' windows beyond that): bounds their fit time on long series "
        "(15 years of hourly windows with a weather input: ridges and trees fitted in 53 s instead of 60 "
        "before the validation weeks, 36 s instead of 45 after); a year of history has some 8,000 windows, "
        "all used"
    )
    hidden_size: int = Field(16, ge=4, le=1024, description="hidden units of the neural residual (LSTM state, MLP width)")
    num_layers: int = Field(1, ge=1, le=4, description="stacked LSTM layers, or the MLP's hidden layers")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout in the head (and between layers)")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate")
    weight_decay: float = Field(1e-3, ge=0, description="AdamW weight decay")
    batch_size: int = Field(128, ge=8, le=8192, description="windows per batch")
    max_epochs: int = Field(30, ge=1, le=1000, description="epochs at most (each ensemble member)")
    patience: int = Field(
        5, ge=1, description="epochs without improvement on the early-stopping days (`stop_days`) before stopping"
    )
    ensemble: int = Field(
        1, ge=1, le=16, description="neural residuals trained from different seeds and averaged (a seed ensemble: "
        "less variance, as many times the training time)"
    )
    gate_z: float = Field(
        3.0, ge=0, description="keep the neural residual only where its paired gain over the ridges and trees "
        "alone, per validation day, exceeds this many standard errors; else it adds zero. 3 was chosen on the "
        "development years (PJM East 2016, BigDEAL 2005): nets kept at 1-2.5 standard errors made the following "
        "weeks worse, not better. The validation blocks are used for nothing else about the net"
    )
    validation_blocks: int = Field(
        4, ge=1, le=12, description="validation blocks spread evenly over the last `train_days` (the last one "
        "ending where the data ends): the neural residual's keep-or-drop comparison and the conformal "
        "calibration read the out-of-sample errors there, so every season is seen, not only the last weeks. "
        "Fewer where the history is short"
    )
    validation_days: int = Field(14, ge=1, description="days of origins in each validation block")
    stop_days: int = Field(
        7, ge=1, description="days of origins in the middle of each fold, weeks from any validation block, on "
        "which the neural residual's early stopping is decided (out-of-sample targets too; not used for training)"
    )
    window_stride_hours: int = Field(1, ge=1, le=24, description="hours between training origins")
    train_days: int = Field(
        364, ge=28, description="the neural residual learns from the windows of the most recent N days: they "
        "are split into `validation_blocks` contiguous folds, and each fold's ridges and trees are refitted "
        "without it (weighted toward its season), so the net learns their out-of-sample errors, as it meets "
        "them when forecasting. Each fold costs one fit of the ridges and trees; trend, seasonality and "
        "the served ridges still use the whole history"
    )
    loss: Literal["l1", "mse", "huber"] = Field("l1", description="training loss on scaled residuals")
    seed: int = Field(0, description="torch/numpy seed (of the first ensemble member; the others add 1, 2, ...)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train and predict")

    @field_validator("linear_season_days")
    @classmethod
    def _season_wide_enough(cls, days: float) -> float:
        # Narrower Gaussians leave windows weeks away with weights that underflow to zero: no ridge to fit.
        if 0 < days < 7:
            raise ValueError("must be 0 (off) or at least 7 days")
        return days


class ModelConfig(StrictModel):
    trend: TrendConfig = Field(default_factory=TrendConfig)
    seasonality: SeasonalityConfig = Field(default_factory=SeasonalityConfig)
    residual: ResidualConfig = Field(default_factory=ResidualConfig)
    forecast: ForecastSpec = Field(
        default_factory=ForecastSpec, description="the forecast's shape: lookback, horizon, quantile levels, "
        "issue hours")
    calibration_hour_width: int = Field(
        2, ge=-1, le=11, description="the conformal quantiles' spread per local origin hour, each from the "
        "validation windows whose origin lies within this many hours of it, around a centre pooled over all "
        "origins (P50 and the MAPE point stay pooled): how wide a lead hour's errors are depends on the time "
        "of day it falls on (a 00:00 origin's lead 15 is the afternoon, a 12:00 origin's the night), not on "
        "the lead alone; -1 = one set for every origin hour"
    )
    point_forecast: Literal["mape", "median"] = Field(
        "mape", description="what the `forecast` column is. mape: the value with the least expected absolute "
        "percentage error, which lies below the median by the square of the log errors' spread (per lead "
        "hour, from the validation errors' P10-P90 width and the interval scale; about 0.2 % at PJM's "
        "afternoon spread). median: the model's own forecast, fitted toward the median"
    )
    interval_adapt_days: int = Field(
        7, ge=0, le=28, description="scale the quantile offsets by the mean error of the last N daily "
        "forecasts (from load before the origin) over the validation mean error; 0 = fixed offsets"
    )
    interval_scale_range: tuple[float, float] = Field(
        (1.0, 1.5), description="bounds of that scale; it only widens by default, since the last days' "
        "errors are partly in-sample for a model refitted on them"
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_to_forecast(cls, values: object) -> object:
        # Configs and bundles written before the forecast section kept the lookback and horizon in
        # `residual` and the quantile levels at the model's top level: read them into `forecast`.
        if not isinstance(values, dict):
            return values
        values, forecast = dict(values), values.get("forecast")
        moved = {}
        if isinstance(values.get("residual"), dict):
            residual = dict(values["residual"])
            moved |= {key: (f"residual.{key}", residual.pop(key)) for key in ("lookback_hours", "horizon_hours")
                      if key in residual}
            values["residual"] = residual
        if "quantiles" in values:
            moved["quantiles"] = ("quantiles", values.pop("quantiles"))
        if not moved:
            return values
        if forecast is not None and not isinstance(forecast, dict):
            forecast = forecast.model_dump()
        forecast = dict(forecast or {})
        for key, (old, value) in moved.items():
            if key in forecast and forecast[key] != value:
                raise ValueError(f"model.{old} (its old place) and model.forecast.{key} differ; give it once, "
                                 "in model.forecast")
            forecast[key] = value
        values["forecast"] = forecast
        return values


class TrainConfig(StrictModel):
    """What ``stef-ray train`` (and ``backtest``) reads from YAML: data and model sections."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)

    @model_validator(mode="after")
    def _exog_not_target(self) -> TrainConfig:
        if self.data.target_col in self.data.exog:
            raise ValueError(f"data.exog lists the target column '{self.data.target_col}'")
        return self
