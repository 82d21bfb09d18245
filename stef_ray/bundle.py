"""The one artifact: a model bundle folder, written by training and read by the CLI, MLflow and Serve.

    manifest.json        format version, package version, configs, training window and metrics, features
    trend.json           log-linear trend parameters
    seasonality.json     Fourier/exogenous design spec and ridge coefficients
    residual_scaler.json scaling of the residual models' input channels
    residual_linear.json linear residual model settings, when used
    residual_linear.npz  its ridge coefficients (numpy arrays, read with allow_pickle=False); format 1
                         bundles kept them in residual_linear.json
    residual_boosted.json  gradient-boosted residual trees' settings, when used
    residual_boosted.npz   their node arrays (feature, threshold, children, leaf value)
    residual_neural.pt   the neural residual's weights (every ensemble member's state_dict, keys prefixed by
                         the member number; read with weights_only=True), when trained; residual_lstm.pt in
                         bundles before format 7 (one LSTM without an origin-hour input)
    quantiles.json       conformal offsets per local origin hour and lead hour (log space; one row for every
                         origin hour before format 5)

No pickle anywhere. A bundle is written to a temporary sibling folder and renamed into place, so a
crash never leaves a half-written bundle where a model is expected.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from stef_ray import __version__
from stef_ray.config import DataConfig, ModelConfig
from stef_ray.config_loading import format_validation_error
from stef_ray.exceptions import BundleError, ModelNotFoundError
from stef_ray.manifest import BundleManifest
from stef_ray.models.hybrid import HybridModel
from stef_ray.models.residual_boosted import BoostedResidual
from stef_ray.models.residual_linear import LinearResidual
from stef_ray.models.seasonality import FourierSeasonality
from stef_ray.models.trend import LogLinearTrend

# 2: the linear residual's arrays moved from residual_linear.json to residual_linear.npz (6.4 MB of JSON for
# 24 ridges). 3: gradient-boosted residual trees (residual_boosted.*), which a format 2 reader would not
# know to add. 4: the point forecast moved from the median to the MAPE optimum (the manifest's
# training.point_log_adjust), which a format 3 reader would ignore, forecasting the median without a word.
# 5: quantile offsets per local origin hour (24 rows of lead hours), which a format 4 reader would
# broadcast wrongly. 6: the seasonality's exogenous inputs left out by cross-validation (seasonality.json's
# dropped_exog), whose residual channels must then be zero: a format 5 reader would feed them in. Older
# formats still load (with the median point before 4, one row for every
# origin hour before 5); an older stef_ray refuses a newer bundle with a clear message.
# 7: the neural residual (LSTM or MLP, an ensemble, with the origin hour as an input) in residual_neural.pt,
# trained on the linear layers' out-of-fold errors and kept or dropped by the validation blocks (the
# manifest's training.neural); a format 6 reader would load it as the old LSTM and fail.
# 8: the smoothed weather inputs read a bounded window (seasonality.json's smoothing_window_hours), so a
# forecast needs that warm-up before its lookback; a format 7 reader would smooth from the request's first
# row and forecast something else than the backtest, without a word.
FORMAT_VERSION = 8
MANIFEST = "manifest.json"
WEIGHTS = "residual_neural.pt"
LEGACY_WEIGHTS = "residual_lstm.pt"  # formats 1-6
LINEAR = "residual_linear.json"
LINEAR_ARRAYS = "residual_linear.npz"
BOOSTED = "residual_boosted.json"
BOOSTED_ARRAYS = "residual_boosted.npz"


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, allow_nan=True))


def save_bundle(model: HybridModel, path: str | Path, data_config: DataConfig | None = None,
                extra: dict | None = None) -> Path:
    """Write ``model`` as a bundle folder at ``path`` (replacing an existing bundle atomically)."""
    import torch  # the core's only torch use outside the residual model: writing its state_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        manifest = {
            "format_version": FORMAT_VERSION,
            "package": "stef_ray",
            "package_version": __version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_config": model.config.model_dump(mode="json"),
            "data_config": (data_config or DataConfig(exog=model.exog)).model_dump(mode="json"),
            "exog": model.exog,
            "feature_names": {
                "seasonality": model.seasonality.feature_names,
                "residual_channels": model.residual.channel_names,
            },
            "lookback_hours": model.lookback,
            "horizon_hours": model.horizon,
            "training": model.training.as_json(),
            "has_neural": model.residual.neural is not None,
            "has_linear": model.residual.linear is not None,
            "has_boosted": model.residual.boosted is not None,
            "extra": extra or {},
        }
        BundleManifest.model_validate(manifest)  # what every reader will parse: fail here, not there
        _write_json(staging / MANIFEST, manifest)
        _write_json(staging / "trend.json", model.trend.to_state())
        _write_json(staging / "seasonality.json", model.seasonality.to_state())
        _write_json(staging / "residual_scaler.json", model.residual.scaler)
        _write_json(staging / "quantiles.json", model.quantile_offsets)
        stack = model.residual
        for component, settings, arrays_file in ((stack.linear, LINEAR, LINEAR_ARRAYS),
                                                 (stack.boosted, BOOSTED, BOOSTED_ARRAYS)):
            if component is not None:
                meta, arrays = component.to_parts()
                _write_json(staging / settings, meta)
                np.savez(staging / arrays_file, **arrays)
        if stack.neural is not None:  # its settings are the manifest's model_config; its weights torch's format
            torch.save(stack.neural.state_dict(), staging / WEIGHTS)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            staging.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def read_manifest(path: str | Path) -> BundleManifest:
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ModelNotFoundError(
            f"no model bundle at {path} (missing {MANIFEST}); train first: stef-ray train --out {path}"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        raise BundleError(f"{manifest_path} is not valid JSON; the bundle is damaged, retrain it") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {path} has format version {version}, this stef_ray {__version__} reads up to "
            f"{FORMAT_VERSION}; upgrade stef_ray to load it"
        )
    try:
        return BundleManifest.model_validate(manifest)
    except ValidationError as err:
        raise BundleError(format_validation_error(err, str(manifest_path)) + "; the bundle is damaged, retrain it") from None


def upgraded_settings(settings: dict, format_version: int) -> dict:
    """A bundle's model settings as today's ModelConfig takes them. Formats 2 to 6 wrote
    ``residual.train_days: 0`` (the neural residual's windows from the whole history); it now counts the
    days of its validation folds (28 at least) and only a refit reads it, so the default stands in."""
    residual = settings.get("residual") or {}
    if format_version > 6 or residual.get("train_days", 28) >= 28:
        return settings
    return {**settings, "residual": {k: v for k, v in residual.items() if k != "train_days"}}


def load_bundle(path: str | Path, device: str | None = None) -> tuple[HybridModel, BundleManifest]:
    """Read a bundle folder; returns the model and its manifest.

    ``device`` (auto, cpu, cuda) says where the neural residual runs; by default the one the bundle was trained
    with, except that a bundle trained on ``cuda`` runs where it can (``auto``): a model trained on a
    GPU node must still forecast on a CPU-only serving or laptop machine."""
    import torch

    from stef_ray.models.residual_neural import NeuralResidual

    path = Path(path)
    manifest = read_manifest(path)
    try:
        config = ModelConfig.model_validate(upgraded_settings(manifest.model_settings, manifest.format_version))
        if device:
            config.residual.device = device
        elif config.residual.device == "cuda":
            config.residual.device = "auto"
        model = HybridModel(config, manifest.exog)
        model.trend = LogLinearTrend.from_state(json.loads((path / "trend.json").read_text()))
        model.seasonality = FourierSeasonality.from_state(json.loads((path / "seasonality.json").read_text()))
        stack = model.residual
        stack.scaler = json.loads((path / "residual_scaler.json").read_text())
        model.quantile_offsets = json.loads((path / "quantiles.json").read_text())
        model.training = manifest.training
        if manifest.has_linear:
            meta = json.loads((path / LINEAR).read_text())
            if manifest.format_version >= 2:
                with np.load(path / LINEAR_ARRAYS, allow_pickle=False) as arrays:
                    stack.linear = LinearResidual.from_parts(meta, dict(arrays))
            else:  # format 1: the arrays are in the JSON
                stack.linear = LinearResidual.from_state(meta)
        if manifest.has_boosted:  # bundles from before the trees have none
            with np.load(path / BOOSTED_ARRAYS, allow_pickle=False) as arrays:
                stack.boosted = BoostedResidual.from_parts(json.loads((path / BOOSTED).read_text()), dict(arrays))
        channels = len(manifest.feature_names["residual_channels"])
        if manifest.has_neural:
            state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
            stack.neural = NeuralResidual(config.residual, config.forecast, channels, stack.hour_channels).load_state_dict(state)
        elif manifest.has_residual:  # formats 1-6: one LSTM, no origin-hour input
            state = torch.load(path / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
            config.residual.architecture, config.residual.ensemble = "lstm", 1
            neural = NeuralResidual(config.residual, config.forecast, channels, stack.hour_channels, origin_hour=False)
            stack.neural = neural.load_state_dict(state, members_prefixed=False)
        stack.restore_verdict(manifest.training)
    except FileNotFoundError as err:
        raise BundleError(f"bundle {path} is incomplete: {Path(err.filename).name} is missing; retrain it") from None
    except (KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as err:
        raise BundleError(f"bundle {path} cannot be read ({type(err).__name__}: {str(err)[:120]}); retrain it") from None
    return model, manifest
