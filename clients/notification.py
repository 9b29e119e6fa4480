"""Typed async client of the Notification service (NotificationService)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import notification_pb2 as pb
from foodmesh.v1 import notification_pb2_grpc as pb_grpc

__all__ = ["NotificationClient"]


class NotificationClient(BaseClient):
    """foodmesh.v1.NotificationService: deadlines on every call, retries where allowed."""

    SERVICE = pb.DESCRIPTOR.services_by_name["NotificationService"]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        super().__init__(target, options=options)
        self.stub = pb_grpc.NotificationServiceStub(self.channel)

    async def list_notifications(
        self,
        request: pb.ListNotificationsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ListNotificationsResponse:
        """Lists the caller's notifications, newest first (ops and services: any recipient's)."""
        return await self.stub.ListNotifications(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def mark_notifications_read(
        self,
        request: pb.MarkNotificationsReadRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.MarkNotificationsReadResponse:
        """Marks some of the caller's notifications read (or all of them)."""
        return await self.stub.MarkNotificationsRead(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_preferences(
        self,
        request: pb.GetPreferencesRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetPreferencesResponse:
        """The caller's preferences: contacts, which events on which channel, quiet hours."""
        return await self.stub.GetPreferences(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def set_preferences(
        self,
        request: pb.SetPreferencesRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SetPreferencesResponse:
        """Replaces the caller's preferences."""
        return await self.stub.SetPreferences(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_push_config(
        self,
        request: pb.GetPushConfigRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetPushConfigResponse:
        """What a browser needs to subscribe to Web Push: the VAPID application server key."""
        return await self.stub.GetPushConfig(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def register_push_subscription(
        self,
        request: pb.RegisterPushSubscriptionRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RegisterPushSubscriptionResponse:
        """Registers a browser's Web Push subscription for the caller."""
        return await self.stub.RegisterPushSubscription(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_delivery_status(
        self,
        request: pb.GetDeliveryStatusRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetDeliveryStatusResponse:
        """Where each channel's message of one notification stands."""
        return await self.stub.GetDeliveryStatus(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def list_dead_letters(
        self,
        request: pb.ListDeadLettersRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ListDeadLettersResponse:
        """Messages that failed every attempt (ops), newest first."""
        return await self.stub.ListDeadLetters(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    def watch_notifications(
        self,
        request: pb.WatchNotificationsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[pb.WatchNotificationsResponse]:
        """Streams the unread count, then the caller's new notifications as they are made."""
        call = self.stub.WatchNotifications(
            request, timeout=self._stream_deadline(deadline_s), metadata=self._metadata(metadata)
        )
        return call.__aiter__()
