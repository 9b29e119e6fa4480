"""The mesh's NATS names, declared once, are the names on the wire, namespaced or not."""

from __future__ import annotations

from foodmesh.core import events
from foodmesh.core.nats import Subjects
from foodmesh.v1 import dispatch_pb2, location_pb2, order_pb2
from servers.runtime.config import Settings
from servers.runtime.serve import Resources


def test_subjects_are_the_wire_names_with_their_payload_types() -> None:
    assert events.ORDER_EVENTS.subject("placed") == "orders.v1.placed"
    assert events.ORDER_EVENTS.all == "orders.v1.>"
    assert events.ORDER_EVENTS.payload is order_pb2.OrderEvent
    assert events.DISPATCH_EVENTS.subject("offered") == "dispatch.v1.offered"
    assert events.DISPATCH_EVENTS.payload is dispatch_pb2.DispatchEvent
    assert events.DRIVER_SESSIONS.subject("d1") == "dispatch.v1.session.d1"
    assert events.DRIVER_SESSIONS.any == "dispatch.v1.session.*"
    assert events.DRIVER_LOCATIONS.subject("d1") == "location.v1.driver.d1"
    assert events.DRIVER_PRESENCE.name == "location.v1.presence"
    assert events.DRIVER_PRESENCE.payload is location_pb2.DriverPresenceEvent
    assert events.DISPATCH_LEASES == "dispatch_leases"
    ev = order_pb2.OrderEvent(event_id="o1.1")
    assert events.ORDER_EVENTS.decode(ev.SerializeToString()) == ev


def test_streams_are_namespaced_like_every_other_name() -> None:
    bare, ns = Subjects(""), Subjects("t1")
    orders = events.ORDERS.config(ns)
    assert (orders.name, orders.subjects) == ("T1_ORDERS", ["t1.orders.v1.>"])
    assert orders.max_age == 7 * 86400 and not orders.duplicate_window
    dispatch = events.DISPATCH.config(bare)
    # One token deep: the sessions' pushes (dispatch.v1.session.<d>) are not kept.
    assert (dispatch.name, dispatch.subjects) == ("DISPATCH", ["dispatch.v1.*"])
    assert dispatch.duplicate_window == 120
    location = events.LOCATION.config(ns)
    assert (location.name, location.subjects) == ("T1_LOCATION", ["t1.location.v1.presence"])
    assert location.max_age == 24 * 3600


def test_a_dependency_listens_where_the_env_says_else_at_its_port_on_this_host() -> None:
    env = {"FOODMESH_DEV": "1", "FOODMESH_ORDER_PRICING_TARGET": "pricing.svc:443",
           "FOODMESH_ORDER_ETA_TARGET": ""}  # fmt: skip
    r = Resources(Settings.from_env("order", {"FOODMESH_HOST": "10.0.0.7", **env}), frozenset())
    assert r.target("pricing") == "pricing.svc:443"
    assert r.target("catalog") == "10.0.0.7:7051"
    assert r.configured_target("pricing") == "pricing.svc:443"
    assert r.configured_target("eta") is None  # empty counts as unset
    assert r.configured_target("dispatch") is None
