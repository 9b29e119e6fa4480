"""Running the real Dispatch service beside real Location, Order and Catalog, and driving it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from clients import ClientOptions, DispatchClient, OrderClient
from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from servers import dispatch
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import RunningService, run_service
from tests.integration._location import DriverApp, fix, location_service
from tests.integration._order import Mesh, order_mesh, place_request, token

REST = (37.7755, -122.4183)


@dataclass(slots=True)
class DispatchMesh:
    orders: Mesh
    location: RunningService
    dispatch: RunningService
    settings: Settings

    def client(self, role: str = "ops", subject: str = "ops") -> DispatchClient:
        return DispatchClient(self.dispatch.target, options=token(role, subject))

    def order_client(self, role: str, subject: str) -> OrderClient:
        return self.orders.client(role, subject)


def dispatch_settings(
    *,
    pg_url: str,
    nats_url: str,
    namespace: str,
    location: str,
    order: str,
    extra: Mapping[str, str] | None = None,
) -> Settings:
    return Settings(
        service="dispatch",
        postgres_url=pg_url,
        nats_url=nats_url,
        namespace=namespace,
        metrics_enabled=False,
        health_check_interval_s=0.05,
        shutdown_grace_s=0.5,
        extra={
            "FOODMESH_DISPATCH_LOCATION_TARGET": location,
            "FOODMESH_DISPATCH_ORDER_TARGET": order,
            "FOODMESH_DISPATCH_BATCH_INTERVAL_S": "0.2",
            "FOODMESH_DISPATCH_LEASE_S": "1.5",
            **(extra or {}),
        },
    )


@asynccontextmanager
async def dispatch_mesh(
    *,
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    state_dir: Path,
    extra: Mapping[str, str] | None = None,
    location_redis_url: str | None = None,
    location_extra: Mapping[str, str] | None = None,
    order_extra: Mapping[str, str] | None = None,
) -> AsyncIterator[DispatchMesh]:
    """Catalog, Order, Location and Dispatch; ``extra`` is Dispatch's settings.

    Location keeps its index in ``location_redis_url`` when given (a Redis of the
    test's own, to kill), else in ``redis_url``; ``location_extra`` adds to its settings,
    ``order_extra`` to Order's.
    """
    assert dispatch.SPEC.migrations is not None
    await migrate(pg_url, service="dispatch", migrations=load_migrations(dispatch.SPEC.migrations))
    async with (
        order_mesh(
            pg_url=pg_url,
            redis_url=redis_url,
            nats_url=nats_url,
            namespace=namespace,
            extra=order_extra,
        ) as mesh,
        location_service(
            pg_url=pg_url,
            redis_url=location_redis_url or redis_url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=state_dir,
            extra=location_extra,
        ) as loc,
    ):
        settings = dispatch_settings(
            pg_url=pg_url,
            nats_url=nats_url,
            namespace=namespace,
            location=loc.target,
            order=mesh.order.target,
            extra=extra,
        )
        async with run_service(dispatch.SPEC, settings) as svc:
            yield DispatchMesh(mesh, loc, svc, settings)


class Driver:
    """A simulated driver: a Location stream with a position and a Dispatch session."""

    def __init__(self, mesh: DispatchMesh, driver_id: str, *, target: str | None = None) -> None:
        self.mesh = mesh
        self.driver_id = driver_id
        self.target = target or mesh.dispatch.target
        self.client = DispatchClient(self.target, options=token("driver", driver_id))
        self.gps = DriverApp(mesh.location.target, driver_id)
        self._out: asyncio.Queue[dpb.DriverSessionRequest | None] = asyncio.Queue()
        self._in: AsyncIterator[dpb.DriverSessionResponse] | None = None
        self.seq = 0

    async def __aenter__(self) -> Driver:
        await self.gps.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_session()
        await self.gps.__aexit__(*exc)
        await self.client.close()

    async def at(self, lat: float, lon: float) -> None:
        ack = await self.gps.send(fix(lat, lon, seq=self.seq + 1))
        self.seq += 1
        assert ack.accepted == 1, ack

    async def open_session(self) -> dpb.DriverSessionResponse:
        self._out = asyncio.Queue()

        async def requests() -> AsyncIterator[dpb.DriverSessionRequest]:
            while (req := await self._out.get()) is not None:
                yield req

        self._in = self.client.driver_session(requests())
        first = await self.recv()
        assert first.WhichOneof("event") == "state", first
        return first

    async def close_session(self) -> None:
        if self._in is not None:
            await self._out.put(None)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    async for _ in self._in:
                        pass
            self._in = None

    def swap(self, other: Driver) -> None:
        """Carries on with ``other``'s session (a replacement), leaving ``other`` without one."""
        self._in, self._out = other._in, other._out
        self.client, other.client = other.client, self.client
        other._in = None

    async def recv(self, within: float = 5.0) -> dpb.DriverSessionResponse:
        assert self._in is not None
        async with asyncio.timeout(within):
            return await anext(self._in)

    async def expect(self, event: str, within: float = 5.0) -> dpb.DriverSessionResponse:
        """The next message carrying ``event``, skipping state refreshes."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.recv(within)
                if msg.WhichOneof("event") == event:
                    return msg
                assert msg.WhichOneof("event") in ("state", "route_update"), msg

    async def act(self, seq: int, **action: object) -> None:
        req = dpb.DriverSessionRequest(seq=seq, **action)  # type: ignore[arg-type]
        await self._out.put(req)

    async def send_raw(self, req: dpb.DriverSessionRequest) -> None:
        await self._out.put(req)


async def confirmed_order(mesh: DispatchMesh, key: str) -> str:
    """Places an order as a customer and confirms it as the restaurant; returns its id."""
    async with (
        mesh.order_client("customer", "cust_1") as c,
        mesh.order_client("restaurant", "rest_1") as r,
    ):
        placed = await c.place_order(place_request(key))
        oid = placed.order.order_id
        await r.update_order_status(
            opb.UpdateOrderStatusRequest(order_id=oid, status=common_pb2.ORDER_STATUS_CONFIRMED)
        )
    return oid


async def pin_of(mesh: DispatchMesh, order_id: str, customer: str = "cust_1") -> str:
    """The order's delivery PIN, as its customer sees it (and tells the driver)."""
    async with mesh.order_client("customer", customer) as c:
        got = await c.get_order(opb.GetOrderRequest(order_id=order_id))
    return got.order.delivery_pin


async def upsert(mesh: DispatchMesh, driver_id: str, **fields: object) -> None:
    async with mesh.client() as ops:
        await ops.upsert_driver(
            dpb.UpsertDriverRequest(
                driver=dpb.Driver(
                    **{  # type: ignore[arg-type]
                        "driver_id": driver_id,
                        "name": f"Driver {driver_id}",
                        "vehicle": "Toyota Prius",
                        "vehicle_type": common_pb2.VEHICLE_TYPE_CAR,
                        **fields,
                    }
                )
            )
        )


async def held_for(pg_url: str, oid: str) -> tuple[str, int, float, float]:
    """The held order's status, offers, seconds to its food, and its release before the food."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for _ in range(100):  # matched and held within a few rounds
            cur = await conn.execute(
                "SELECT status, offers_made, extract(epoch FROM ready_at - now()),"
                " extract(epoch FROM ready_at - held_until) FROM fleet.assignments"
                " WHERE order_id = %s AND held_until IS NOT NULL",
                (oid,),
            )
            if (row := await cur.fetchone()) is not None:
                return str(row[0]), int(row[1]), float(row[2]), float(row[3])
            await asyncio.sleep(0.1)
    raise AssertionError(f"{oid} was never held")


__all__ = [
    "REST",
    "ClientOptions",
    "DispatchMesh",
    "Driver",
    "confirmed_order",
    "dispatch_mesh",
    "dispatch_settings",
    "held_for",
    "pin_of",
    "upsert",
]
