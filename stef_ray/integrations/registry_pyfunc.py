"""MLflow adapter, the model: a bundle folder logged as a pyfunc model ("models from code", no pickle).

The logged model's code file (``MODEL_CODE``) builds ``BundleForecaster``, which reads the bundle artifact;
``predict`` takes history + future rows and returns the 24 h forecast with its components and quantiles
(``predict_frame``, a plain function). The requirements are pinned to the versions installed when the
model was logged, so `mlflow models serve` can rebuild that environment.
"""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stef_ray.data.holidays import HOLIDAY_COLUMN, holiday_flags
from stef_ray.data.hourly import LOAD, HourlyData

if TYPE_CHECKING:
    from stef_ray.manifest import BundleManifest

MODEL_ARTIFACT = "model"
BUNDLE_ARTIFACT = "bundle"


def _pinned(names: tuple[str, ...]) -> list[str]:
    """``name==installed version`` for each distribution, so that `mlflow models serve` can rebuild the
    environment the model was logged from (a name alone would take whatever is newest)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")  # 2.13.0+cpu: the index decides the build
        except PackageNotFoundError:
            pins.append(name)
    return pins


PIP_REQUIREMENTS = _pinned(("stef-ray", "numpy", "pandas", "torch", "pydantic", "pyyaml", "mlflow"))


def _forecaster_class() -> type:
    import mlflow.pyfunc

    class BundleForecaster(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc around a bundle folder (artifact ``bundle``).

        Input: a DataFrame with columns ``timestamp`` (ISO 8601), ``load`` (MW; empty on the hours to
        forecast) and the model's exogenous columns. Rows up to the last observed load are the history, rows
        after it the known future. Output: one row per hour ahead with forecast, trend, seasonality, residual
        and the quantile columns (MW), timestamps as ISO 8601 strings.
        """

        def load_context(self, context: Any) -> None:
            from stef_ray.bundle import load_bundle

            self.model, self.manifest = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
            return predict_frame(self.model, self.manifest, model_input)

    BundleForecaster.__module__ = __name__
    return BundleForecaster


def __getattr__(name: str) -> Any:
    # The pyfunc class subclasses mlflow's, so it is built on first use: importing this module stays light.
    if name == "BundleForecaster":
        globals()[name] = _forecaster_class()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def predict_frame(model: Any, manifest: BundleManifest, rows: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's predict, as a plain function: history + future rows -> forecast frame."""
    from stef_ray.exceptions import DataError
    from stef_ray.forecasting import forecast_from_frames

    if "timestamp" not in rows.columns or LOAD not in rows.columns:
        raise DataError("input needs the columns 'timestamp' and 'load' (empty load on the hours to forecast)")
    timezone = manifest.training.timezone or "UTC"  # the zone the model's index was fitted in
    stamps = pd.to_datetime(rows["timestamp"], utc=True).dt.tz_convert(timezone)
    frame = rows.drop(columns="timestamp").set_index(pd.DatetimeIndex(stamps, name="timestamp")).sort_index()
    frame[LOAD] = pd.to_numeric(frame[LOAD], errors="coerce")
    observed = np.flatnonzero(np.isfinite(frame[LOAD].to_numpy(dtype=float)))
    if len(observed) == 0:
        raise DataError("input has no observed load: give at least the last week of history")
    last = observed[-1]
    history, future = frame.iloc[: last + 1], frame.iloc[last + 1 :]
    calendar = manifest.calendar
    if calendar and HOLIDAY_COLUMN in model.exog:
        # A 'holiday' input made from a calendar is known for any hour: rows (or whole future hours) that
        # leave it out take the calendar's flags, as `stef-ray forecast` and the HTTP endpoint do.
        hours = pd.date_range(history.index[-1], periods=model.horizon + 1, freq="h", name="timestamp")[1:]
        future = future.reindex(future.index.union(hours))
        history, future = (_with_calendar(part, calendar) for part in (history, future))
    forecast = forecast_from_frames(model, history, future if len(future) else None)
    out = forecast.frame.copy()
    out["timestamp"] = out["timestamp"].map(lambda ts: ts.isoformat())
    return out


def _with_calendar(frame: pd.DataFrame, calendar: str) -> pd.DataFrame:
    """``frame`` with its missing holiday flags (or the whole column) taken from ``calendar``."""
    flags = pd.Series(holiday_flags(frame.index, calendar), index=frame.index)
    given = pd.to_numeric(frame[HOLIDAY_COLUMN], errors="coerce") if HOLIDAY_COLUMN in frame.columns else flags * np.nan
    return frame.assign(**{HOLIDAY_COLUMN: given.fillna(flags)})


# The code file imports BundleForecaster from `registry`, not from this module: one import path for the
# models logged before this module existed and after, so this text (and the logged file) never changes.
MODEL_CODE = textwrap.dedent(
    """\
    # MLflow models-from-code entry: the pyfunc is a bundle reader, no pickled object.
    import mlflow

    from stef_ray.integrations.registry import BundleForecaster

    mlflow.models.set_model(BundleForecaster())
    """
)


def example_input(data: HourlyData, origin: pd.Timestamp, hours: int, horizon: int, exog: list[str]) -> pd.DataFrame:
    """``hours`` of history before ``origin`` (the model's ``history_hours``) and ``horizon`` future rows
    (load empty)."""
    frame = data.frame
    position = int(frame.index.searchsorted(origin))
    rows = frame.iloc[max(position - hours, 0) : position + horizon][[LOAD, *exog]].copy()
    rows.iloc[position - max(position - hours, 0) :, rows.columns.get_loc(LOAD)] = np.nan
    rows.insert(0, "timestamp", [ts.isoformat() for ts in rows.index])
    return rows.reset_index(drop=True)


def log_bundle_model(bundle_path: Path, input_example: pd.DataFrame) -> Any:
    """Log the bundle as a pyfunc model in the active run; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    from stef_ray.bundle import load_bundle

    model, manifest = load_bundle(bundle_path)
    output = predict_frame(model, manifest, input_example)
    signature = infer_signature(input_example, output)
    if manifest.calendar:
        # A calendar-made 'holiday' input may be left out (predict_frame fills it from the calendar), so the
        # signature must not make MLflow refuse an input without it.
        from mlflow.types.schema import ColSpec, Schema

        signature.inputs = Schema([
            ColSpec(spec.type, spec.name, required=False) if spec.name == HOLIDAY_COLUMN else spec
            for spec in signature.inputs.inputs
        ])
    with tempfile.TemporaryDirectory() as folder:
        code = Path(folder) / "stef_ray_model.py"
        code.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(code),
            artifacts={BUNDLE_ARTIFACT: str(bundle_path)},
            signature=signature,
            input_example=input_example,
            pip_requirements=PIP_REQUIREMENTS,
        )
