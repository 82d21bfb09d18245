"""Reading, validating and regularising hourly load data; built-in and synthetic datasets."""

from stef_ray.data.hourly import HourlyData, DataReport
from stef_ray.data.loading import load_hourly, frame_to_hourly

__all__ = ["DataReport", "HourlyData", "frame_to_hourly", "load_hourly"]
