"""Records ↔ protobuf messages."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from foodmesh.v1 import notification_pb2 as pb
from servers.notification.plan import Prefs
from servers.notification.store import DeliveryRow, InboxRow

__all__ = [
    "CHANNEL_FROM_PB",
    "CHANNEL_TO_PB",
    "delivery_to_pb",
    "notification_to_pb",
    "prefs_to_pb",
]

CHANNEL_TO_PB = {
    "in_app": pb.CHANNEL_IN_APP,
    "email": pb.CHANNEL_EMAIL,
    "push": pb.CHANNEL_PUSH,
    "sms": pb.CHANNEL_SMS,
}
CHANNEL_FROM_PB = {v: k for k, v in CHANNEL_TO_PB.items()}
_STATE = {
    "queued": pb.DELIVERY_STATE_QUEUED,
    "sending": pb.DELIVERY_STATE_QUEUED,
    "sent": pb.DELIVERY_STATE_SENT,
    "delivered": pb.DELIVERY_STATE_DELIVERED,
    "failed": pb.DELIVERY_STATE_FAILED,
    "skipped": pb.DELIVERY_STATE_SKIPPED,
}


def _ts(when: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(when)
    return t


def notification_to_pb(r: InboxRow) -> pb.Notification:
    return pb.Notification(
        notification_id=r.notification_id,
        recipient=r.recipient,
        event_type=r.event_type,
        order_id=r.order_id,
        title=r.title,
        body=r.body,
        create_time=_ts(r.created_at),
        read_time=_ts(r.read_at),
    )


def delivery_to_pb(r: DeliveryRow) -> pb.Delivery:
    dest = r.destination
    if r.channel == "push" and "://" in dest:  # the endpoint's path is the browser's secret
        dest = dest.split("://", 1)[1].split("/", 1)[0]
    return pb.Delivery(
        delivery_id=r.delivery_id,
        notification_id=r.notification_id,
        channel=CHANNEL_TO_PB.get(r.channel, pb.CHANNEL_UNSPECIFIED),
        state=_STATE.get(r.state, pb.DELIVERY_STATE_UNSPECIFIED),
        attempts=r.attempts,
        reason=r.reason,
        destination=dest,
        update_time=_ts(r.updated_at),
        recipient=r.recipient,
        event_type=r.event_type,
    )


def prefs_to_pb(p: Prefs) -> pb.Preferences:
    return pb.Preferences(
        email=p.email,
        phone=p.phone,
        locale=p.locale,
        events=[
            pb.EventChannels(event_type=k, channels=[CHANNEL_TO_PB[c] for c in v])
            for k, v in sorted(p.events.items())
        ],
        quiet_start_minute=p.quiet_start_minute,
        quiet_end_minute=p.quiet_end_minute,
        utc_offset_minutes=p.utc_offset_minutes,
    )
