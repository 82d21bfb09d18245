"""The Serve application's configuration: ``AppArgs`` (the ``args`` of ``build_app`` in serve_config.yaml),
``IngressConfig`` and ``ResidualConfig`` (the ``user_config`` of the ingress and of the Residual deployment,
which Serve applies in place), and ``validated``, which turns a pydantic error into a ``ConfigError`` naming
the key. It is kept free of the deployments so that reading and checking a config file (``serve_config``)
does not build them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stef_ray.config_loading import format_validation_error
from stef_ray.exceptions import ConfigError
from stef_ray.integrations.influx import InfluxSettings
from stef_ray.serving.plain_app import DEFAULT_MAX_BODY_BYTES

DEFAULT_MODEL_SOURCE = "models:/power-demand-hybrid@champion"
DEFAULT_CHALLENGER_SOURCE = "models:/power-demand-hybrid@challenger"
CHAMPION, CHALLENGER = "champion", "challenger"  # the A/B arms


class AppArgs(BaseModel):
    """``args`` of the application in serve_config.yaml (or ``build_app``'s dict)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    composition: Literal["residual_first", "fan_out"] = Field(
        "residual_first", description="residual_first: one call to Residual, which returns all three "
        "components; Trend and Seasonality answer (concurrently) when it fails or times out. fan_out: all "
        "three called concurrently for every request (more CPU per request; see stef_ray.serving.app)"
    )

    model_source: str = Field(
        DEFAULT_MODEL_SOURCE,
        description="bundle folder or models:/NAME@ALIAS; used when the ingress's user_config names none",
    )
    residual_timeout_s: float = Field(
        2.0, gt=0, description="wait at least this long for the residual model before answering degraded "
        "(longer while it answers slowly for everyone: 10 times its recent answer time; until a replica's "
        "first answer, 10 times this floor, so a cold start on a busy machine does not degrade)"
    )
    api_key_env: str | None = Field(
        "STEF_RAY_API_KEY", description="environment variable holding the API key; unset or empty: no key"
    )
    api_key: str | None = Field(None, description="the API key itself (tests; prefer api_key_env)")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="larger bodies get 413")
    max_batch_size: int = Field(16, ge=1, le=256, description="ingress batches joined into one residual pass")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=1, description="how long the residual deployment waits to fill a batch (0: it joins the calls that queued while the previous pass ran)"
    )
    component_batch_size: int = Field(
        16, ge=1, le=256, description="requests an ingress replica sends to the components in one call"
    )
    component_batch_wait_s: float = Field(
        0.003, ge=0, le=1, description="while other requests are in flight, how long an ingress replica "
        "waits to fill a batch for the components (a request alone goes at once)"
    )
    # The options below can also be set in the ingress's user_config (see IngressConfig).
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI for models:/ sources; default $MLFLOW_TRACKING_URI, "
        "else ./mlflow.db"
    )
    alias_poll_s: float = Field(
        0.0, ge=0, description="seconds between registry checks of a models:/NAME@ALIAS source; when the "
        "alias moves, the new version is swapped in without downtime. 0: off"
    )
    challenger_fraction: float = Field(
        0.0, ge=0, le=1, description="share of the requests answered by challenger_source (A/B split); 0: off"
    )
    challenger_source: str = Field(
        DEFAULT_CHALLENGER_SOURCE, description="bundle folder or models:/NAME@ALIAS of the challenger arm"
    )
    ab_seed: int | None = Field(
        None, description="seed of the arm draw for requests without an X-Request-ID header (None: random)"
    )
    influx: bool | None = Field(
        None, description="store each answered forecast in InfluxDB (asynchronously); None: when "
        "$INFLUXDB_URL is set"
    )
    influx_settings: dict[str, Any] = Field(
        default_factory=dict, description="InfluxSettings fields over the environment (INFLUXDB_URL, "
        "INFLUXDB_TOKEN, INFLUXDB_ORG, INFLUXDB_BUCKET, STEF_RAY_SPOOL_DIR), e.g. {spool_dir: /var/spool/stef}; "
        "keep the token in the environment"
    )

    @field_validator("influx_settings")
    @classmethod
    def _known_influx_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_influx_keys(value)


def check_influx_keys(value: dict[str, Any] | None) -> dict[str, Any] | None:
    unknown = sorted(set(value or {}) - set(InfluxSettings.model_fields))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(InfluxSettings.model_fields)}")
    return value


class IngressConfig(BaseModel):
    """The ingress's ``user_config``: changing it reconfigures the running replicas in place (a new model
    source is hot-swapped). Every key but model_source overrides the same key of the app's args."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_source: str = Field(description="bundle folder or models:/NAME@ALIAS")
    residual_timeout_s: float | None = Field(None, gt=0, description="overrides args.residual_timeout_s")
    mlflow_tracking_uri: str | None = Field(None, description="overrides args.mlflow_tracking_uri")
    alias_poll_s: float | None = Field(None, ge=0, description="overrides args.alias_poll_s")
    challenger_fraction: float | None = Field(None, ge=0, le=1, description="overrides args.challenger_fraction")
    challenger_source: str | None = Field(None, description="overrides args.challenger_source")
    ab_seed: int | None = Field(None, description="overrides args.ab_seed")
    influx: bool | None = Field(None, description="overrides args.influx")
    influx_settings: dict[str, Any] | None = Field(None, description="overrides args.influx_settings")

    @field_validator("influx_settings")
    @classmethod
    def _known_influx_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_influx_keys(value)


class ResidualConfig(BaseModel):
    """Residual's ``user_config``: batching, and a fault switch for chaos tests."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, le=256, description="requests per residual pass")
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1, description="wait to fill a batch")
    fault: str | None = Field(
        None, pattern="^(raise|hang)$", description="test hook: 'raise' fails every call, 'hang' holds calls until unset"
    )


def validated(model: type[BaseModel], values: dict | None, source: str) -> Any:
    """``values`` as a ``model``; raises ConfigError naming the refused key, prefixed with ``source``."""
    try:
        return model.model_validate(values or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
