"""serve_config.yaml from the command line, the tests and the benchmarks: read it with overrides
(``read_serve_config``), check it against Serve's schema and this project's application args
(``validate_serve_config``, errors that name the key), and deploy it on the connected Ray cluster as
``serve run``/``serve deploy`` do (``deploy_config``; a re-deploy with a new ingress ``user_config`` is how a
model is hot-swapped). It imports no deployment: checking a file does not build the application.
"""

from __future__ import annotations

import os

from pydantic import ValidationError

from stef_ray.config_loading import format_validation_error
from stef_ray.exceptions import ConfigError
from stef_ray.serving.app_args import AppArgs, IngressConfig, validated

INGRESS = "ForecastIngress"  # the ingress deployment's name (stef_ray.serving.ingress)
# build_app's module: applications whose import_path starts with it take AppArgs and an IngressConfig.
APP_MODULE = "stef_ray.serving.app"


def read_serve_config(
    path: str | os.PathLike, model_source: str | None = None, host: str | None = None, port: int | None = None
) -> dict:
    """serve_config.yaml as a dict validated against Serve's schema, with command-line overrides.

    ``model_source`` replaces the model of every application built by ``build_app`` (its args and its
    ingress's user_config). Raises ConfigError naming the key that Serve's schema refuses.
    """
    from stef_ray.config_loading import read_yaml

    raw = read_yaml(path)
    for app in raw.get("applications") or []:
        if model_source is None or not str(app.get("import_path", "")).startswith(f"{APP_MODULE}:"):
            continue
        app.setdefault("args", {})["model_source"] = model_source
        deployments = app.setdefault("deployments", [])
        ingress = next((d for d in deployments if d.get("name") == INGRESS), None)
        if ingress is None:
            deployments.append(ingress := {"name": INGRESS})
        ingress["user_config"] = {**(ingress.get("user_config") or {}), "model_source": model_source}
    if host is not None or port is not None:
        http = raw.setdefault("http_options", {})
        http.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    validate_serve_config(raw, str(path))
    return raw


def validate_serve_config(raw: dict, source: str = "serve config") -> None:
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    for app in raw.get("applications") or []:
        if str(app.get("import_path", "")) == "stef_ray.serving.fleet_app:build_fleet_app":
            from stef_ray.serving.fleet_app import FleetArgs

            validated(FleetArgs, app.get("args"), f"{source}: applications[{app.get('name')}].args")
        if str(app.get("import_path", "")).startswith(f"{APP_MODULE}:"):
            where = f"{source}: applications[{app.get('name')}]"
            validated(AppArgs, app.get("args"), f"{where}.args")
            for deployment in app.get("deployments") or []:
                if deployment.get("name") == INGRESS and deployment.get("user_config") is not None:
                    validated(IngressConfig, deployment["user_config"], f"{where}.{INGRESS}.user_config")


def deploy_config(raw: dict, wait_s: float = 120.0) -> None:
    """Deploy a Serve config dict on the connected Ray cluster, as ``serve run/deploy CONFIG`` do, and
    wait until every application runs. Re-deploying with only ``user_config`` changed reconfigures the
    replicas in place (that is how the model is hot-swapped)."""
    import time

    from ray.serve._private import api as serve_private  # what `serve run config.yaml` itself calls
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(raw)
    client = serve_private.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
    )
    client.deploy_apps(schema, _blocking=False)
    names = {app.name for app in schema.applications}
    deadline = time.monotonic() + wait_s
    while True:
        statuses = {s.name: s.app_status for s in client.list_serve_statuses() if s.name in names}
        states = {name: str(getattr(status.status, "value", status.status)) for name, status in statuses.items()}
        failed = [name for name, state in states.items() if state in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise ConfigError(f"application {failed[0]} failed to deploy: {statuses[failed[0]].message[:400]}")
        if len(states) == len(names) and all(state == "RUNNING" for state in states.values()):
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"applications not running after {wait_s:.0f} s: {states}")
        time.sleep(0.2)
