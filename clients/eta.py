"""Typed async client of the Eta service (EtaService)."""

from __future__ import annotations

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import eta_pb2 as pb
from foodmesh.v1 import eta_pb2_grpc as pb_grpc

__all__ = ["EtaClient"]


class EtaClient(BaseClient):
    """foodmesh.v1.EtaService: deadlines on every call, retries where the contract allows."""

    SERVICE = pb.DESCRIPTOR.services_by_name["EtaService"]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        super().__init__(target, options=options)
        self.stub = pb_grpc.EtaServiceStub(self.channel)

    async def estimate_delivery(
        self,
        request: pb.EstimateDeliveryRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.EstimateDeliveryResponse:
        """Estimates when an order arrives: prep + driver to restaurant + restaurant to customer."""
        return await self.stub.EstimateDelivery(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def route(
        self, request: pb.RouteRequest, *, deadline_s: float | None = None, metadata: Metadata = ()
    ) -> pb.RouteResponse:
        """The fastest route between two points, with its polyline."""
        return await self.stub.Route(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def estimate_travel_times(
        self,
        request: pb.EstimateTravelTimesRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.EstimateTravelTimesResponse:
        """Travel times of many legs at once (Dispatch scores driver-restaurant pairs)."""
        return await self.stub.EstimateTravelTimes(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def check_reroute(
        self,
        request: pb.CheckRerouteRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.CheckRerouteResponse:
        """Whether a driver needs a new route, and the route when so.

        A new route is due when the driver is more than 500 m off the current one
        or the ETA moved by more than 5 min.
        """
        return await self.stub.CheckReroute(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def set_road_overrides(
        self,
        request: pb.SetRoadOverridesRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SetRoadOverridesResponse:
        """Replaces the live incidents and closures that override the traffic model (ops, tests)."""
        return await self.stub.SetRoadOverrides(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )
