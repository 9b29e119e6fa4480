"""EtaService: decode and check the request, route (cached), estimate, encode.

The arithmetic is in ``estimate.py`` (delivery), ``reroute.py`` (the rule) and
``routing.py`` (graph, fallback, batches). Batches (tens of ms) run in a thread so
the event loop keeps serving; one route (a few ms of A*) runs inline, cheaper than
the hop to a thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from foodmesh.core.errors import DependencyUnavailable, InvalidArgument, Violations
from foodmesh.core.geo import valid_lat_lon
from foodmesh.core.tasks import stop_tasks
from foodmesh.roads import Snap, decode_polyline
from foodmesh.v1 import common_pb2, eta_pb2, eta_pb2_grpc
from servers.eta.cache import OverrideStore, RouteCache, route_key
from servers.eta.estimate import DeliveryInput, estimate_delivery, travel_minutes
from servers.eta.features import vehicle_seconds
from servers.eta.model import EtaModel, ModelWatcher
from servers.eta.reroute import Reason, decide, deviation_m
from servers.eta.routing import Leg, Router, RouteResult
from servers.runtime.limits import max_items

__all__ = ["EtaServicer", "Overrides"]

_log = logging.getLogger("foodmesh.eta")

ES = eta_pb2.EstimateSource
#: The contract's caps (``max_items``): the runtime refuses larger requests before we see them.
MAX_LEGS = max_items(eta_pb2.EstimateTravelTimesRequest.DESCRIPTOR, "legs")
MAX_OVERRIDES = max_items(eta_pb2.SetRoadOverridesRequest.DESCRIPTOR, "overrides")
_MANEUVER = {
    "depart": eta_pb2.MANEUVER_DEPART,
    "straight": eta_pb2.MANEUVER_STRAIGHT,
    "slight left": eta_pb2.MANEUVER_SLIGHT_LEFT,
    "turn left": eta_pb2.MANEUVER_LEFT,
    "sharp left": eta_pb2.MANEUVER_SHARP_LEFT,
    "slight right": eta_pb2.MANEUVER_SLIGHT_RIGHT,
    "turn right": eta_pb2.MANEUVER_RIGHT,
    "sharp right": eta_pb2.MANEUVER_SHARP_RIGHT,
    "u-turn": eta_pb2.MANEUVER_U_TURN,
    "arrive": eta_pb2.MANEUVER_ARRIVE,
}
_REASON = {
    Reason.NONE: eta_pb2.REROUTE_REASON_UNSPECIFIED,
    Reason.OFF_ROUTE: eta_pb2.REROUTE_REASON_OFF_ROUTE,
    Reason.ETA_CHANGED: eta_pb2.REROUTE_REASON_ETA_CHANGED,
}


def _point(v: Violations, msg: common_pb2.LatLng, present: bool, field: str, *,
           required: bool) -> tuple[float, float] | None:  # fmt: skip
    if not present:
        v.check(not required, field, "required")
        return None
    ok = valid_lat_lon(msg.lat, msg.lon) and not (msg.lat == 0.0 and msg.lon == 0.0)
    if not ok:
        if not (math.isfinite(msg.lat) and -90 <= msg.lat <= 90):
            v.add(f"{field}.lat", "must be a latitude between -90 and 90")
        elif not (math.isfinite(msg.lon) and -180 <= msg.lon <= 180):
            v.add(f"{field}.lon", "must be a longitude between -180 and 180")
        else:
            v.add(field, "required (0, 0 is not a delivery location)")
        return None
    return (msg.lat, msg.lon)


def _ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def _when(msg: Timestamp, present: bool, now: float) -> dt.datetime:
    s = msg.seconds + msg.nanos / 1e9 if present else now
    return dt.datetime.fromtimestamp(s, dt.UTC)


@dataclass(frozen=True, slots=True)
class Overrides:
    """The overrides in force as edges, with the earliest expiry among them."""

    slowdowns: dict[int, float]
    closed: set[int]
    next_expiry: float
    version: str


class EtaServicer(eta_pb2_grpc.EtaServiceServicer):
    def __init__(
        self,
        *,
        router: Router,
        models: ModelWatcher,
        cache: RouteCache,
        overrides: OverrideStore,
        clock: Callable[[], float] = time.time,
        sync_every_s: float = 1.0,
    ) -> None:
        self.router = router
        self.models = models
        self.cache = cache
        self.store = overrides
        self.clock = clock
        self.sync_every_s = sync_every_s
        self._request = eta_pb2.SetRoadOverridesRequest()
        self._applied_version = ""
        self._ov_version = "0"
        self._next_expiry = math.inf
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ routing
    @property
    def model(self) -> EtaModel | None:
        return self.models.current

    def _snap(self, p: tuple[float, float], field: str) -> Snap | None:
        return self.router.check_on_map(p[0], p[1], field)

    async def _route(
        self,
        origin: tuple[float, float],
        destination: tuple[float, float],
        when: dt.datetime,
        *,
        fields: tuple[str, str] = ("origin", "destination"),
    ) -> tuple[RouteResult, bool]:
        self._expire()
        o = self._snap(origin, fields[0])
        d = self._snap(destination, fields[1])
        bucket = self.router.traffic.bucket(when)
        ok = (o.lat, o.lon) if o is not None else origin
        dk = (d.lat, d.lon) if d is not None else destination
        key = route_key(self.cache.keys, ok, dk, bucket, self._ov_version)

        async def compute() -> RouteResult:
            # Inline: a city route's A* takes a few ms (p99 ~6 ms), less than a hop to a
            # thread and back costs under load (the GIL's 5 ms switch interval).
            return self.router.route(origin, destination, depart_at=when, snaps=(o, d))

        return await self.cache.get_or_compute(key, compute)

    @staticmethod
    def _leg(r: RouteResult) -> Leg:
        return Leg(r.distance_m, r.duration_s, r.free_flow_s, r.straight_line)

    # ------------------------------------------------------------ RPCs
    async def Route(  # noqa: N802 — generated name
        self, request: eta_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.RouteResponse:
        v = Violations()
        o = _point(v, request.origin, request.HasField("origin"), "origin", required=True)
        d = _point(v, request.destination, request.HasField("destination"), "destination",
                   required=True)  # fmt: skip
        v.raise_if_any()
        assert o is not None and d is not None
        when = _when(request.departure_time, request.HasField("departure_time"), self.clock())
        r, cached = await self._route(o, d, when)
        factor = 1.0
        if r.duration_s > 0 and not r.straight_line:
            vt = vehicle_seconds(request.vehicle_type, r.free_flow_s, r.duration_s)
            factor = vt / r.duration_s
        out = eta_pb2.RouteResponse(
            distance_meters=r.distance_m,
            duration_seconds=r.duration_s * factor,
            polyline=r.polyline,
            cached=cached,
            source=ES.ESTIMATE_SOURCE_STRAIGHT_LINE if r.straight_line
            else ES.ESTIMATE_SOURCE_ROAD_GRAPH,
            traffic_multiplier=r.traffic_multiplier,
        )  # fmt: skip
        if request.include_steps:
            for s in r.steps:
                step = eta_pb2.RouteStep(
                    maneuver=_MANEUVER.get(s.maneuver, eta_pb2.MANEUVER_STRAIGHT),
                    street_name=s.street,
                    distance_meters=s.distance_m,
                    duration_seconds=s.duration_s * factor,
                    instruction=_instruction(s.maneuver, s.street),
                )
                step.location.lat, step.location.lon = s.lat, s.lon
                out.steps.append(step)
        return out

    async def EstimateDelivery(  # noqa: N802
        self, request: eta_pb2.EstimateDeliveryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.EstimateDeliveryResponse:
        v = Violations()
        rest = _point(v, request.restaurant_location, request.HasField("restaurant_location"),
                      "restaurant_location", required=True)  # fmt: skip
        cust = _point(v, request.delivery_location, request.HasField("delivery_location"),
                      "delivery_location", required=True)  # fmt: skip
        drv = _point(v, request.driver_location, request.HasField("driver_location"),
                     "driver_location", required=False)  # fmt: skip
        v.check(0 <= request.item_count <= 1000, "item_count", "must be between 0 and 1000")
        v.check(request.restaurant_active_orders >= 0, "restaurant_active_orders",
                "must not be negative")  # fmt: skip
        v.check(request.restaurant_recent_orders >= 0, "restaurant_recent_orders",
                "must not be negative")  # fmt: skip
        for name in ("restaurant_listed_prep_minutes", "restaurant_recent_prep_minutes"):
            x = getattr(request, name)
            v.check(math.isfinite(x) and 0 <= x <= 600, name, "must be between 0 and 600")
        v.check(request.subtotal.amount_minor >= 0, "subtotal.amount_minor", "must not be negative")
        v.check(request.drivers_nearby >= 0, "drivers_nearby", "must not be negative")
        em = request.event_multiplier
        v.check(math.isfinite(em) and 0 <= em <= 10, "event_multiplier", "must be between 0 and 10")
        now_s = self.clock()
        if request.HasField("order_time"):
            ot = request.order_time.seconds + request.order_time.nanos / 1e9
            v.check(ot <= now_s + 7 * 86400, "order_time", "more than 7 days ahead")
        v.raise_if_any()
        assert rest is not None and cust is not None
        now = dt.datetime.fromtimestamp(now_s, dt.UTC)
        order_time = _when(request.order_time, request.HasField("order_time"), now_s)
        status = request.order_status
        after_pickup = status in (
            common_pb2.ORDER_STATUS_PICKED_UP,
            common_pb2.ORDER_STATUS_IN_TRANSIT,
        )
        # A scheduled order is prepared for its time: estimate from there.
        depart = max(now, order_time)
        if after_pickup and drv is not None:
            fields = ("driver_location", "delivery_location")
            route, _ = await self._route(drv, cust, depart, fields=fields)
            pickup_leg = None
        else:
            fields = ("restaurant_location", "delivery_location")
            if drv is not None and not after_pickup:
                (route, _), (pick, _) = await asyncio.gather(
                    self._route(rest, cust, depart, fields=fields),
                    self._route(drv, rest, depart, fields=("driver_location",
                                                            "restaurant_location")),
                )  # fmt: skip
                pickup_leg = self._leg(pick)
            else:
                route, _ = await self._route(rest, cust, depart, fields=fields)
                pickup_leg = None
        local_now = self.router.traffic.local(depart)
        local_order = self.router.traffic.local(order_time)
        has = request.HasField("drivers_nearby")
        nearby = float(request.drivers_nearby) if has else math.nan
        inp = DeliveryInput(
            restaurant_id=request.restaurant_id,
            item_count=max(1, request.item_count),
            subtotal=request.subtotal.amount_minor / 100.0,
            order_time=order_time,
            now=depart,
            order_hour=local_order.hour,
            order_dow=local_order.weekday(),
            hour=local_now.hour,
            dow=local_now.weekday(),
            status=status,
            weather=request.weather,
            restaurant_load=request.restaurant_active_orders,
            listed_prep_min=request.restaurant_listed_prep_minutes,
            recent_prep_min=request.restaurant_recent_prep_minutes,
            recent_orders=request.restaurant_recent_orders,
            drivers_nearby=nearby,
            event_multiplier=request.event_multiplier or 1.0,
            vehicle=request.vehicle_type,
            driver_id=request.driver_id,
            driver_known=drv is not None,
            delivery_leg=self._leg(route),
            delivery_to=cust,
            pickup_leg=pickup_leg,
            restaurant=rest,
        )
        e = estimate_delivery(inp, self.model)
        # Total from now; a scheduled order's adds the wait until its time.
        ahead = (depart - now).total_seconds() / 60.0
        total = ahead + e.interval.total
        if e.straight_line:
            source = ES.ESTIMATE_SOURCE_STRAIGHT_LINE
        elif e.from_model:
            source = ES.ESTIMATE_SOURCE_MODEL
        else:
            source = ES.ESTIMATE_SOURCE_ROAD_GRAPH
        return eta_pb2.EstimateDeliveryResponse(
            estimated_delivery_time=_ts(now_s + total * 60.0),
            eta_confidence=e.confidence,
            prep_minutes=e.prep.median,
            pickup_minutes=e.pickup.median,
            delivery_minutes=e.delivery.median,
            total_minutes=total,
            lower_minutes=ahead + e.interval.lower,
            upper_minutes=ahead + e.interval.upper,
            source=source,
            model_version=e.model_version,
        )

    async def EstimateTravelTimes(  # noqa: N802
        self,
        request: eta_pb2.EstimateTravelTimesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> eta_pb2.EstimateTravelTimesResponse:
        v = Violations()
        n = len(request.legs)
        v.check(n > 0, "legs", "required (at least one leg)")
        if n > MAX_LEGS:  # refused whole, never leg by leg
            raise InvalidArgument.field("legs", f"at most {MAX_LEGS} items")
        origins: list[tuple[float, float]] = []
        dests: list[tuple[float, float]] = []
        for i, leg in enumerate(request.legs[:MAX_LEGS]):
            o = _point(v, leg.origin, leg.HasField("origin"), f"legs[{i}].origin", required=True)
            d = _point(v, leg.destination, leg.HasField("destination"),
                       f"legs[{i}].destination", required=True)  # fmt: skip
            if len(v) > 20:
                break
            if o is not None and d is not None:
                origins.append(o)
                dests.append(d)
        v.raise_if_any()
        now_s = self.clock()
        when = _when(request.departure_time, request.HasField("departure_time"), now_s)
        self._expire()
        legs = await asyncio.to_thread(self.router.legs, origins, dests, depart_at=when)
        model = self.model
        local = self.router.traffic.local(when)
        vehicle = request.vehicle_type
        minutes = travel_minutes(
            model,
            legs,
            ends=dests,
            hour=local.hour,
            dow=local.weekday(),
            weather=0,
            vehicle=vehicle,
            driver_id="",
            to_customer=False,
        )
        out = eta_pb2.EstimateTravelTimesResponse()
        for t, m in zip(legs, minutes, strict=True):
            if t.straight_line:
                src, secs = ES.ESTIMATE_SOURCE_STRAIGHT_LINE, t.duration_s
            elif model is not None:
                src, secs = ES.ESTIMATE_SOURCE_MODEL, float(m[1]) * 60.0
            else:
                src, secs = ES.ESTIMATE_SOURCE_ROAD_GRAPH, float(m[1]) * 60.0
            out.travel_times.append(
                eta_pb2.TravelTime(distance_meters=t.distance_m, duration_seconds=secs, source=src)
            )
        return out

    async def CheckReroute(  # noqa: N802
        self, request: eta_pb2.CheckRerouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.CheckRerouteResponse:
        v = Violations()
        drv = _point(v, request.driver_location, request.HasField("driver_location"),
                     "driver_location", required=True)  # fmt: skip
        dest = _point(v, request.destination, request.HasField("destination"), "destination",
                      required=True)  # fmt: skip
        path: list[tuple[float, float]] = []
        if not request.current_polyline:
            v.add("current_polyline", "required")
        else:
            try:
                path = decode_polyline(request.current_polyline)
            except ValueError as exc:
                v.add("current_polyline", f"not an encoded polyline: {exc}")
            if request.current_polyline and not path:
                v.check(False, "current_polyline", "has no points")
        v.raise_if_any()
        assert drv is not None and dest is not None
        now_s = self.clock()
        when = dt.datetime.fromtimestamp(now_s, dt.UTC)
        dev = deviation_m(drv[0], drv[1], path)
        r, _ = await self._route(drv, dest, when, fields=("driver_location", "destination"))
        factor = 1.0
        if r.duration_s > 0 and not r.straight_line:
            factor = vehicle_seconds(request.vehicle_type, r.free_flow_s, r.duration_s) / (
                r.duration_s
            )
        new_eta = now_s + r.duration_s * factor
        current = None
        if request.HasField("current_eta"):
            current = request.current_eta.seconds + request.current_eta.nanos / 1e9
        decision = decide(deviation=dev, current_eta_s=current, new_eta_s=new_eta)
        out = eta_pb2.CheckRerouteResponse(
            reason=_REASON[decision.reason], deviation_meters=dev, eta=_ts(new_eta)
        )
        if decision.reroute:
            out.polyline = r.polyline
            out.distance_meters = r.distance_m
            out.duration_seconds = r.duration_s * factor
        return out

    async def SetRoadOverrides(  # noqa: N802
        self, request: eta_pb2.SetRoadOverridesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.SetRoadOverridesResponse:
        v = Violations()
        v.check(len(request.overrides) <= MAX_OVERRIDES, "overrides",
                f"at most {MAX_OVERRIDES}")  # fmt: skip
        for i, o in enumerate(request.overrides[:MAX_OVERRIDES]):
            f = f"overrides[{i}]"
            p = _point(v, o.location, o.HasField("location"), f"{f}.location", required=True)
            if p is not None:
                s = self.router.graph.snap(p[0], p[1])
                v.check(s.distance_m <= self.router.max_snap_m, f"{f}.location",
                        f"{s.distance_m:.0f} m from the nearest road")  # fmt: skip
            if not o.closed:
                v.check(math.isfinite(o.slowdown) and 1.0 <= o.slowdown <= 100.0,
                        f"{f}.slowdown", "must be between 1 and 100 when not closed")  # fmt: skip
        v.raise_if_any()
        payload = request.SerializeToString(deterministic=True)
        version = hashlib.sha1(payload).hexdigest()[:12]
        try:
            async with asyncio.timeout(2.0):
                await self.store.put(version, payload)
        except Exception as exc:  # not applied here either: replicas must agree
            raise DependencyUnavailable(f"cannot store the overrides in Redis: {exc}") from None
        ov = self._apply(request, version)
        return eta_pb2.SetRoadOverridesResponse(edges_affected=len(set(ov.slowdowns) | ov.closed))

    # ------------------------------------------------------------ overrides
    def _apply(self, request: eta_pb2.SetRoadOverridesRequest, version: str) -> Overrides:
        now = self.clock()
        slow: dict[int, float] = {}
        closed: set[int] = set()
        next_expiry = math.inf
        for o in request.overrides:
            if o.HasField("expire_time"):
                exp = o.expire_time.seconds + o.expire_time.nanos / 1e9
                if exp <= now:
                    continue
                next_expiry = min(next_expiry, exp)
            edges = self.router.edges_at(o.location.lat, o.location.lon)
            if o.closed:
                closed.update(edges)
            else:
                for e in edges:
                    slow[e] = max(slow.get(e, 1.0), o.slowdown)
        self.router.set_overrides(slow, closed)
        active = repr((sorted(slow.items()), sorted(closed))).encode()
        self._ov_version = hashlib.sha1(active).hexdigest()[:12] if (slow or closed) else "0"
        self._request = request
        self._applied_version = version
        self._next_expiry = next_expiry
        if slow or closed:
            _log.info("road overrides %s: %d slowed, %d closed edges", version, len(slow),
                      len(closed))  # fmt: skip
        return Overrides(slow, closed, next_expiry, self._ov_version)

    def _expire(self) -> None:
        if self.clock() >= self._next_expiry:
            self._apply(self._request, self._applied_version)

    async def sync_once(self) -> None:
        """Applies the shared overrides if another replica changed them."""
        version = await self.store.version()
        if version is None or version == self._applied_version:
            return
        got = await self.store.get()
        if got is None:
            return
        req = eta_pb2.SetRoadOverridesRequest.FromString(got[1])
        self._apply(req, got[0])

    async def _sync(self) -> None:
        while True:
            try:
                async with asyncio.timeout(5.0):
                    await self.sync_once()
            except Exception as exc:  # Redis away: keep the overrides we have, try again
                _log.debug("overrides sync failed: %s", exc)
            await asyncio.sleep(self.sync_every_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sync(), name="eta-overrides-sync")

    async def stop(self) -> None:
        await stop_tasks([self._task])
        self._task = None


def _instruction(maneuver: str, street: str) -> str:
    onto = f" onto {street}" if street else ""
    if maneuver == "depart":
        return f"Head out on {street}" if street else "Depart"
    if maneuver == "arrive":
        return "Arrive at your destination"
    if maneuver == "straight":
        return f"Continue on {street}" if street else "Continue straight"
    return f"{maneuver[0].upper()}{maneuver[1:]}{onto}"
