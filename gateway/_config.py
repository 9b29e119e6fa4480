"""The gateway's settings, from ``FOODMESH_GATEWAY_*`` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import descriptor

from foodmesh.auth import DEV_SECRET
from foodmesh.services import KNOWN

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


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How the gateway listens and calls upstream."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth_secret: str = DEV_SECRET
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        env = os.environ if env is None else env
        targets = {
            m.group(1).lower(): v
            for k, v in env.items()
            if (m := re.fullmatch(r"FOODMESH_GATEWAY_([A-Z0-9_]+)_TARGET", k)) and v
        }
        only = env.get("FOODMESH_GATEWAY_SERVICES", "")
        return cls(
            host=env.get("FOODMESH_GATEWAY_HOST") or env.get("FOODMESH_HOST") or "127.0.0.1",
            port=_int(env, "FOODMESH_GATEWAY_PORT", DEFAULT_PORT),
            auth_secret=env.get("FOODMESH_AUTH_SECRET") or DEV_SECRET,
            deadline_s=_float(env, "FOODMESH_GATEWAY_DEADLINE_S", 5.0),
            stream_deadline_s=_float(env, "FOODMESH_GATEWAY_STREAM_DEADLINE_S", 3600.0),
            heartbeat_s=_float(env, "FOODMESH_GATEWAY_HEARTBEAT_S", 15.0),
            max_body_bytes=_int(env, "FOODMESH_GATEWAY_MAX_BODY_BYTES", 1 << 20),
            targets=targets,
            services=frozenset(s.strip() for s in only.split(",") if s.strip()),
        )

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
