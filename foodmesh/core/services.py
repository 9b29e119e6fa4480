"""The services of the mesh and where each listens by default: one table for every floor."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["KNOWN", "ServiceInfo", "local_target"]


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

# Start order: services others call come first, so `up` finds them serving. The ports sit
# below every kernel's ephemeral range (Linux from 32768): there, any outgoing connection on
# the machine may hold one, and the service could not bind it (docs/architecture.md).
KNOWN: tuple[ServiceInfo, ...] = tuple(
    ServiceInfo(name, grpc + _OFFSET, metrics + _OFFSET)
    for name, grpc, metrics in (
        ("eta", 7055, 9105),
        ("pricing", 7056, 9106),
        ("catalog", 7051, 9101),
        ("location", 7053, 9103),
        ("dispatch", 7054, 9104),
        ("order", 7052, 9102),
        ("notification", 7057, 9107),
    )
)


def local_target(name: str) -> str:
    """``127.0.0.1:<port>``: where the service ``name`` listens by default on this machine."""
    info = next((i for i in KNOWN if i.name == name), None)
    if info is None:
        raise KeyError(f"no service {name!r} (foodmesh.core.services.KNOWN)")
    return f"127.0.0.1:{info.grpc_port}"
