"""The HTTP forecast API: a Ray-free ``ForecastService`` (service.py, with model_source.py, prepared.py and
components.py), its request/response models (schemas.py), the routes as a FastAPI app that also runs on its
own (plain_app.py), and the Ray Serve application that composes trend, seasonality and residual deployments
behind it (app.py: app_args.py, deployments.py, ingress.py, forecast_store.py; serve_config.py deploys it).

Import the submodule you need; this package imports nothing heavy (no Ray, no torch) on its own.
"""
