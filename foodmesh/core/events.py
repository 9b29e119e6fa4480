"""The mesh's NATS names, declared once: subjects with their payload types, streams, buckets.

Every publisher and subscriber (services, dashboard, the k8s generator) takes its
names from here. Names are bare; a process applies its namespace through
:class:`foodmesh.core.nats.Subjects` (``subjects.subject(ORDER_EVENTS.subject("placed"))``,
``ORDERS.config(subjects)``), so several meshes can share one NATS server.

============================  ==============================  ====================
subject                       payload                         stream
============================  ==============================  ====================
``orders.v1.<event>``         ``order_pb2.OrderEvent``        ``ORDERS``
``dispatch.v1.<kind>``        ``dispatch_pb2.DispatchEvent``  ``DISPATCH``
``dispatch.v1.session.<d>``   ``DriverSessionResponse``       (core NATS)
``location.v1.driver.<d>``    ``DriverLocationEvent``         (core NATS)
``location.v1.presence``      ``DriverPresenceEvent``         ``LOCATION``
``notifications.v1.inbox.<r>``  ``Notification``              (core NATS)
============================  ==============================  ====================

KV bucket ``dispatch_leases``: the regions each Dispatch replica leads.

Order events, by ``<event>`` (every one carries the order after the change and its
timeline entry, whose ``reason`` says why in words for the customer):

==========================  =============================================================
``placed`` ... ``delivered``  the order entered that status (``cancelled``: see below)
``scheduled``               a scheduled order was placed (``placed`` follows at release)
``driver_assigned``         a driver carries it now; ``driver_unassigned``: none does
``no_driver``               no driver accepted it in time: Dispatch widened the search and
                            offers a bonus; ``order.alert`` and ``free_cancel_after`` say so
``driver_lost``             its driver went silent after pickup (``order.alert`` holds the
                            last known position)
``driver_back``             the lost driver is back: the delivery continues
``alert_cleared``           ops cleared an alert by hand (a driver taking a no-driver order
                            clears it in its ``driver_assigned`` event)
``lost_reassigned``         ops gave a lost delivery to another driver
``confirm_due_soon``        80 % of the confirmation timeout passed, not confirmed yet
                            (the restaurant is warned; no timeline entry)
``delayed``                 a stage's estimate is more than 10 min past the promise (no
                            timeline entry; ``change.reason`` says by how much)
==========================  =============================================================

A ``cancelled`` event's ``order.cancellation_reason`` starts with a code when the
platform cancelled it: ``confirm_timeout:`` (its restaurant did not confirm in time; full
refund). A customer's free cancellation after ``no_driver`` says ``no driver found``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message
from nats.js.api import StreamConfig

from foodmesh.core.nats import Subjects
from foodmesh.v1 import dispatch_pb2, location_pb2, notification_pb2, order_pb2

__all__ = [
    "CANCEL_CONFIRM_TIMEOUT",
    "EVENT_ALERT_CLEARED",
    "EVENT_CONFIRM_DUE_SOON",
    "EVENT_DELAYED",
    "EVENT_DRIVER_BACK",
    "EVENT_DRIVER_LOST",
    "EVENT_LOST_REASSIGNED",
    "EVENT_NO_DRIVER",
    "DISPATCH",
    "DISPATCH_EVENTS",
    "DISPATCH_LEASES",
    "DRIVER_LOCATIONS",
    "DRIVER_PRESENCE",
    "DRIVER_SESSIONS",
    "LOCATION",
    "NOTIFICATION_INBOX",
    "ORDERS",
    "ORDER_EVENTS",
    "Stream",
    "Subject",
    "Topic",
]

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Subject(Generic[M]):
    """One subject and the payload type it carries."""

    name: str
    payload: type[M]

    def decode(self, data: bytes) -> M:
        return self.payload.FromString(data)


@dataclass(frozen=True, slots=True)
class Topic(Generic[M]):
    """A family of subjects ``<prefix>.<token>`` that all carry one payload type."""

    prefix: str
    payload: type[M]

    def subject(self, token: str) -> str:
        """The subject of one member: an event name, a kind, a driver id."""
        return f"{self.prefix}.{token}"

    @property
    def any(self) -> str:
        """Every member, one token deep (``<prefix>.*``)."""
        return f"{self.prefix}.*"

    @property
    def all(self) -> str:
        """Everything under the prefix, however deep (``<prefix>.>``)."""
        return f"{self.prefix}.>"

    def decode(self, data: bytes) -> M:
        return self.payload.FromString(data)


@dataclass(frozen=True, slots=True)
class Stream:
    """A JetStream stream: its name and subjects, how long and how it keeps messages."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: int
    #: Seconds in which a repeated ``Nats-Msg-Id`` is dropped (0: the server's 2 minutes).
    duplicate_window_s: int = 0

    def config(self, ns: Subjects) -> StreamConfig:
        """The stream's config in namespace ``ns`` (for ``ensure_stream``)."""
        return StreamConfig(
            name=ns.stream(self.name),
            subjects=[ns.subject(s) for s in self.subjects],
            max_age=self.max_age_s,
            duplicate_window=self.duplicate_window_s,
        )


