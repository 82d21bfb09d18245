import pytest

from stef_ray.config import TrainConfig
from stef_ray.config_loading import load_config
from stef_ray.exceptions import ConfigError


@pytest.mark.parametrize("days", [2, -1])
def test_load_config__a_season_weighting_narrower_than_a_week_names_the_key(tmp_path, days):
    path = tmp_path / "train.yaml"
    path.write_text(f"model:\n  residual:\n    linear_season_days: {days}\n")
    with pytest.raises(ConfigError, match=r"model\.residual\.linear_season_days: ") as err:
        load_config(TrainConfig, path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("days", [0, 7, 40])
def test_load_config__season_weighting_off_or_a_week_or_wider_is_taken(tmp_path, days):
    path = tmp_path / "train.yaml"
    path.write_text(f"model:\n  residual:\n    linear_season_days: {days}\n")
    assert load_config(TrainConfig, path).model.residual.linear_season_days == days


def test_model_config__the_forecast_spec_is_read_from_its_old_places_too():
    # Configs and bundles written before `model.forecast` kept these in `residual` and at the model's top.
    from stef_ray.config import ModelConfig

    config = ModelConfig.model_validate({"residual": {"lookback_hours": 72, "horizon_hours": 12, "linear": True},
                                         "quantiles": [0.95, 0.05, 0.5]})
    assert (config.forecast.lookback_hours, config.forecast.horizon_hours) == (72, 12)
    assert config.forecast.quantiles == [0.05, 0.5, 0.95] and config.forecast.issue_hours == [0]
    assert ModelConfig.model_validate(config.model_dump()) == config  # what a new bundle writes reads back


def test_load_config__a_spec_given_twice_differently_is_one_line_naming_both_places(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  residual:\n    lookback_hours: 72\n  forecast:\n    lookback_hours: 96\n")
    with pytest.raises(ConfigError, match=r"model\.residual\.lookback_hours .*model\.forecast\.lookback_hours") as err:
        load_config(TrainConfig, path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("hours", "key"), [("[24]", "issue_hours"), ("[3, 3]", "issue_hours"), ("[]", "issue_hours")])
def test_load_config__issue_hours_must_be_distinct_hours_of_a_day(tmp_path, hours, key):
    path = tmp_path / "train.yaml"
    path.write_text(f"model:\n  forecast:\n    {key}: {hours}\n")
    with pytest.raises(ConfigError, match=rf"model\.forecast\.{key}: "):
        load_config(TrainConfig, path)
