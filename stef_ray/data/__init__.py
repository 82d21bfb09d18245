"""Reading, validating and regularising hourly load data; built-in and synthetic datasets."""

from stef_ray.data.hourly import DataReport, HourlyData
from stef_ray.data.loading import frame_to_hourly, load_hourly

__all__ = ["DataReport", "HourlyData", "frame_to_hourly", "load_hourly"]
