"""The services of the mesh and where each listens by default: one table for every floor."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["KNOWN", "ServiceInfo"]


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    name: str
    grpc_port: int
    metrics_port: int

    @property
    def module(self) -> str:
        return f"servers.{self.name}"


#: Added to every default port (``FOODMESH_PORT_OFFSET``): two platforms on one machine.
_OFFSET = int(os.environ.get("FOODMESH_PORT_OFFSET", "0") or 0)

# Start order: services others call come first, so `up` finds them serving.
KNOWN: tuple[ServiceInfo, ...] = tuple(
    ServiceInfo(name, grpc + _OFFSET, metrics + _OFFSET)
    for name, grpc, metrics in (
        ("eta", 50055, 9105),
        ("pricing", 50056, 9106),
        ("catalog", 50051, 9101),
        ("location", 50053, 9103),
        ("dispatch", 50054, 9104),
        ("order", 50052, 9102),
        ("notification", 50057, 9107),
    )
)
