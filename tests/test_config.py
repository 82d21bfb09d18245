import pytest

from stef_ray.config import TrainConfig, load_config
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