#: ``orders.v1.<event>``: an order's change (its new status, or ``scheduled``), from
#: Order's outbox. Followed by Dispatch, Pricing and the dashboard.
ORDER_EVENTS = Topic("orders.v1", order_pb2.OrderEvent)
ORDERS = Stream("ORDERS", (ORDER_EVENTS.all,), max_age_s=7 * 86400)

#: ``dispatch.v1.<kind>``: offers and assignments, from Dispatch's outbox.
DISPATCH_EVENTS = Topic("dispatch.v1", dispatch_pb2.DispatchEvent)
#: One token deep: the sessions' pushes below ``dispatch.v1.session`` stay out of it.
DISPATCH = Stream("DISPATCH", (DISPATCH_EVENTS.any,), max_age_s=7 * 86400, duplicate_window_s=120)
#: ``dispatch.v1.session.<driver>``: a push to a driver's session, whichever replica holds it.
DRIVER_SESSIONS = Topic("dispatch.v1.session", dispatch_pb2.DriverSessionResponse)
#: The regions each Dispatch replica leads (keys lapse when their holder stops renewing).
DISPATCH_LEASES = "dispatch_leases"

#: ``location.v1.driver.<driver>``: each accepted fix of a driver (core NATS, not kept).
DRIVER_LOCATIONS = Topic("location.v1.driver", location_pb2.DriverLocationEvent)
#: ``location.v1.presence``: a driver came online or went silent.
DRIVER_PRESENCE = Subject("location.v1.presence", location_pb2.DriverPresenceEvent)
LOCATION = Stream("LOCATION", (DRIVER_PRESENCE.name,), max_age_s=24 * 3600, duplicate_window_s=120)

#: ``orders.v1.no_driver``: no driver accepted the order in time (Dispatch escalated it).
EVENT_NO_DRIVER = "no_driver"
#: ``orders.v1.driver_lost``: the driver carrying the food went silent.
EVENT_DRIVER_LOST = "driver_lost"
#: ``orders.v1.driver_back``: the lost driver is back; the delivery continues.
EVENT_DRIVER_BACK = "driver_back"
#: ``orders.v1.alert_cleared``: ops cleared an order's alert by hand.
EVENT_ALERT_CLEARED = "alert_cleared"
#: ``orders.v1.lost_reassigned``: ops handed a lost delivery to another driver.
EVENT_LOST_REASSIGNED = "lost_reassigned"
#: ``orders.v1.confirm_due_soon``: 80 % of the order's confirmation timeout passed and its
#: restaurant has not confirmed it (no timeline entry; once per order).
EVENT_CONFIRM_DUE_SOON = "confirm_due_soon"
#: ``orders.v1.delayed``: a stage's estimate landed more than 10 min past the promise
#: (no timeline entry; once per order).
EVENT_DELAYED = "delayed"
#: ``cancellation_reason`` code of an order its restaurant did not confirm in time.
CANCEL_CONFIRM_TIMEOUT = "confirm_timeout"
#: ``notifications.v1.inbox.<recipient>``: a new inbox notification, for the live streams of
#: whichever Notification replica holds the recipient's (core NATS: the inbox keeps it).
NOTIFICATION_INBOX = Topic("notifications.v1.inbox", notification_pb2.Notification)
