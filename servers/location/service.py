"""LocationService: decode, call the domain, encode. The work is in ingest, store and history."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cachetools import LRUCache
from google.protobuf import duration_pb2

from foodmesh.core.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    Violations,
)
from foodmesh.core.geo import METERS_PER_MILE, haversine_m, valid_lat_lon
from foodmesh.core.settings import env_float, env_int
from foodmesh.v1 import common_pb2, location_pb2, location_pb2_grpc
from servers.location import metrics
from servers.location.fixes import Fix, Rejection, Throttle, check_fix
from servers.location.history import HistoryConfig, HistoryWriter, downsample_query
from servers.location.ingest import Ingest
from servers.location.policy import Activity, DriverActivity, IntervalPolicy, next_interval_s
from servers.location.presence import Presence
from servers.location.store import INDEXED_STATUSES, MPH_TO_MPS, Accepted, LiveStore
from servers.location.tracking import Tracker
from servers.runtime.auth import require
from servers.runtime.ids import check_id
from servers.runtime.limits import max_items

__all__ = ["LocationConfig", "LocationServicer"]

DS = common_pb2.DriverStatus
_ACTIVITY = {
    DS.DRIVER_STATUS_AVAILABLE: Activity.AVAILABLE,
    DS.DRIVER_STATUS_OFFERED: Activity.OFFERED,
    DS.DRIVER_STATUS_ON_DELIVERY: Activity.ON_DELIVERY,
    DS.DRIVER_STATUS_PAUSED: Activity.PAUSED,
    DS.DRIVER_STATUS_OFFLINE: Activity.OFFLINE,
}
_REASON = {
    r: location_pb2.FixRejectionReason.Value(f"FIX_REJECTION_REASON_{r.name}") for r in Rejection
}
#: The largest search FindNearbyDrivers accepts (Dispatch widens to 10 mi).
MAX_RADIUS_M = 50_000.0
#: The contract's cap (``max_items``); the runtime refuses a larger message before we see it.
MAX_FIXES_PER_MESSAGE = max_items(location_pb2.StreamLocationsRequest.DESCRIPTOR, "fixes")
#: Moving less than this counts as standing still, for the reporting interval.
_STILL_RADIUS_M = 50.0


@dataclass(frozen=True, slots=True)
class LocationConfig:
    """The Location service's knobs (``FOODMESH_LOCATION_*``)."""

    presence_timeout_s: float = 30.0
    #: TrackOrder asks the ETA service for a fresh estimate at least this often.
    eta_every_s: float = 30.0
    max_fixes_per_s: float = 5.0
    #: How long the ingest writer waits for more fixes before writing a small batch.
    linger_s: float = 0.002
    burst: float = 10.0
    history: HistoryConfig = HistoryConfig()
    policy: IntervalPolicy = IntervalPolicy()

    @classmethod
    def from_extra(
        cls, extra: dict[str, str] | Any, *, state_dir: Path | None = None
    ) -> LocationConfig:
        p = "FOODMESH_LOCATION_"
        spill = extra.get(f"{p}SPILL_DIR")
        return cls(
            presence_timeout_s=env_float(extra, f"{p}PRESENCE_TIMEOUT_S", 30.0, lo=0.1),
            eta_every_s=env_float(extra, f"{p}ETA_EVERY_S", 30.0, lo=0.05),
            max_fixes_per_s=env_float(extra, f"{p}MAX_FIXES_PER_S", 5.0, lo=0.1),
            burst=env_float(extra, f"{p}BURST", 10.0, lo=1.0),
            linger_s=env_float(extra, f"{p}INGEST_LINGER_S", 0.002),
            history=HistoryConfig(
                flush_s=env_float(extra, f"{p}HISTORY_FLUSH_S", 1.0, lo=0.01),
                batch_rows=env_int(extra, f"{p}HISTORY_BATCH_ROWS", 5000, lo=1),
                max_buffer_rows=env_int(extra, f"{p}HISTORY_MAX_BUFFER_ROWS", 100_000, lo=1),
                retention_days=env_int(extra, f"{p}HISTORY_RETENTION_DAYS", 30, lo=1),
                spill_dir=Path(spill) if spill else state_dir,
            ),
        )


