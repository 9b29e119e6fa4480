"""The gateway's settings, from ``FOODMESH_GATEWAY_*`` environment variables."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import descriptor

from foodmesh.core.auth import DEV_SECRET, AuthConfigError, auth_settings
from foodmesh.core.services import KNOWN
from foodmesh.core.telemetry import EXPORTERS, exporter_from_env
from foodmesh.core.tls import TlsConfigError, TlsFiles

__all__ = ["ConfigError", "GatewayConfig", "service_key"]

DEFAULT_PORT = 8080


class ConfigError(ValueError):
    """A setting with a wrong value; the message names the variable."""


def service_key(service: descriptor.ServiceDescriptor) -> str:
    """``foodmesh.v1.OrderService`` -> ``order`` (the name in env variables and KNOWN)."""
    name = service.name.removesuffix("Service")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r}: must be positive")
    return value


def _rate(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected requests per second") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r}: must be 0 (off) or a positive number")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    found: list[str] = []
    for part in env.get(name, "").split(","):
        if not part.strip():
            continue
        try:
            found.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name}: {part.strip()!r} is not an address or a CIDR (10.0.0.0/8)"
            ) from None
    return tuple(found)


def _tls(env: Mapping[str, str]) -> TlsFiles:
    try:
        return TlsFiles.from_env(env)
    except TlsConfigError as exc:
        raise ConfigError(str(exc)) from None


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
        env = os.environ if env is None else env
        if (exporter := exporter_from_env(env)) not in EXPORTERS:
            raise ConfigError(f"FOODMESH_TRACE_EXPORTER={exporter!r}: expected "
                              f"{', '.join(sorted(EXPORTERS))}")  # fmt: skip
        targets = {
            m.group(1).lower(): v
            for k, v in env.items()
            if (m := re.fullmatch(r"FOODMESH_GATEWAY_([A-Z0-9_]+)_TARGET", k)) and v
        }
        only = env.get("FOODMESH_GATEWAY_SERVICES", "")
        cors = env.get("FOODMESH_GATEWAY_CORS_ORIGINS", "")
        config = cls(
            host=env.get("FOODMESH_GATEWAY_HOST") or env.get("FOODMESH_HOST") or "127.0.0.1",
            port=_int(env, "FOODMESH_GATEWAY_PORT", DEFAULT_PORT),
            deadline_s=_float(env, "FOODMESH_GATEWAY_DEADLINE_S", 5.0),
            stream_deadline_s=_float(env, "FOODMESH_GATEWAY_STREAM_DEADLINE_S", 3600.0),
            heartbeat_s=_float(env, "FOODMESH_GATEWAY_HEARTBEAT_S", 15.0),
            max_body_bytes=_int(env, "FOODMESH_GATEWAY_MAX_BODY_BYTES", 1 << 20),
            targets=targets,
            services=frozenset(s.strip() for s in only.split(",") if s.strip()),
            max_deadline_s=_float(env, "FOODMESH_GATEWAY_MAX_DEADLINE_S", 30.0),
            readyz_cache_s=_float(env, "FOODMESH_GATEWAY_READYZ_CACHE_S", 1.0),
            redis_url=env.get("FOODMESH_GATEWAY_REDIS_URL") or env.get("FOODMESH_REDIS_URL", ""),
            rate_limit_namespace=env.get("FOODMESH_GATEWAY_RATE_LIMIT_NAMESPACE", ""),
            ip_rate=_rate(env, "FOODMESH_GATEWAY_IP_RATE", 50.0),
            ip_burst=_int(env, "FOODMESH_GATEWAY_IP_BURST", 100),
            token_rate=_rate(env, "FOODMESH_GATEWAY_TOKEN_RATE", 20.0),
            token_burst=_int(env, "FOODMESH_GATEWAY_TOKEN_BURST", 40),
            fail_rate=_rate(env, "FOODMESH_GATEWAY_FAIL_RATE", 1.0),
            fail_burst=_int(env, "FOODMESH_GATEWAY_FAIL_BURST", 20),
            trust_forwarded_for=_bool(env, "FOODMESH_GATEWAY_TRUST_FORWARDED_FOR"),
            trusted_proxies=_networks(env, "FOODMESH_GATEWAY_TRUSTED_PROXIES"),
            max_streams_per_caller=_int(env, "FOODMESH_GATEWAY_MAX_STREAMS_PER_CALLER", 8),
            max_streams_per_order=_int(env, "FOODMESH_GATEWAY_MAX_STREAMS_PER_ORDER", 4),
            cors_origins=frozenset(o.strip().rstrip("/") for o in cors.split(",") if o.strip()),
            cors_max_age_s=_int(env, "FOODMESH_GATEWAY_CORS_MAX_AGE_S", 600),
            metrics_port=_int(env, "FOODMESH_GATEWAY_METRICS_PORT", -1),
            trace_exporter=exporter_from_env(env),
            tls=_tls(env),
        )
        try:  # last: a wrong setting elsewhere is named first
            auth = auth_settings(env, process="gateway")
        except AuthConfigError as exc:
            raise ConfigError(str(exc)) from None
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
        info = next((i for i in KNOWN if i.name == key), None)
        if info is None:
            raise ConfigError(
                f"no target for {service.full_name}: set FOODMESH_GATEWAY_{key.upper()}_TARGET"
            )
        return f"127.0.0.1:{info.grpc_port}"

    def exposed(
        self, services: Iterable[descriptor.ServiceDescriptor]
    ) -> list[descriptor.ServiceDescriptor]:
        return [s for s in services if not self.services or service_key(s) in self.services]
