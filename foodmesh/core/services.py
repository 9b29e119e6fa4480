"""The services of the mesh and where each listens by default: one table for every floor."""

from __future__ import annotations

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


# Start order: services others call come first, so `up` finds them serving.
KNOWN: tuple[ServiceInfo, ...] = (
    ServiceInfo("eta", 50055, 9105),
    ServiceInfo("pricing", 50056, 9106),
    ServiceInfo("catalog", 50051, 9101),
    ServiceInfo("location", 50053, 9103),
    ServiceInfo("dispatch", 50054, 9104),
    ServiceInfo("order", 50052, 9102),
    ServiceInfo("notification", 50057, 9107),
)