def _fix_from(
    driver_id: str, m: location_pb2.LocationFix | location_pb2.UpdateLocationRequest, now: float
) -> Fix:
    if m.HasField("timestamp"):
        t = m.timestamp
        ts = t.seconds + t.nanos / 1e9
    else:
        ts = math.nan
    # Positional: a keyword call costs half as much again, once per fix.
    return Fix(driver_id, m.lat, m.lon, m.accuracy, m.heading, m.speed * MPH_TO_MPS, ts, now)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


class _StreamState:
    """What one driver's stream remembers between messages."""

    __slots__ = (
        "anchor",
        "anchor_ts",
        "driver_id",
        "last",
        "last_ts",
        "next_stop",
        "status",
        "throttle",
    )

    def __init__(self, driver_id: str, last_ts: float | None, throttle: Throttle) -> None:
        self.driver_id = driver_id
        self.last_ts = last_ts
        self.throttle = throttle
        self.status: int = DS.DRIVER_STATUS_AVAILABLE
        self.next_stop: tuple[float, float] | None = None
        self.last: Fix | None = None
        self.anchor: Fix | None = None
        self.anchor_ts = 0.0

    def moved(self, f: Fix) -> None:
        self.last = f
        if (
            self.anchor is None
            or haversine_m(self.anchor.lat, self.anchor.lon, f.lat, f.lon) > _STILL_RADIUS_M
        ):
            self.anchor, self.anchor_ts = f, f.device_ts

    def activity(self) -> DriverActivity:
        f = self.last
        dist = None
        if f is not None and self.next_stop is not None:
            dist = haversine_m(f.lat, f.lon, *self.next_stop)
        return DriverActivity(
            activity=_ACTIVITY.get(DS.ValueType(self.status), Activity.AVAILABLE),
            distance_to_stop_m=dist,
            speed_mps=f.speed_mps if f is not None else 0.0,
            stationary_s=(f.device_ts - self.anchor_ts) if f is not None else 0.0,
        )


class LocationServicer(location_pb2_grpc.LocationServiceServicer):
    """The gRPC face of the Location service."""

    def __init__(
        self,
        *,
        store: LiveStore,
        ingest: Ingest,
        history: HistoryWriter,
        presence: Presence,
        tracker: Tracker,
        config: LocationConfig,
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.history = history
        self.presence = presence
        self.tracker = tracker
        self.config = config
        self._unary_throttles: LRUCache[str, Throttle] = LRUCache(100_000)

    def _throttle(self) -> Throttle:
        return Throttle(rate=self.config.max_fixes_per_s, burst=self.config.burst)

    async def _last_ts(self, driver_id: str) -> float | None:
        try:
            return await self.store.last_device_ts(driver_id)
        except Exception:  # Redis away: the stream starts degraded, the store still dedupes
            return None

    # --------------------------------------------------------------- ingest
    async def StreamLocations(  # noqa: N802 — generated name
        self,
        request_iterator: AsyncIterator[location_pb2.StreamLocationsRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[location_pb2.StreamLocationsResponse]:
        driver_id = require().subject
        st = _StreamState(driver_id, await self._last_ts(driver_id), self._throttle())
        async for request in request_iterator:
            yield await self._handle(st, request)

    async def _handle(
        self, st: _StreamState, request: location_pb2.StreamLocationsRequest
    ) -> location_pb2.StreamLocationsResponse:
        now = time.time()
        mono = time.monotonic()
        ack = location_pb2.StreamLocationsResponse()
        acked_seq = 0
        seqs: list[int] = []
        valid: list[Fix] = []
        allow, driver_id = st.throttle.allow, st.driver_id
        if len(request.fixes) > MAX_FIXES_PER_MESSAGE:  # refused whole, never fix by fix
            raise InvalidArgument.field("fixes", f"at most {MAX_FIXES_PER_MESSAGE} items")
        for m in request.fixes:
            seq = m.seq
            acked_seq = max(acked_seq, seq)
            if not allow(mono):
                why: Rejection | None = Rejection.THROTTLED
            else:
                fix = _fix_from(driver_id, m, now)
                why = check_fix(fix, last_device_ts=st.last_ts)
            if why is not None:
                self._reject(ack, seq, why)
                continue
            st.last_ts = fix.device_ts
            seqs.append(seq)
            valid.append(fix)
        ack.acked_seq = acked_seq
        degraded = self.ingest.degraded
        accepted = 0
        if valid:
            outcome = await self.ingest.submit(valid)
            degraded = outcome.degraded
            newest: tuple[Fix, Accepted] | None = None
            for seq, fix, acc in zip(seqs, valid, outcome.accepted, strict=True):
                if acc is None:
                    self._reject(ack, seq, Rejection.OUT_OF_ORDER)
                else:
                    accepted += 1
                    newest = (fix, acc)
            if newest is not None:
                fix, acc = newest
                if not degraded:
                    st.status, st.next_stop = acc.status, acc.next_stop
                st.moved(fix)  # only the newest position matters for the interval
        if accepted:
            ack.accepted = accepted
            metrics.FIXES_ACCEPTED.inc(accepted)
        ack.degraded = degraded
        interval_ns = int(next_interval_s(st.activity(), self.config.policy) * 1e9)
        ack.next_interval.seconds, ack.next_interval.nanos = divmod(interval_ns, 1_000_000_000)
        return ack

    @staticmethod
    def _reject(ack: location_pb2.StreamLocationsResponse, seq: int, why: Rejection) -> None:
        metrics.FIXES.labels(why.name.lower()).inc()
        ack.rejections.add(seq=seq, reason=_REASON[why], message=why.value)

    async def UpdateLocation(  # noqa: N802
        self,
        request: location_pb2.UpdateLocationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> location_pb2.UpdateLocationResponse:
        me = require()
        if request.driver_id and request.driver_id != me.subject:
            raise PermissionDenied("driver_id must be the caller's own", reason="NOT_YOUR_DRIVER")
        fix = _fix_from(me.subject, request, time.time())
        why = check_fix(fix, last_device_ts=None)
        if why is not None:
            field = {
                Rejection.BAD_COORDINATES: "lat" if not valid_lat_lon(fix.lat, 0.0) else "lon",
                Rejection.BAD_ACCURACY: "accuracy",
                Rejection.BAD_HEADING: "heading",
                Rejection.BAD_SPEED: "speed",
            }.get(why, "timestamp")
            raise InvalidArgument.field(field, why.value)
        throttle = self._unary_throttle(me.subject)
        if not throttle.allow(time.monotonic()):
            raise ResourceExhausted(Rejection.THROTTLED.value, reason="THROTTLED")
        # A retry of a fix already taken (same timestamp) or a stale one is a no-op: the
        # store drops it, and the call still succeeds, so the method is safe to retry.
        await self.ingest.submit([fix])
        return location_pb2.UpdateLocationResponse()

    def _unary_throttle(self, driver_id: str) -> Throttle:
        throttle = self._unary_throttles.get(driver_id)
        if throttle is None:
            throttle = self._unary_throttles[driver_id] = self._throttle()
        return throttle

    # ----------------------------------------------------------------- reads
    async def GetDriverLocation(  # noqa: N802
        self,
        request: location_pb2.GetDriverLocationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> location_pb2.GetDriverLocationResponse:
        if not request.driver_id:
            raise InvalidArgument.field("driver_id", "required")
        state = await self.store.get(request.driver_id)
        if state is None or not state.online:
            raise NotFound(f"driver {request.driver_id} is unknown or offline")
        return location_pb2.GetDriverLocationResponse(position=state.position())

    async def FindNearbyDrivers(  # noqa: N802
        self,
        request: location_pb2.FindNearbyDriversRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> location_pb2.FindNearbyDriversResponse:
        v = Violations()
        c = request.center
        v.check(request.HasField("center"), "center", "required")
        v.check(
            valid_lat_lon(c.lat, c.lon), "center", "lat must be in [-90, 90], lon in [-180, 180]"
        )
        miles, meters = request.radius_miles, request.radius_meters
        if v.check(
            (miles > 0) != (meters > 0),
            "radius_miles",
            "give exactly one of radius_miles or radius_meters, > 0",
        ):
            radius_m = meters if meters > 0 else miles * METERS_PER_MILE
            v.check(
                math.isfinite(radius_m) and radius_m <= MAX_RADIUS_M,
                "radius_meters" if meters > 0 else "radius_miles",
                f"at most {MAX_RADIUS_M / 1000:g} km",
            )
        statuses = list(request.statuses) or [DS.DRIVER_STATUS_AVAILABLE]
        for i, s in enumerate(statuses):
            v.check(
                s in INDEXED_STATUSES,
                f"statuses[{i}]",
                "must be available, offered, on_delivery or paused",
            )
        limit = request.limit or 50
        v.check(1 <= limit <= 1000, "limit", "must be 1..1000")
        max_age = request.max_age.ToNanoseconds() / 1e9 if request.HasField("max_age") else 0.0
        v.check(
            0 <= max_age <= self.config.presence_timeout_s,
            "max_age",
            f"at most {self.config.presence_timeout_s:g} s",
        )
        v.raise_if_any()
        found = await self.store.find_nearby(
            c.lat,
            c.lon,
            radius_m,
            statuses=statuses,
            limit=limit,
            max_age_s=max_age or self.config.presence_timeout_s,
        )
        return location_pb2.FindNearbyDriversResponse(
            drivers=[
                location_pb2.NearbyDriver(
                    position=n.state.position(),
                    distance_meters=n.distance_m,
                    age=_duration(n.age_s),
                )
                for n in found
            ]
        )

    async def SetDriverStatus(  # noqa: N802
        self,
        request: location_pb2.SetDriverStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> location_pb2.SetDriverStatusResponse:
        v = Violations()
        v.check(bool(request.driver_id), "driver_id", "required")
        v.check(request.status != DS.DRIVER_STATUS_UNSPECIFIED, "status", "required")
        stop = None
        if request.HasField("next_stop"):
            ns = request.next_stop
            if v.check(
                valid_lat_lon(ns.lat, ns.lon), "next_stop", "lat in [-90, 90], lon in [-180, 180]"
            ):
                stop = (ns.lat, ns.lon)
        v.raise_if_any()
        await self.store.set_status(
            request.driver_id, request.status, order_id=request.order_id, next_stop=stop
        )
        return location_pb2.SetDriverStatusResponse()

    async def GetLocationHistory(  # noqa: N802
        self,
        request: location_pb2.GetLocationHistoryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> location_pb2.GetLocationHistoryResponse:
        v = Violations()
        v.check(bool(request.driver_id), "driver_id", "required")
        v.check(request.HasField("start_time"), "start_time", "required")
        v.check(request.HasField("end_time"), "end_time", "required")
        start, end = request.start_time.ToDatetime(dt.UTC), request.end_time.ToDatetime(dt.UTC)
        v.check(end > start, "end_time", "must be after start_time")
        max_points = request.max_points or 500
        v.check(2 <= max_points <= 10_000, "max_points", "must be 2..10000")
        v.raise_if_any()
        try:
            async with self.history.pool.connection() as conn:
                cur = await conn.execute(
                    downsample_query(),
                    {
                        "driver_id": request.driver_id,
                        "start": start,
                        "end": end,
                        "max_points": max_points,
                    },
                )
                rows = await cur.fetchall()
        except OSError as exc:
            raise Unavailable(f"location history is not reachable: {exc}") from None
        out = location_pb2.GetLocationHistoryResponse(total_points=rows[0][7] if rows else 0)
        for lat, lon, heading, speed, acc, ts, order_id, _ in rows:
            p = out.points.add(
                lat=lat,
                lon=lon,
                heading=heading,
                speed=speed / MPH_TO_MPS,
                accuracy=acc,
                order_id=order_id,
            )
            p.timestamp.FromDatetime(ts)
        return out

    # ------------------------------------------------------------- tracking
    async def TrackOrder(  # noqa: N802
        self,
        request: location_pb2.TrackOrderRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[location_pb2.TrackOrderResponse]:
        v = Violations()
        check_id(v, request.order_id, "order_id")
        v.raise_if_any()
        async for update in self.tracker.track(request.order_id, require()):
            yield update
