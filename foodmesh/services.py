"""The services foodmesh knows how to run, and where each listens by default."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servers.runtime.serve import ServiceSpec

__all__ = ["KNOWN", "ServiceInfo", "available", "load_spec"]


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    name: str
    grpc_port: int
    metrics_port: int

    @property
    def module(self) -> str:
        return f"servers.{self.name}"


# Start order: services others call come first, so `up` finds them serving.
KNOWN: tuple[ServiceInfo, ...] = (
    ServiceInfo("eta", 50055, 9105),
    ServiceInfo("pricing", 50056, 9106),
    ServiceInfo("catalog", 50051, 9101),
    ServiceInfo("location", 50053, 9103),
    ServiceInfo("dispatch", 50054, 9104),
    ServiceInfo("order", 50052, 9102),
)


def available() -> list[ServiceInfo]:
    """The services ``up`` runs, in start order (every known one: all six exist)."""
    return list(KNOWN)


def load_spec(name: str) -> ServiceSpec:
    """The ``SPEC`` of ``servers.<name>``; raises KeyError for an unknown service."""
    info = next((s for s in KNOWN if s.name == name), None)
    if info is None:
        names = ", ".join(s.name for s in KNOWN)
        raise KeyError(f"no service named {name!r} (available: {names})")
    spec: ServiceSpec = importlib.import_module(info.module).SPEC
    return spec
