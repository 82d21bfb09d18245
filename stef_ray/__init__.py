"""stef_ray: short-term electricity-demand forecasting on Ray.

The core (data, features, models, bundle, metrics, backtest) is plain numpy/pandas/torch; the adapters in
``integrations/`` and ``serving/`` bring in Ray, MLflow and InfluxDB.
"""

__version__ = "0.1.0"
