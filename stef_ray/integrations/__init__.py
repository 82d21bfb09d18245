"""Thin adapters between the forecasting core and outside services (Ray Tune, MLflow, InfluxDB)."""
