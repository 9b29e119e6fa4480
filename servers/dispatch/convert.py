"""Records ↔ protobuf messages, and the events the outbox carries."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

from google.protobuf import timestamp_pb2

from foodmesh.core.events import DISPATCH_EVENTS
from foodmesh.core.nats import Subjects
from foodmesh.v1 import common_pb2, dispatch_pb2
from servers.dispatch.model import Assignment, Driver, OfferRow
from servers.dispatch.offers import AssignmentStatus
from servers.dispatch.stacking import Stop
from servers.runtime.outbox import OutboxEvent

__all__ = [
    "DRIVER_STATUS",
    "assignment_to_pb",
    "driver_to_pb",
    "event_builder",
    "offer_to_pb",
    "stamp",
]

S = AssignmentStatus
AS = dispatch_pb2.AssignmentStatus
DS = common_pb2.DriverStatus

STATUS_TO_PB = {s: AS.Value(f"ASSIGNMENT_STATUS_{s.name}") for s in S}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}
DRIVER_STATUS = {
    "offline": DS.DRIVER_STATUS_OFFLINE,
    "available": DS.DRIVER_STATUS_AVAILABLE,
    "offered": DS.DRIVER_STATUS_OFFERED,
    "on_delivery": DS.DRIVER_STATUS_ON_DELIVERY,
    "paused": DS.DRIVER_STATUS_PAUSED,
}
_KIND = {
    "offered": dispatch_pb2.DISPATCH_EVENT_KIND_OFFERED,
    "assigned": dispatch_pb2.DISPATCH_EVENT_KIND_ASSIGNED,
    "unassigned": dispatch_pb2.DISPATCH_EVENT_KIND_UNASSIGNED,
    "escalated": dispatch_pb2.DISPATCH_EVENT_KIND_ESCALATED,
    "arriving": dispatch_pb2.DISPATCH_EVENT_KIND_ARRIVING,
}


def stamp(when: dt.datetime | float | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    t = timestamp_pb2.Timestamp()
    if isinstance(when, dt.datetime):
        t.FromDatetime(when)
    else:
        t.FromNanoseconds(int(when * 1e9))
    return t


def _stop(lat: float, lon: float, label: str) -> dispatch_pb2.Stop:
    return dispatch_pb2.Stop(location=common_pb2.LatLng(lat=lat, lon=lon), label=label)


def assignment_to_pb(a: Assignment) -> dispatch_pb2.Assignment:
    return dispatch_pb2.Assignment(
        order_id=a.order_id,
        driver_id=a.driver_id,
        status=STATUS_TO_PB[a.status],
        pickup=_stop(a.pickup_lat, a.pickup_lon, a.pickup_label),
        dropoff=_stop(a.dropoff_lat, a.dropoff_lon, a.dropoff_label),
        offers_made=a.offers_made,
        estimated_pickup_time=stamp(a.est_pickup_at),
        estimated_delivery_time=stamp(a.est_delivery_at),
        update_time=stamp(a.updated_at),
        ready_time=stamp(a.ready_at),
        region=a.region,
    )


def offer_to_pb(o: OfferRow, a: Assignment) -> dispatch_pb2.Offer:
    return dispatch_pb2.Offer(
        offer_id=o.offer_id,
        order_id=o.order_id,
        pickup=_stop(a.pickup_lat, a.pickup_lon, a.pickup_label),
        dropoff=_stop(a.dropoff_lat, a.dropoff_lon, a.dropoff_label),
        expected_earnings=common_pb2.Money(amount_minor=o.earnings_minor, currency_code=o.currency),
        distance_miles=o.distance_miles,
        ready_time=stamp(a.ready_at),
        expire_time=stamp(o.expire_at),
        attempt=o.attempt,
        driver_id=o.driver_id,
        why=why_to_pb(o.why),
    )


def why_to_pb(text: str) -> dispatch_pb2.OfferWhy:
    """The stored explanation (``Proposal.why``'s JSON) as sent; empty if none was kept."""
    if not text:
        return dispatch_pb2.OfferWhy()
    w = json.loads(text)
    out = dispatch_pb2.OfferWhy(
        score=w["score"],
        parts=[dispatch_pb2.ScorePart(name=n, weight=wt, value=v) for n, wt, v in w["parts"]],
        bundle_order_ids=w["bundle"],
        alternatives=w["alternatives"],
        to_pickup_seconds=w["to_pickup_s"],
        cost_minutes=w.get("cost", 0.0),
    )
    out.estimated_pickup_time.FromNanoseconds(int(w["pickup_at"] * 1e9))
    out.estimated_delivery_time.FromNanoseconds(int(w["delivery_at"] * 1e9))
    return out


def driver_to_pb(d: Driver) -> dispatch_pb2.Driver:
    return dispatch_pb2.Driver(
        driver_id=d.driver_id,
        name=d.name,
        vehicle_type=d.vehicle_type,  # type: ignore[arg-type]
        vehicle=d.vehicle,
        photo_url=d.photo_url,
        rating=d.rating,
        completed_deliveries=d.completed,
        acceptance_rate=d.acceptance,
        status=DRIVER_STATUS.get(d.status, DS.DRIVER_STATUS_OFFLINE),
        region=d.region,
    )


def event_builder(subjects: Subjects):  # type: ignore[no-untyped-def]
    """The store's ``Announce``: a DispatchEvent on ``dispatch.v1.<kind>``."""

    def announce(kind: str, a: Assignment, offer: OfferRow | None, reason: str) -> OutboxEvent:
        ev = dispatch_pb2.DispatchEvent(
            event_id=f"dispatch:{a.order_id}:{kind}:{uuid.uuid4().hex[:12]}",
            kind=_KIND[kind],
            assignment=assignment_to_pb(a),
            reason=reason,
            event_time=stamp(time.time()),
        )
        if offer is not None:
            ev.offer.CopyFrom(offer_to_pb(offer, a))
        return OutboxEvent(
            event_id=ev.event_id,
            subject=subjects.subject(DISPATCH_EVENTS.subject(kind)),
            payload=ev.SerializeToString(),
        )

    return announce


def stop_to_pb(s: Stop) -> dispatch_pb2.TripStop:
    """A stop of the driver's trip, as their session shows it."""
    kind = (dispatch_pb2.TripStop.KIND_PICKUP if s.kind == "pickup"
            else dispatch_pb2.TripStop.KIND_DROPOFF)  # fmt: skip
    return dispatch_pb2.TripStop(
        kind=kind, order_id=s.order_id, location=common_pb2.LatLng(lat=s.lat, lon=s.lon),
        label=s.label,
    )  # fmt: skip
