"""Typed async client of the Dispatch service (DispatchService)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import dispatch_pb2 as pb
from foodmesh.v1 import dispatch_pb2_grpc as pb_grpc

__all__ = ["DispatchClient"]


class DispatchClient(BaseClient):
    """foodmesh.v1.DispatchService: deadlines on every call, retries where the contract allows."""

    SERVICE = pb.DESCRIPTOR.services_by_name["DispatchService"]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        super().__init__(target, options=options)
        self.stub = pb_grpc.DispatchServiceStub(self.channel)

    def driver_session(
        self,
        requests: AsyncIterator[pb.DriverSessionRequest],
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[pb.DriverSessionResponse]:
        """A driver's work session: actions up, offers and updates down. Opening it puts the"""
        call = self.stub.DriverSession(
            requests, timeout=self._stream_deadline(deadline_s), metadata=self._metadata(metadata)
        )
        return call.__aiter__()

    async def match_order(
        self,
        request: pb.MatchOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.MatchOrderResponse:
        """Matches one order now with the live logic and returns the chosen driver (internal)."""
        return await self.stub.MatchOrder(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_assignment(
        self,
        request: pb.GetAssignmentRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetAssignmentResponse:
        """The current assignment of an order."""
        return await self.stub.GetAssignment(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def upsert_driver(
        self,
        request: pb.UpsertDriverRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertDriverResponse:
        """Creates or replaces a driver's profile (ops, or onboarding)."""
        return await self.stub.UpsertDriver(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_driver(
        self,
        request: pb.GetDriverRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetDriverResponse:
        """A driver's profile and stats."""
        return await self.stub.GetDriver(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def rate_driver(
        self,
        request: pb.RateDriverRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RateDriverResponse:
        """Records a customer's rating of a delivered order's driver, once per order.

        Called by the Order service's RateOrder.
        """
        return await self.stub.RateDriver(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def list_assignments(
        self,
        request: pb.ListAssignmentsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ListAssignmentsResponse:
        """Lists assignments by status, e.g. the pending and escalated ones (ops dashboard)."""
        return await self.stub.ListAssignments(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )
