"""`stef-ray serve`: the forecast API on a local Ray (Serve app from serve_config.yaml), in the foreground."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

HELP = "serve forecasts over HTTP with Ray Serve (trend, seasonality and residual deployments)"
DESCRIPTION = """\
Start Ray locally (this machine's CPUs), deploy the applications of a Serve config file (as
`serve run CONFIG` does), print the URL and a curl example, and serve until Ctrl-C.

To hot-swap the model on a running cluster, change ForecastIngress.user_config.model_source in the
config and `serve deploy` it: replicas reconfigure in place, no request fails.

examples:
  stef-ray serve                                            # serve_config.yaml, models:/power-demand-hybrid@champion
  stef-ray serve --model models/production --port 8080      # a bundle folder instead of the registry
  STEF_RAY_API_KEY=secret stef-ray serve                    # require an X-API-Key header
  stef-ray serve --no-dashboard --num-cpus 2                # leave the dashboard's CPU to requests
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"),
                        help="Serve config file (default: %(default)s)")
    parser.add_argument("--model", metavar="PATH|models:/NAME@ALIAS",
                        help="model source, overriding the config's (bundle folder or registry URI)")
    parser.add_argument("--host", help="listen address (default: the config's http_options.host)")
    parser.add_argument("--port", type=int, help="HTTP port (default: the config's http_options.port)")
    parser.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                        help="start the Ray dashboard (replicas, logs, the stef_* metrics; default: on). "
                        "--no-dashboard leaves its few percent of CPU to requests on a small machine")
    parser.set_defaults(handler=run)


def curl_example(url: str, exog: list[str], lookback: int, api_key: bool) -> str:
    row = {"timestamp": "2024-05-01T00:00:00+00:00", "load": 5120.5} | dict.fromkeys(exog, 0.0)
    future = {"timestamp": "2024-05-08T00:00:00+00:00"} | dict.fromkeys(exog, 0.0)
    key = ' -H "X-API-Key: $STEF_RAY_API_KEY"' if api_key else ""
    return (
        f"curl -s {url}/forecast -H 'Content-Type: application/json'{key} \\\n"
        f"  -d '{{\"history\": [{json.dumps(row)}, ... {lookback} hourly rows], "
        f"\"future\": [{json.dumps(future)}, ...], \"horizon\": 24}}'"
    )


class _StopSignalError(Exception):
    """SIGTERM (a service manager stopping the server): leave as Ctrl-C does, without a trace."""


def _raise_stop(signum, _frame) -> None:
    raise _StopSignalError(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    import os
    import time

    from stef_ray.serving.mode import use_throughput_mode

    use_throughput_mode()  # before ray.serve is imported and Ray starts: both read the variables once
    import ray

    from stef_ray.exceptions import ConfigError
    from stef_ray.serving.serve_config import deploy_config, read_serve_config

    config = read_serve_config(args.config, model_source=args.model, host=args.host, port=args.port)
    http = config.get("http_options") or {}
    host, port = http.get("host", "127.0.0.1"), http.get("port", 8000)
    # "local": a new Ray on this machine, even where `ray start` left a cluster running.
    context = ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=args.dashboard, namespace="serve")
    # Ray's driver handler prints a "SIGTERM received" trace; systemd, Docker and Kubernetes stop with SIGTERM.
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        print(f"deploying {args.config} ...", flush=True)
        deploy_config(config)
        apps = config.get("applications") or []
        if not apps:
            raise ConfigError(f"{args.config}: no applications")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        prefix = (apps[0].get("route_prefix") or "/").rstrip("/")
        url = f"http://{shown}:{port}{prefix}"
        key_env = (apps[0].get("args") or {}).get("api_key_env", "STEF_RAY_API_KEY")
        api_key = os.environ.get(key_env) if key_env else None
        print_summary(apps[0], url, api_key)
        dashboard = getattr(context, "dashboard_url", None)
        if dashboard:
            print(f"  Ray dashboard: http://{dashboard}  (Serve tab: replicas, requests, logs)")
        print("Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except (_StopSignalError, KeyboardInterrupt) as why:
        print(f"stopping ({why or 'Ctrl-C'}): shutting Serve and Ray down", flush=True)
        return 0
    finally:
        from ray import serve

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
        serve.shutdown()
        ray.shutdown()


def print_summary(app: dict, url: str, api_key: str | None) -> None:
    """What is served and how to call it: the fleet's routes, or the model and a curl example."""
    if str(app.get("import_path", "")).endswith(":build_fleet_app"):
        source = (app.get("args") or {}).get("model_source")
        print(f"serving the series of {source} on {url}\n  POST {url}/series/<id>/forecast   "
              f"GET {url}/series/<id>/model   POST {url}/forecast_batch   OpenAPI: {url}/docs")
        return
    model = _model_summary(url, api_key)
    if "name" in model:
        print(f"serving {model.get('name')} version {model.get('version')} on {url}")
    else:  # a fresh stack: no champion registered yet (the answers say so, with a 503)
        print(f"serving on {url}: {model.get('detail', 'no model yet')}")
    print(f"  OpenAPI: {url}/docs   health: {url}/healthz   model: {url}/model")
    history = model.get("history_hours", model.get("lookback_hours", 168))
    print(curl_example(url, model.get("exog", []), history, api_key=bool(api_key)))


def _model_summary(url: str, api_key: str | None) -> dict:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{url}/model", headers={"X-API-Key": api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:  # 503: no model yet; the body says why
        try:
            return json.loads(err.read())
        except ValueError:
            return {}
    except OSError:
        return {}
