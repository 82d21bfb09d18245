"""stef_ray: short-term electricity-demand forecasting on Ray.

The core (data, features, models, bundle, metrics, backtest) is plain numpy/pandas/torch; the adapters in
``integrations/`` and ``serving/`` bring in Ray, MLflow and InfluxDB. The Python API::

    from stef_ray import HybridForecaster

    model = HybridForecaster(exog=["temperature", "workday"]).fit(df)
    forecast = model.predict()
"""

__version__ = "0.1.0"

__all__ = ["HybridForecaster", "__version__"]


def __getattr__(name: str):
    # Lazy: `import stef_ray` stays light (the CLI's --help, the Serve replicas); the API pulls in pandas
    # and the models only when it is used.
    if name == "HybridForecaster":
        from stef_ray.api import HybridForecaster

        return HybridForecaster
    raise AttributeError(f"module 'stef_ray' has no attribute {name!r}")
