"""The Python API: a pandas DataFrame in, forecasts out, in the three steps Darts, Nixtla and scikit-learn
users expect::

    from stef_ray import HybridForecaster

    model = HybridForecaster(exog=["temperature", "workday"]).fit(df)   # df: timestamp, load, temperature, workday
    forecast = model.predict()                                         # the 24 h after the last observed load
    model.save("models/mine")                                          # the bundle the CLI, MLflow and Serve read

``fit`` reads the frame as ``stef-ray train`` reads a file (same validation, gap repair and one-line errors),
``predict`` forecasts as ``stef-ray forecast`` does, ``backtest`` scores rolling daily forecasts as ``stef-ray
backtest`` does, and ``save``/``load`` write and read the one artifact, the bundle folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stef_ray.config import DataConfig, ModelConfig, TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.data.hourly import HourlyData
from stef_ray.exceptions import ConfigError, ModelNotFoundError


class HybridForecaster:
    """Trend + Fourier seasonality + residual models, fitted on one hourly series.

    Args:
        config: the model section: a :class:`~stef_ray.config.ModelConfig`, a dict of its keys, or the path of a
            YAML file with ``model`` (and optionally ``data``) sections, such as ``configs/vic_elec.yaml``.
        timestamp, target: the columns holding the timestamps and the load (MW).
        exog: known-future inputs (temperature, a working-day flag, ...); each becomes a required column.
        timezone: IANA zone of naive timestamps (aware ones are converted to it); the calendar's clock.
        holidays: a public-holiday calendar for a 0/1 ``holiday`` input (``"NERC"``, ``"US"``, ``"FR"``, ...).
        **data_options: any other key of :class:`~stef_ray.config.DataConfig` (``hour_ending=True``, ...).
    """

    def __init__(self, config: ModelConfig | dict | str | Path | None = None, *, timestamp: str | None = None,
                 target: str | None = None, exog: list[str] | None = None, timezone: str | None = None,
                 holidays: str | None = None, **data_options: Any) -> None:
        model_config, data_config = _configs(config)
        overrides = {"timestamp_col": timestamp, "target_col": target, "exog": exog, "timezone": timezone,
                     "holidays": holidays, **data_options}
        try:
            self.data_config = DataConfig.model_validate(
                data_config.model_dump() | {k: v for k, v in overrides.items() if v is not None})
        except ValueError as err:
            raise ConfigError(f"data options: {str(err).splitlines()[-1].strip()}") from None
        self.model_config = model_config
        self.model = None
        self.data: HourlyData | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, df: pd.DataFrame, on_stage=None) -> HybridForecaster:
        """Fit on ``df`` (a timestamp column, or a DatetimeIndex, the load and the exog columns).
        ``on_stage`` receives one line per stage (``print`` shows what ``stef-ray train`` shows)."""
        from stef_ray.models.hybrid import HybridModel

        self.data = self._hourly(df)
        self.model = HybridModel(self.model_config, self.data.exog).fit(self.data, on_stage=on_stage)
        return self

    def _hourly(self, df: pd.DataFrame) -> HourlyData:
        from stef_ray.data import frame_to_hourly

        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        table = df
        if self.data_config.timestamp_col not in df.columns and isinstance(df.index, pd.DatetimeIndex):
            table = df.rename_axis(self.data_config.timestamp_col).reset_index()
        return frame_to_hourly(table, self.data_config, source="DataFrame")

    # ------------------------------------------------------------------ forecasting
    def predict(self, df: pd.DataFrame | None = None, origin: str | pd.Timestamp | None = None,
                future: pd.DataFrame | None = None, horizon: int | None = None) -> pd.DataFrame:
        """The next ``horizon`` hours (default: the model's, 24) from ``origin`` (default: the hour after the
        last observed load of ``df``, or of the data it was fitted on).

        Returns one row per hour: ``timestamp``, ``forecast`` (MW) = ``trend`` + ``seasonality`` + ``residual``,
        and the quantiles (``p10``, ``p50``, ``p90`` by default). Exogenous values for the hours ahead come
        from ``df``'s rows at and after ``origin``, or ``future``; missing ones fall back to the same hour a
        week earlier (``forecast.attrs["notes"]`` says so)."""
        from stef_ray.exceptions import DataError
        from stef_ray.forecasting import forecast_at

        model = self._fitted()
        if horizon is not None and not 1 <= horizon <= model.horizon:
            raise DataError(f"horizon {horizon} is out of range: this model forecasts 1..{model.horizon} hours")
        data = self._hourly(df) if df is not None else self.data
        if data is None:
            raise ModelNotFoundError("predict needs recent data: pass df (the model was loaded, not fitted here)")
        start = None if origin is None else pd.Timestamp(origin)
        ahead = None if future is None else self._hourly_future(future)
        result = forecast_at(model, data, start, ahead)
        frame = result.frame.iloc[: horizon or model.horizon].copy()
        frame.attrs["notes"] = list(result.notes)
        frame.attrs["residual_models"] = model.residual_summary()
        return frame

    def _hourly_future(self, future: pd.DataFrame) -> HourlyData:
        from stef_ray.data import frame_to_hourly

        table = future
        if self.data_config.timestamp_col not in future.columns and isinstance(future.index, pd.DatetimeIndex):
            table = future.rename_axis(self.data_config.timestamp_col).reset_index()
        config = self.data_config.model_copy(update={"target_col": "__load__", "holidays": None})
        return frame_to_hourly(table.assign(__load__=1.0), config, source="future")

    def backtest(self, df: pd.DataFrame | None = None, start: str | pd.Timestamp | None = None, days: int = 28,
                 refit_every: int = 7) -> pd.DataFrame:
        """Rolling daily 00:00 forecasts from ``start`` for ``days``, refitting every ``refit_every`` days on
        the data before (0: once); one row per forecast hour with ``actual``, ``forecast`` and the quantiles.
        The overall scores are in ``.attrs["overall"]`` (MAPE, coverage, ...), as ``stef-ray backtest`` prints."""
        from stef_ray.evaluation.backtest import run_backtest

        data = self._hourly(df) if df is not None else self.data
        if data is None:
            raise ModelNotFoundError("backtest needs data: pass df")
        first = pd.Timestamp(start) if start is not None else data.frame.index[-1].normalize() - pd.Timedelta(days=days - 1)
        result = run_backtest(data, self.model_config, first, days, refit_every, ["hybrid"])
        frame = result.forecasts.drop(columns="model").reset_index(drop=True)
        frame.attrs["overall"] = result.overall.drop(columns="model").iloc[0].to_dict()
        return frame

    # ------------------------------------------------------------------ the bundle
    def save(self, path: str | Path) -> Path:
        """Write the bundle folder (what ``stef-ray forecast --model``, MLflow and Serve read)."""
        from stef_ray.bundle import save_bundle

        return save_bundle(self._fitted(), path, self.data_config)

    @classmethod
    def load(cls, path: str | Path) -> HybridForecaster:
        """A forecaster from a bundle folder; ``predict`` then needs ``df`` (recent data)."""
        from stef_ray.bundle import load_bundle

        model, manifest = load_bundle(path)
        forecaster = cls(model.config)
        forecaster.data_config = manifest.data
        forecaster.model = model
        return forecaster

    def _fitted(self):
        if self.model is None:
            raise ModelNotFoundError("this forecaster is not fitted: call fit(df) first, or load(path)")
        return self.model

    def __repr__(self) -> str:
        state = "fitted" if self.model is not None else "not fitted"
        return f"HybridForecaster(exog={self.data_config.exog}, {state})"


def _configs(config: ModelConfig | dict | str | Path | None) -> tuple[ModelConfig, DataConfig]:
    if config is None:
        return ModelConfig(), DataConfig()
    if isinstance(config, ModelConfig):
        return config.model_copy(deep=True), DataConfig()
    if isinstance(config, dict):
        from pydantic import ValidationError

        from stef_ray.config_loading import format_validation_error

        try:
            return ModelConfig.model_validate(config), DataConfig()
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "config")) from None
    loaded = load_config(TrainConfig, config)
    return loaded.model, loaded.data
