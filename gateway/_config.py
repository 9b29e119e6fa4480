"""The gateway's settings, from ``FOODMESH_GATEWAY_*`` environment variables."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import descriptor

from foodmesh.core.auth import DEV_SECRET
from foodmesh.core.services import local_target
from foodmesh.core.settings import (
    ConfigError,
    auth_from_env,
    env_bool,
    env_first,
    env_float,
    env_int,
    env_list,
    env_port,
    env_str,
    env_targets,
    tls_from_env,
    trace_exporter,
)
from foodmesh.core.tls import TlsFiles

__all__ = ["ConfigError", "GatewayConfig", "service_key"]

DEFAULT_PORT = 8080


def service_key(service: descriptor.ServiceDescriptor) -> str:
    """``foodmesh.v1.OrderService`` -> ``order`` (the name in env variables and KNOWN)."""
    name = service.name.removesuffix("Service")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return env_float(env, name, default, above=True)


def _rate(env: Mapping[str, str], name: str, default: float) -> float:
    """Requests per second; 0 turns the limit off."""
    return env_float(env, name, default, finite=True)


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    found: list[str] = []
    for part in env_list(env, name):
        try:
            found.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name}: {part!r} is not an address or a CIDR (10.0.0.0/8)"
            ) from None
    return tuple(found)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How the gateway listens and calls upstream."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth_secret: str = DEV_SECRET
    #: Production auth: the OIDC provider's JWKS URL (RS256/ES256), and the iss/aud required.
    auth_jwks_url: str = ""
    auth_issuer: str = ""
    auth_audience: str = ""
    #: Deadline of every unary upstream call (and of a stream's first message in snapshot mode).
    deadline_s: float = 5.0
    #: Deadline of a server stream (SSE / NDJSON); clients reconnect after it.
    stream_deadline_s: float = 3600.0
    #: SSE comment sent when a stream has been silent this long.
    heartbeat_s: float = 15.0
    max_body_bytes: int = 1 << 20
    #: Retry-After of a 503.
    retry_after_s: int = 1
    #: Upstream target per service key (``order``); missing ones use 127.0.0.1:<KNOWN port>.
    targets: Mapping[str, str] = field(default_factory=dict)
    #: Only these service keys are exposed (empty: every foodmesh.v1 service).
    services: frozenset[str] = frozenset()
    #: How long one /readyz answer is served again (its upstream fan-out runs at most this often).
    readyz_cache_s: float = 1.0
    #: Upper bound of a client's ``X-Request-Timeout`` (and ``grpc-timeout``) header.
    max_deadline_s: float = 30.0
    #: Redis of the rate limits (token buckets); empty: no rate limits.
    redis_url: str = ""
    #: Prefix of the buckets' keys inside their hash tag (several gateways on one Redis).
    rate_limit_namespace: str = ""
    #: Requests per second per client IP, and the burst above it; 0: no IP limit.
    ip_rate: float = 50.0
    ip_burst: int = 100
    #: Requests per second per authenticated caller (role + subject); 0: no caller limit.
    token_rate: float = 20.0
    token_burst: int = 40
    #: Requests per second per client IP that fail before a caller is known (no or a bad
    #: token, a route that does not exist), in a bucket of their own; 0: no limit.
    fail_rate: float = 1.0
    fail_burst: int = 20
    #: Take the client IP from ``X-Forwarded-For``: the right-most entry not added by a
    #: trusted proxy. Alone, the peer is the one trusted proxy.
    trust_forwarded_for: bool = False
    #: The proxies (CIDRs) whose ``X-Forwarded-For`` entries are believed; setting any
    #: turns ``trust_forwarded_for`` on.
    trusted_proxies: tuple[str, ...] = ()
    #: Streams (SSE / NDJSON) one caller may hold open at once on one route, and on one
    #: order; beyond them: 429. 0: no limit.
    max_streams_per_caller: int = 8
    max_streams_per_order: int = 4
    #: Origins a browser may call from (``*``: any); empty: no CORS headers at all.
    cors_origins: frozenset[str] = frozenset()
    #: How long a browser may cache a preflight answer.
    cors_max_age_s: int = 600
    #: Prometheus ``/metrics`` on this port (0: a free one), served by ``main``; -1: none.
    metrics_port: int = -1
    #: Where spans go: ``none``, ``console`` or ``otlp`` (``OTEL_EXPORTER_OTLP_ENDPOINT``).
    trace_exporter: str = "none"
    #: The CA bundle the services' TLS certificates are verified against (plaintext: dev only).
    tls: TlsFiles = field(default_factory=TlsFiles)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """Reads ``FOODMESH_GATEWAY_*``; raises :class:`ConfigError` naming a bad variable."""
        env = os.environ if env is None else env
        exporter = trace_exporter(env)
        p = "FOODMESH_GATEWAY_"
        config = cls(
            host=env_first(env, (f"{p}HOST", "FOODMESH_HOST"), "127.0.0.1"),
            port=env_port(env, f"{p}PORT", DEFAULT_PORT),
            deadline_s=_seconds(env, f"{p}DEADLINE_S", 5.0),
            stream_deadline_s=_seconds(env, f"{p}STREAM_DEADLINE_S", 3600.0),
            heartbeat_s=_seconds(env, f"{p}HEARTBEAT_S", 15.0),
            max_body_bytes=env_int(env, f"{p}MAX_BODY_BYTES", 1 << 20),
            targets=env_targets(env, p),
            services=frozenset(env_list(env, f"{p}SERVICES")),
            max_deadline_s=_seconds(env, f"{p}MAX_DEADLINE_S", 30.0),
            readyz_cache_s=_seconds(env, f"{p}READYZ_CACHE_S", 1.0),
            redis_url=env_first(env, (f"{p}REDIS_URL", "FOODMESH_REDIS_URL")),
            rate_limit_namespace=env_str(env, f"{p}RATE_LIMIT_NAMESPACE", ""),
            ip_rate=_rate(env, f"{p}IP_RATE", 50.0),
            ip_burst=env_int(env, f"{p}IP_BURST", 100),
            token_rate=_rate(env, f"{p}TOKEN_RATE", 20.0),
            token_burst=env_int(env, f"{p}TOKEN_BURST", 40),
            fail_rate=_rate(env, f"{p}FAIL_RATE", 1.0),
            fail_burst=env_int(env, f"{p}FAIL_BURST", 20),
            trust_forwarded_for=env_bool(env, f"{p}TRUST_FORWARDED_FOR", False),
            trusted_proxies=_networks(env, f"{p}TRUSTED_PROXIES"),
            max_streams_per_caller=env_int(env, f"{p}MAX_STREAMS_PER_CALLER", 8),
            max_streams_per_order=env_int(env, f"{p}MAX_STREAMS_PER_ORDER", 4),
            cors_origins=frozenset(o.rstrip("/") for o in env_list(env, f"{p}CORS_ORIGINS")),
            cors_max_age_s=env_int(env, f"{p}CORS_MAX_AGE_S", 600),
            metrics_port=env_port(env, f"{p}METRICS_PORT", -1, lo=-1),
            trace_exporter=exporter,
            tls=tls_from_env(env),
        )
        auth = auth_from_env(env, process="gateway")  # last: a wrong setting elsewhere first
        return dataclasses.replace(
            config, auth_secret=auth.secret, auth_jwks_url=auth.jwks_url,
            auth_issuer=auth.issuer, auth_audience=auth.audience,
        )  # fmt: skip

    def cors_allows(self, origin: str) -> bool:
        """True when a browser page from ``origin`` may call the API."""
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins

    def target(self, service: descriptor.ServiceDescriptor) -> str:
        """Where ``service`` is reached: its env target, else its default local port."""
        key = service_key(service)
        if key in self.targets:
            return self.targets[key]
        try:
            return local_target(key)
        except KeyError:
            raise ConfigError(
                f"no target for {service.full_name}: set FOODMESH_GATEWAY_{key.upper()}_TARGET"
            ) from None

    def exposed(
        self, services: Iterable[descriptor.ServiceDescriptor]
    ) -> list[descriptor.ServiceDescriptor]:
        return [s for s in services if not self.services or service_key(s) in self.services]
