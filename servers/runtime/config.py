"""The settings of a service, read from ``FOODMESH_*`` environment variables.

Read through :mod:`foodmesh.core.settings` (the gateway and the dashboard use the same
helpers): a wrong value fails fast with a :class:`ConfigError` naming the variable, the
value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from foodmesh.core.auth import DEV_SECRET, service_secret_for
from foodmesh.core.settings import (
    LOG_LEVELS,
    NATS_SCHEMES,
    POSTGRES_SCHEMES,
    REDIS_SCHEMES,
    auth_from_env,
    env_bool,
    env_choice,
    env_float,
    env_namespace,
    env_port,
    env_str,
    env_url,
    tls_from_env,
    trace_exporter,
)
from foodmesh.core.tls import TlsFiles

__all__ = ["Settings"]


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
        log_level = env_choice(env, "FOODMESH_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True)
        exporter = trace_exporter(env)
        settings = cls(
            service=service,
            host=env_str(env, "FOODMESH_HOST", "127.0.0.1"),
            port=env_port(env, port_var, 0),
            metrics_port=env_port(env, f"FOODMESH_{up}_METRICS_PORT", 0),
            metrics_enabled=env_bool(env, "FOODMESH_METRICS", True),
            postgres_url=env_url(env, "FOODMESH_POSTGRES_URL", "", POSTGRES_SCHEMES),
            redis_url=env_url(env, "FOODMESH_REDIS_URL", "", REDIS_SCHEMES),
            nats_url=env_url(env, "FOODMESH_NATS_URL", "", NATS_SCHEMES, several=True),
            namespace=env_namespace(env),
            tls=tls_from_env(env),
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
        # last: a wrong setting elsewhere is named first
        auth = auth_from_env(env, process=service, service=True)
        return dataclasses.replace(
            settings, auth_secret=auth.secret, service_secret=auth.service_secret
        )
