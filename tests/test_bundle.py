"""The bundle: save -> load gives identical forecasts; no pickle; versions; a golden bundle of every format keeps
loading and forecasting the same numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stef_ray.bundle import FORMAT_VERSION, load_bundle, save_bundle
from stef_ray.config import ResidualConfig
from stef_ray.exceptions import BundleError, ModelNotFoundError
from stef_ray.forecasting import forecast_from_frames

GOLDEN = Path(__file__).parent / "golden" / "bundle_v1"


def test_bundle__round_trip_gives_identical_forecasts(fitted_model, synthetic_hourly, tmp_path):
    path = save_bundle(fitted_model, tmp_path / "bundle")
    loaded, manifest = load_bundle(path)
    history = synthetic_hourly.frame.iloc[-800:-24]
    future = synthetic_hourly.frame.iloc[-24:]
    expected = forecast_from_frames(fitted_model, history, future).frame
    got = forecast_from_frames(loaded, history, future).frame
    np.testing.assert_array_equal(got.drop(columns="timestamp").to_numpy(), expected.drop(columns="timestamp").to_numpy())
    assert manifest.format_version == FORMAT_VERSION
    assert loaded.residual.boosted is not None and manifest.has_boosted  # the trees made the trip too
    assert manifest.exog == ["temperature", "workday"]
    assert manifest.training.hours == 24 * 60
    # The training record is typed both sides and makes the trip whole (the gate's evidence, the calibration).
    assert loaded.training == fitted_model.training and loaded.training.neural.days > 0
    assert loaded.training.point_log_adjust == fitted_model.training.point_log_adjust
    assert manifest.data.exog == ["temperature", "workday"] and manifest.timezone == "UTC"


def test_bundle__trained_on_a_gpu_forecasts_on_a_cpu_only_machine(fitted_model, synthetic_hourly, tmp_path):
    """A bundle whose config says cuda (trained on a GPU node) must not refuse to load where no GPU is."""
    path = save_bundle(fitted_model, tmp_path / "bundle")
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model_config"]["residual"]["device"] = "cuda"
    manifest_path.write_text(json.dumps(manifest))
    loaded, _ = load_bundle(path)
    assert loaded.config.residual.device == "auto"
    history, future = synthetic_hourly.frame.iloc[-800:-24], synthetic_hourly.frame.iloc[-24:]
    np.testing.assert_allclose(forecast_from_frames(loaded, history, future).frame["forecast"],
                               forecast_from_frames(fitted_model, history, future).frame["forecast"], rtol=1e-6)
    assert load_bundle(path, device="cpu")[0].config.residual.device == "cpu"  # an explicit choice wins


def test_bundle__contains_no_pickle(fitted_model, tmp_path):
    path = save_bundle(fitted_model, tmp_path / "bundle")
    names = sorted(p.name for p in path.iterdir())
    assert names == ["manifest.json", "quantiles.json", "residual_boosted.json", "residual_boosted.npz",
                     "residual_linear.json", "residual_linear.npz", "residual_neural.pt",
                     "residual_scaler.json", "seasonality.json", "trend.json"]
    import torch

    torch.load(path / "residual_neural.pt", weights_only=True)  # raises if anything but tensors were saved
    np.load(path / "residual_linear.npz", allow_pickle=False)["coef"]  # raises if an object array was saved
    with np.load(path / "residual_boosted.npz", allow_pickle=False) as trees:
        assert {name: trees[name].dtype.kind for name in trees.files} == {
            "feature": "i", "threshold": "f", "missing_left": "b", "left": "i", "right": "i", "value": "f", "roots": "i"}


def test_bundle__format_1_linear_residual_in_json_still_loads(fitted_model, synthetic_hourly, tmp_path):
    # Format 1 kept the linear residual's arrays in residual_linear.json; such bundles load and forecast alike.
    path = save_bundle(fitted_model, tmp_path / "bundle")
    (path / "residual_linear.json").write_text(json.dumps(fitted_model.residual.linear.to_state()))
    (path / "residual_linear.npz").unlink()
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(manifest | {"format_version": 1}))
    history, future = synthetic_hourly.frame.iloc[-800:-24], synthetic_hourly.frame.iloc[-24:]
    np.testing.assert_allclose(forecast_from_frames(load_bundle(path)[0], history, future).frame["forecast"],
                               forecast_from_frames(fitted_model, history, future).frame["forecast"], rtol=1e-12)


@pytest.mark.parametrize("arrays", ["residual_linear.npz", "residual_boosted.npz"])
def test_bundle__damaged_residual_arrays_are_a_clear_error(fitted_model, tmp_path, arrays):
    path = save_bundle(fitted_model, tmp_path / "bundle")
    (path / arrays).write_bytes(b"not a zip file")
    with pytest.raises(BundleError, match="cannot be read .*retrain it"):
        load_bundle(path)
    (path / arrays).unlink()
    with pytest.raises(BundleError, match=f"{arrays} is missing"):
        load_bundle(path)


def test_bundle__newer_format_version_is_refused(fitted_model, tmp_path):
    path = save_bundle(fitted_model, tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="upgrade stef_ray"):
        load_bundle(path)


def test_bundle__missing_and_incomplete_bundles_are_clear(fitted_model, tmp_path):
    with pytest.raises(ModelNotFoundError, match="train first"):
        load_bundle(tmp_path / "nothing")
    path = save_bundle(fitted_model, tmp_path / "bundle")
    (path / "seasonality.json").unlink()
    with pytest.raises(BundleError, match="seasonality.json is missing"):
        load_bundle(path)


def test_bundle__overwrite_is_atomic(fitted_model, tmp_path):
    path = save_bundle(fitted_model, tmp_path / "bundle")
    save_bundle(fitted_model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging or .old leftovers


def test_bundle__golden_v1_still_loads_and_forecasts(synthetic_hourly):
    if not GOLDEN.exists():
        pytest.fail("golden bundle missing: run `python tests/golden/make_golden.py` once and commit it")
    model, manifest = load_bundle(GOLDEN)
    assert manifest.format_version == 1
    expected = json.loads((GOLDEN.parent / "bundle_v1_forecast.json").read_text())
    history = synthetic_hourly.frame.iloc[-800:-24]
    got = forecast_from_frames(model, history, synthetic_hourly.frame.iloc[-24:]).frame
    np.testing.assert_allclose(got["forecast"].to_numpy(), expected["forecast"], rtol=1e-6)


@pytest.mark.parametrize("version", range(2, FORMAT_VERSION + 1))
def test_bundle__golden_of_every_format_loads_and_forecasts_as_when_it_was_written(version, synthetic_hourly):
    # Each golden was written by the commit that introduced its format (tests/golden/make_golden.py), with
    # its neural residual, ridges and (formats 3-6) trees; today's code must read it and forecast the same.
    path = GOLDEN.parent / f"bundle_v{version}"
    if not path.exists():
        pytest.fail(f"no golden bundle for format {version}: run `python tests/golden/make_golden.py` and commit it")
    model, manifest = load_bundle(path)
    assert manifest.format_version == version
    expected = json.loads((GOLDEN.parent / f"bundle_v{version}_forecast.json").read_text())
    history = synthetic_hourly.frame.iloc[-800:-24]
    got = forecast_from_frames(model, history, synthetic_hourly.frame.iloc[-24:]).frame
    np.testing.assert_allclose(got["forecast"].to_numpy(), expected["forecast"], rtol=1e-6)


def test_bundle__formats_2_to_6_with_the_whole_history_setting_load(tmp_path):
    # Those formats wrote residual.train_days: 0 (all history), which today's settings refuse (28 at least).
    manifest = json.loads((GOLDEN.parent / "bundle_v4" / "manifest.json").read_text())
    assert manifest["model_config"]["residual"]["train_days"] == 0
    model, _ = load_bundle(GOLDEN.parent / "bundle_v4")
    assert model.config.residual.train_days == ResidualConfig().train_days


def test_bundle__golden_fixture_is_copyable(tmp_path):
    # The golden bundle is plain files: copying it anywhere keeps it loadable (no absolute paths inside).
    shutil.copytree(GOLDEN, tmp_path / "copy")
    load_bundle(tmp_path / "copy")


def test_bundle__a_manifest_of_the_wrong_shape_is_one_line_naming_the_key(fitted_model, tmp_path):
    path = save_bundle(fitted_model, tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["exog"] = "temperature"  # a string where the list of inputs belongs
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json: exog: Input should be a valid list.*retrain it"):
        load_bundle(path)


def test_manifest__reads_what_the_writers_recorded_in_one_place():
    from stef_ray.manifest import BundleManifest

    manifest = BundleManifest.model_validate({
        "format_version": 8, "model_config": {}, "exog": ["temperature"], "future_key": 1,
        "data_config": {"timezone": "US/Eastern", "holidays": "NERC", "a_removed_option": True},
        "training": {"end": "2017-01-01T00:00:00-05:00", "point_log_adjust": [0.0]},
        "extra": {"holdout": {"MAPE": 3.2}, "registry_version": 4, "registered_model_name": "power-demand-PJME"},
    })
    assert (manifest.timezone, manifest.calendar, manifest.holdout_mape) == ("US/Eastern", "NERC", 3.2)
    assert (manifest.model_name, manifest.model_version) == ("power-demand-PJME", "4")
    assert manifest.data.exog == [] and manifest.data.holidays == "NERC"  # the removed option is left out
    assert manifest.training.model_dump(exclude_unset=True)["point_log_adjust"] == [0.0]  # kept for the model
    assert manifest.to_json()["future_key"] == 1 and "model_config" in manifest.to_json()
