"""Every environment variable RouteLead reads, typed and validated once at start.

The command line loads one `Settings` and hands it (or the values it needs) to whatever it
builds; no other module reads `os.environ` for a setting. A bad value stops the start with one
line per problem, each naming its variable. The config file's `${VAR}` secret references are not
settings: the loader expands those itself. README.md's table of variables is checked against
`variables()` by tests/test_settings.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, Field, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

# Read by the libraries themselves (the OpenTelemetry SDK, prometheus-client), not by RouteLead;
# documented beside ours in README.md.
LIBRARY_VARIABLES = (
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "PROMETHEUS_MULTIPROC_DIR",
)


class SettingsError(ValueError):
    """One or more variables hold a value RouteLead cannot use; the message names each."""


def _address(value: str) -> str:
    """host:port, or empty (off) where the setting allows it."""
    if value:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected host:port, got {value!r}")
    return value


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}")
    return level


Address = Annotated[str, AfterValidator(_address)]


def _env(*names: str) -> AliasChoices | str:
    """The variable (or variables, first set wins) a field is read from."""
    return AliasChoices(*names) if len(names) > 1 else names[0]


class Settings(BaseSettings):
    """Defaults are the documented ones; an empty variable counts as unset."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    # `routelead serve`
    config: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_CONFIG"))
    listen: Address = Field(default="0.0.0.0:50051", validation_alias=_env("ROUTELEAD_LISTEN"))
    log_level: Annotated[str, AfterValidator(_log_level)] = Field(
        default="INFO", validation_alias=_env("ROUTELEAD_LOG_LEVEL")
    )
    workers: int = Field(default=1, ge=0, validation_alias=_env("ROUTELEAD_WORKERS"))
    metrics_listen: Address = Field(default="", validation_alias=_env("ROUTELEAD_METRICS_LISTEN"))
    health_listen: Address = Field(default="", validation_alias=_env("ROUTELEAD_HEALTH_LISTEN"))
    max_in_flight: int = Field(default=0, ge=0, validation_alias=_env("ROUTELEAD_MAX_IN_FLIGHT"))
    insecure: bool = Field(default=False, validation_alias=_env("ROUTELEAD_INSECURE"))
    tls_cert: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_TLS_CERT"))
    tls_key: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_TLS_KEY"))
    tls_client_ca: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_TLS_CLIENT_CA"))
    auth_token_file: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_AUTH_TOKEN_FILE"))
    auth_tokens: str = Field(default="", repr=False, validation_alias=_env("ROUTELEAD_AUTH_TOKENS"))

    # Tracing: OTLP export as the standard variables ask (the SDK reads the rest itself).
    otel_service_name: str = Field(default="routelead", validation_alias=_env("OTEL_SERVICE_NAME"))
    otel_traces_exporter: str = Field(default="otlp", validation_alias=_env("OTEL_TRACES_EXPORTER"))
    otlp_endpoint: str = Field(
        default="", validation_alias=_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        default="http/protobuf",
        validation_alias=_env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    )

    # Hot state
    redis_url: str = Field(default="", repr=False, validation_alias=_env("REDIS_URL", "ROUTELEAD_REDIS_URL"))
    redis_cluster: bool = Field(default=False, validation_alias=_env("ROUTELEAD_REDIS_CLUSTER"))
    dedupe_key: str | None = Field(default=None, repr=False, validation_alias=_env("ROUTELEAD_DEDUPE_KEY"))
    dedupe_key_file: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_DEDUPE_KEY_FILE"))
    redis_timeout_ms: float = Field(
        default=100.0,
        gt=0,
        le=60_000,
        allow_inf_nan=False,
        validation_alias=_env("ROUTELEAD_REDIS_TIMEOUT_MS"),
    )
    answer_ttl_hours: float = Field(
        default=168.0, ge=1, le=2160, allow_inf_nan=False, validation_alias=_env("ROUTELEAD_ANSWER_TTL_HOURS")
    )

    # The books
    database_url: str = Field(default="", repr=False, validation_alias=_env("DATABASE_URL"))
    db_path: str = Field(default="", validation_alias=_env("ROUTELEAD_DB"))
    spool_dir: str = Field(default="", validation_alias=_env("ROUTELEAD_SPOOL_DIR"))
    sink_consumer: str = Field(default="sink-1", validation_alias=_env("ROUTELEAD_SINK_CONSUMER", "HOSTNAME"))

    # `routelead admin` / `routelead stats`, and the Admin API's own credential
    admin_token: str = Field(default="", repr=False, validation_alias=_env("ROUTELEAD_ADMIN_TOKEN"))
    admin_token_file: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_ADMIN_TOKEN_FILE"))
    admin_target: str = Field(default="127.0.0.1:50051", validation_alias=_env("ROUTELEAD_ADMIN_TARGET"))
    admin_tls: bool = Field(default=False, validation_alias=_env("ROUTELEAD_ADMIN_TLS"))
    admin_ca_file: str = Field(default="", validation_alias=_env("ROUTELEAD_ADMIN_CA_FILE"))
    admin_cert_file: str = Field(default="", validation_alias=_env("ROUTELEAD_ADMIN_CERT_FILE"))
    admin_key_file: str = Field(default="", validation_alias=_env("ROUTELEAD_ADMIN_KEY_FILE"))
    admin_server_name: str = Field(default="", validation_alias=_env("ROUTELEAD_ADMIN_SERVER_NAME"))
    admin_author: str = Field(default="", validation_alias=_env("ROUTELEAD_ADMIN_AUTHOR"))
    # What an Admin change may name as a secret reference (checked in config/secrets.py).
    secret_prefixes: str | None = Field(default=None, validation_alias=_env("ROUTELEAD_SECRET_PREFIXES"))
    secrets_dir: str = Field(default="", validation_alias=_env("ROUTELEAD_SECRETS_DIR"))


def _names(field: str) -> list[str]:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [str(alias)]


def variables() -> list[str]:
    """Every variable `Settings` reads, in declaration order."""
    return [name for field in Settings.model_fields for name in _names(field)]


# An empty value that means something other than unset ("no variable may be named").
_KEEP_EMPTY = frozenset({"ROUTELEAD_SECRET_PREFIXES"})


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The process environment (None), or `env` under the same rules (tests, tools)."""
    try:
        if env is None:
            return Settings()
        return Settings.model_validate({k: v for k, v in env.items() if v != "" or k in _KEEP_EMPTY})
    except ValidationError as exc:
        raise SettingsError("; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: ErrorDetails) -> str:
    loc = error["loc"][0] if error["loc"] else ""
    field = next((f for f in Settings.model_fields if loc in (f, *_names(f))), None)
    name = " or ".join(_names(field)) if field else str(loc)
    message = error["msg"].removeprefix("Value error, ")
    if "got " in message or (field and not Settings.model_fields[field].repr):  # never echo a secret
        return f"{name}: {message}"
    return f"{name}: {message}, got {error['input']!r}"
