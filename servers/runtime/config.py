"""Typed settings read from ``FOODMESH_*`` environment variables.

A wrong value fails fast with a :class:`ConfigError` naming the variable, the
value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from foodmesh.core.auth import DEV_SECRET, AuthConfigError, auth_settings, service_secret_for
from foodmesh.core.errors import ConfigError
from foodmesh.core.telemetry import EXPORTERS, exporter_from_env
from foodmesh.core.tls import TlsConfigError, TlsFiles

__all__ = ["Settings", "env_bool", "env_float", "env_int", "env_str"]

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _read(
    env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], expected: str
) -> T:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return parse(raw.strip())
    except (ValueError, TypeError):
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}") from None


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default)


def env_int(
    env: Mapping[str, str], name: str, default: int, *, lo: int | None = None, hi: int | None = None
) -> int:
    value = _read(env, name, default, int, "an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}={value} is out of range: expected {lo}..{hi}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, lo: float = 0.0) -> float:
    value = _read(env, name, default, float, "a number")
    if value < lo or value != value:
        raise ConfigError(f"{name}={value} is out of range: expected a number >= {lo}")
    return value


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    return _read(env, name, default, _parse_bool, "one of 1/0, true/false, yes/no, on/off")


#: One server, or a Redis Cluster by any of its nodes (``redis+cluster://h1:p1,h2:p2``).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def _url(
    env: Mapping[str, str],
    name: str,
    default: str,
    schemes: tuple[str, ...],
    *,
    several: bool = False,
) -> str:
    """The URL in ``name``; with ``several``, a comma-separated list of them (a cluster's)."""
    value = env.get(name, default)
    parts = value.split(",") if several else [value]
    if value and not all(p.strip().startswith(tuple(f"{s}://" for s in schemes)) for p in parts):
        raise ConfigError(
            f"{name}={value!r} is not valid: expected a URL starting with "
            + " or ".join(f"{s}://" for s in schemes)
        )
    return value


def _tls(env: Mapping[str, str]) -> TlsFiles:
    try:
        return TlsFiles.from_env(env)
    except TlsConfigError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a foodmesh process reads from its environment."""

    service: str
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    metrics_enabled: bool = True
    postgres_url: str = ""
    redis_url: str = ""
    nats_url: str = ""
    #: Prefix for Redis keys, NATS subjects and streams (isolates tests and tenants).
    namespace: str = ""
    #: TLS of the gRPC port and of calls to other services (plaintext when empty: dev only).
    tls: TlsFiles = field(default_factory=TlsFiles)
    #: Deadline given to calls that arrive without one, in seconds.
    default_deadline_s: float = 5.0
    #: Longest life of a streaming call; clients reconnect after it (like a max connection age).
    stream_max_age_s: float = 3600.0
    shutdown_grace_s: float = 10.0
    #: How long the server waits for its dependencies before giving up at start-up.
    startup_timeout_s: float = 30.0
    health_check_interval_s: float = 2.0
    log_level: str = "INFO"
    #: Where spans go: ``none``, ``console`` or ``memory`` (tests).
    trace_exporter: str = "none"
    #: HMAC secret that bearer tokens are signed with (the same in every service and the gateway).
    auth_secret: str = DEV_SECRET
    #: HMAC key of the services' own short-lived tokens ("": derived from ``auth_secret``).
    service_secret: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def service_key(self) -> str:
        """The key of service tokens: set apart, or derived from the auth secret."""
        return self.service_secret or service_secret_for(self.auth_secret)

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Settings:
        """Reads the settings of ``service``; raises :class:`ConfigError` naming a bad variable."""
        env = os.environ if env is None else env
        up = service.upper()
        port_var = f"FOODMESH_{up}_PORT" if f"FOODMESH_{up}_PORT" in env else "FOODMESH_PORT"
        log_level = env.get("FOODMESH_LOG_LEVEL", "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"FOODMESH_LOG_LEVEL={log_level!r} is not valid: "
                "expected DEBUG, INFO, WARNING or ERROR"
            )
        exporter = exporter_from_env(env)
        if exporter not in EXPORTERS:
            raise ConfigError(
                f"FOODMESH_TRACE_EXPORTER={exporter!r} is not valid: "
                "expected none, console, otlp or memory"
            )
        namespace = env.get("FOODMESH_NAMESPACE", "")
        if namespace and not namespace.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"FOODMESH_NAMESPACE={namespace!r} is not valid: expected letters, digits, - or _"
            )
        settings = cls(
            service=service,
            host=env.get("FOODMESH_HOST", "127.0.0.1"),
            port=env_int(env, port_var, 0, lo=0, hi=65535),
            metrics_port=env_int(env, f"FOODMESH_{up}_METRICS_PORT", 0, lo=0, hi=65535),
            metrics_enabled=env_bool(env, "FOODMESH_METRICS", True),
            postgres_url=_url(env, "FOODMESH_POSTGRES_URL", "", ("postgresql", "postgres")),
            redis_url=_url(env, "FOODMESH_REDIS_URL", "", REDIS_SCHEMES),
            nats_url=_url(env, "FOODMESH_NATS_URL", "", ("nats", "tls", "ws", "wss"), several=True),
            namespace=namespace,
            tls=_tls(env),
            default_deadline_s=env_float(env, "FOODMESH_DEFAULT_DEADLINE_S", 5.0, lo=0.001),
            stream_max_age_s=env_float(env, "FOODMESH_STREAM_MAX_AGE_S", 3600.0, lo=1.0),
            shutdown_grace_s=env_float(env, "FOODMESH_SHUTDOWN_GRACE_S", 10.0),
            startup_timeout_s=env_float(env, "FOODMESH_STARTUP_TIMEOUT_S", 30.0, lo=0.1),
            health_check_interval_s=env_float(
                env, "FOODMESH_HEALTH_CHECK_INTERVAL_S", 2.0, lo=0.05
            ),
            log_level=log_level,
            trace_exporter=exporter,
            extra={k: v for k, v in env.items() if k.startswith(f"FOODMESH_{up}_")},
        )
        # Last: a wrong setting elsewhere is named first.
        try:
            auth = auth_settings(env, process=service)
        except AuthConfigError as exc:
            raise ConfigError(str(exc)) from None
        return dataclasses.replace(
            settings, auth_secret=auth.secret, service_secret=auth.service_secret
        )
