"""Running the real Order service (with the real Catalog beside it) for a test."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients import CatalogClient, ClientOptions, OrderClient
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from servers import catalog, order
from servers.order.payments import PaymentProvider
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import RunningService, run_service


def token(role: str, subject: str) -> ClientOptions:
    return ClientOptions(metadata=bearer(mint_token(DEV_SECRET, subject=subject, role=role)))


def usd(n: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=n, currency_code="USD")


def square(lat: float, lon: float, half: float) -> list[common_pb2.LatLng]:
    return [common_pb2.LatLng(lat=lat - half, lon=lon - half),
            common_pb2.LatLng(lat=lat - half, lon=lon + half),
            common_pb2.LatLng(lat=lat + half, lon=lon + half),
            common_pb2.LatLng(lat=lat + half, lon=lon - half)]  # fmt: skip


REST = (37.7755, -122.4183)
HOME = common_pb2.Address(street="456 Mission St", city="San Francisco", lat=37.7749,
                          lon=-122.4194)  # fmt: skip
FAR = common_pb2.Address(street="Oakland", lat=37.8044, lon=-122.2712)


def restaurant(rid: str = "rest_1", *, always_open: bool = True) -> cpb.Restaurant:
    return cpb.Restaurant(
        restaurant_id=rid, name="Luigi's Pizza", cuisines=["pizza"],
        address=common_pb2.Address(street="123 Market St", lat=REST[0], lon=REST[1]),
        time_zone="America/Los_Angeles",
        hours=[cpb.OpeningHours(weekday=d, open_minute=0, close_minute=1440) for d in range(1, 8)]
        if always_open else [],
        price_level=2, minimum_order=usd(1000), avg_prep_time_min=18,
        zones=[cpb.DeliveryZone(zone_id="core", polygon=square(*REST, 0.02), delivery_fee=usd(299),
                                minimum_order=usd(1000))],
        max_delivery_distance_miles=4.0,
    )  # fmt: skip


MENU = [
    cpb.MenuCategory(category_id="pizza", name="Pizza", items=[
        cpb.MenuItem(item_id="margherita", name="Margherita", price=usd(1499), available=True,
            customizations=[cpb.CustomizationGroup(group_id="size", name="Size", min_choices=0,
                max_choices=1, options=[
                    cpb.CustomizationOption(option_id="large", name="Large",
                                            price_delta=usd(300), available=True)])]),
        cpb.MenuItem(item_id="salad", name="Caesar Salad", price=usd(899), available=True),
        cpb.MenuItem(item_id="marinara", name="Marinara", price=usd(1199), available=False),
    ]),
]  # fmt: skip


@dataclass(slots=True)
class Mesh:
    catalog: RunningService
    order: RunningService
    pg_url: str

    def client(self, role: str, subject: str) -> OrderClient:
        return OrderClient(self.order.target, options=token(role, subject))


def _common(pg_url: str, redis_url: str, nats_url: str, namespace: str) -> dict[str, object]:
    return {"postgres_url": pg_url, "redis_url": redis_url, "nats_url": nats_url,
            "namespace": namespace, "metrics_enabled": False, "port": 0,
            "health_check_interval_s": 0.05, "shutdown_grace_s": 0.5}  # fmt: skip


@asynccontextmanager
async def seeded_catalog(
    *, pg_url: str, redis_url: str, nats_url: str, namespace: str, seed: bool = True
) -> AsyncIterator[RunningService]:
    """Both services' migrations run, and the Catalog serving (``rest_1`` seeded)."""
    for spec in (catalog.SPEC, order.SPEC):
        assert spec.migrations is not None
        await migrate(pg_url, service=spec.name, migrations=load_migrations(spec.migrations))
    common = _common(pg_url, redis_url, nats_url, namespace)
    async with run_service(catalog.SPEC, Settings(service="catalog", **common)) as cat:  # type: ignore[arg-type]
        if seed:
            await seed_catalog(cat.target)
        yield cat


async def seed_catalog(target: str) -> None:
    """Writes ``rest_1`` and its menu into the Catalog at ``target``."""
    async with CatalogClient(target, options=token("ops", "ops")) as ops:
        await ops.upsert_restaurant(cpb.UpsertRestaurantRequest(restaurant=restaurant()))
        await ops.upsert_menu(cpb.UpsertMenuRequest(restaurant_id="rest_1", categories=MENU))


@asynccontextmanager
async def order_mesh(
    *,
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    extra: Mapping[str, str] | None = None,
    seed: bool = True,
    payments: PaymentProvider | None = None,
) -> AsyncIterator[Mesh]:
    """The Catalog and the Order service on one fresh database, a restaurant seeded."""
    async with seeded_catalog(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                              namespace=namespace, seed=False) as cat:  # fmt: skip
        settings = Settings(
            service="order",
            extra={"FOODMESH_ORDER_CATALOG_TARGET": cat.target, "FOODMESH_ORDER_WATCH_POLL_S": "2",
                   **(extra or {})},
            **_common(pg_url, redis_url, nats_url, namespace),  # type: ignore[arg-type]
        )  # fmt: skip
        spec = order.SPEC
        if payments is not None:
            spec = dataclasses.replace(
                spec, register=functools.partial(order.build, payments=payments)
            )
        async with run_service(spec, settings) as svc:
            if seed:
                await seed_catalog(cat.target)
            yield Mesh(cat, svc, pg_url)


def place_request(key: str = "k1", **overrides: object) -> pb.PlaceOrderRequest:
    req = pb.PlaceOrderRequest(
        idempotency_key=key,
        restaurant_id="rest_1",
        items=[pb.OrderItemInput(item_id="margherita", quantity=1, customizations=["large"]),
               pb.OrderItemInput(item_id="salad", quantity=1)],
        delivery_address=HOME,
        payment_method_id="pm_card_visa",
    )  # fmt: skip
    for k, v in overrides.items():
        if isinstance(v, list):
            del getattr(req, k)[:]
            getattr(req, k).extend(v)
        elif isinstance(v, Message):
            getattr(req, k).CopyFrom(v)
        else:
            setattr(req, k, v)
    return req


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            found.update({v.field: v.description for v in br.field_violations})
    return found


def reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


@contextlib.asynccontextmanager
async def clients(mesh: Mesh, *who: tuple[str, str]) -> AsyncIterator[list[OrderClient]]:
    made = [mesh.client(role, subject) for role, subject in who]
    try:
        yield made
    finally:
        for c in made:
            await c.close()


__all__ = ["FAR", "HOME", "MENU", "Mesh", "clients", "order_mesh", "place_request", "reason",
           "restaurant", "seeded_catalog", "token", "usd", "violations"]  # fmt: skip
