"""Typed async client of the Location service (LocationService)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import location_pb2 as pb
from foodmesh.v1 import location_pb2_grpc as pb_grpc

__all__ = ["LocationClient"]


class LocationClient(BaseClient):
    """foodmesh.v1.LocationService: deadlines on every call, retries where the contract allows."""

    SERVICE = pb.DESCRIPTOR.services_by_name["LocationService"]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        super().__init__(target, options=options)
        self.stub = pb_grpc.LocationServiceStub(self.channel)

    def stream_locations(
        self,
        requests: AsyncIterator[pb.StreamLocationsRequest],
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[pb.StreamLocationsResponse]:
        """A driver's app streams its fixes; the server acks in batches and sets the pace."""
        call = self.stub.StreamLocations(
            requests, timeout=self._stream_deadline(deadline_s), metadata=self._metadata(metadata)
        )
        return call.__aiter__()

    async def update_location(
        self,
        request: pb.UpdateLocationRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpdateLocationResponse:
        """One fix, for apps that cannot stream (204, no body)."""
        return await self.stub.UpdateLocation(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_driver_location(
        self,
        request: pb.GetDriverLocationRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetDriverLocationResponse:
        """A driver's last known position."""
        return await self.stub.GetDriverLocation(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def find_nearby_drivers(
        self,
        request: pb.FindNearbyDriversRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.FindNearbyDriversResponse:
        """Drivers within a radius of a point, nearest first (internal: Dispatch)."""
        return await self.stub.FindNearbyDrivers(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def set_driver_status(
        self,
        request: pb.SetDriverStatusRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SetDriverStatusResponse:
        """Sets a driver's status as Dispatch knows it, for the index's filters (internal)."""
        return await self.stub.SetDriverStatus(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_location_history(
        self,
        request: pb.GetLocationHistoryRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetLocationHistoryResponse:
        """A driver's path between two times, downsampled (ops and disputes)."""
        return await self.stub.GetLocationHistory(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    def track_order(
        self,
        request: pb.TrackOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[pb.TrackOrderResponse]:
        """The customer's live view of an order."""
        call = self.stub.TrackOrder(
            request, timeout=self._stream_deadline(deadline_s), metadata=self._metadata(metadata)
        )
        return call.__aiter__()
