"""The services foodmesh knows how to run, and where each listens by default."""

from __future__ import annotations

import importlib
import importlib.util
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


def _present(info: ServiceInfo) -> bool:
    # A package still being written (domain modules, no servicer yet) is not a service.
    return (
        importlib.util.find_spec(info.module) is not None
        and importlib.util.find_spec(f"{info.module}.service") is not None
    )


def available() -> list[ServiceInfo]:
    """The known services whose package (with its ``service.py``) exists in this checkout."""
    return [s for s in KNOWN if _present(s)]


def load_spec(name: str) -> ServiceSpec:
    """The ``SPEC`` of ``servers.<name>``; raises KeyError for an unknown or absent service."""
    info = next((s for s in KNOWN if s.name == name), None)
    if info is None or not _present(info):
        names = ", ".join(s.name for s in available()) or "none yet"
        raise KeyError(f"no service named {name!r} (available: {names})")
    spec: ServiceSpec = importlib.import_module(info.module).SPEC
    return spec
