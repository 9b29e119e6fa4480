"""Running the real Pricing service beside the real Catalog, Location and Order services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

from clients import CatalogClient, OrderClient, PricingClient
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import common_pb2
from foodmesh.v1 import pricing_pb2 as ppb
from servers import catalog, location, order, pricing
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import RunningService, run_service
from tests.integration._order import MENU, restaurant, token

#: The restaurant's pickup cell (geohash-5) and an address in San Francisco.
REST_CELL = "9q8yy"
SF = common_pb2.Address(street="456 Mission St", city="San Francisco", state="CA", zip="94105",
                        country="US", lat=37.7749, lon=-122.4194)  # fmt: skip

PRICING_EXTRA = {
    "FOODMESH_PRICING_SURGE_TTL_S": "0.3",
    "FOODMESH_PRICING_DEMAND_WINDOW_S": "4",
    "FOODMESH_PRICING_QUOTE_TTL_S": "4",
    "FOODMESH_PRICING_PROMO_HOLD_S": "120",
    "FOODMESH_PRICING_SWEEP_EVERY_S": "0.2",
}


@dataclass(slots=True)
class PricingMesh:
    pricing: RunningService
    catalog: RunningService | None
    location: RunningService | None
    order: RunningService | None

    def client(self, role: str = "service", subject: str = "tests") -> PricingClient:
        return PricingClient(self.pricing.target, options=token(role, subject))

    def orders(self, subject: str) -> OrderClient:
        assert self.order is not None
        return OrderClient(self.order.target, options=token("customer", subject))


def _common(pg_url: str, redis_url: str, nats_url: str, namespace: str) -> dict[str, object]:
    return {"postgres_url": pg_url, "redis_url": redis_url, "nats_url": nats_url,
            "namespace": namespace, "metrics_enabled": False, "port": 0,
            "health_check_interval_s": 0.05, "shutdown_grace_s": 0.5}  # fmt: skip


@asynccontextmanager
async def pricing_mesh(
    *,
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    state_dir: Path,
    with_location: bool = True,
    with_order: bool = True,
    extra: Mapping[str, str] | None = None,
    pricing_redis_url: str | None = None,
    order_extra: Mapping[str, str] | None = None,
) -> AsyncIterator[PricingMesh]:
    """Catalog (a restaurant seeded), Location, Pricing and Order on one fresh database.

    ``order_extra`` adds to the Order service's settings (an ETA target, say).
    """
    for spec in (catalog.SPEC, pricing.SPEC, order.SPEC, location.SPEC):
        assert spec.migrations is not None
        await migrate(pg_url, service=spec.name, migrations=load_migrations(spec.migrations))
    common = _common(pg_url, redis_url, nats_url, namespace)
    async with AsyncExitStack() as stack:
        cat = await stack.enter_async_context(
            run_service(catalog.SPEC, Settings(service="catalog", **common))  # type: ignore[arg-type]
        )
        async with CatalogClient(cat.target, options=token("ops", "ops")) as ops:
            await ops.upsert_restaurant(cpb.UpsertRestaurantRequest(restaurant=restaurant()))
            await ops.upsert_menu(cpb.UpsertMenuRequest(restaurant_id="rest_1", categories=MENU))
        loc = None
        if with_location:
            loc = await stack.enter_async_context(run_service(location.SPEC, Settings(
                service="location",
                extra={"FOODMESH_LOCATION_STATE_DIR": str(state_dir),
                       "FOODMESH_LOCATION_HISTORY_FLUSH_S": "0.1"},
                **common)))  # type: ignore[arg-type]  # fmt: skip
        p_common = dict(common)
        wait = True
        if pricing_redis_url is not None:
            p_common["redis_url"] = pricing_redis_url
            wait = False
        p_extra = {"FOODMESH_PRICING_CATALOG_TARGET": cat.target,
                   "FOODMESH_PRICING_LOCATION_TARGET": loc.target if loc else "127.0.0.1:1",
                   **PRICING_EXTRA, **(extra or {})}  # fmt: skip
        pr = await stack.enter_async_context(run_service(
            pricing.SPEC, Settings(service="pricing", extra=p_extra, **p_common),  # type: ignore[arg-type]
            wait_ready=wait))  # fmt: skip
        od = None
        if with_order:
            od = await stack.enter_async_context(run_service(order.SPEC, Settings(
                service="order",
                extra={"FOODMESH_ORDER_CATALOG_TARGET": cat.target,
                       "FOODMESH_ORDER_PRICING_TARGET": pr.target, **(order_extra or {})},
                **common)))  # type: ignore[arg-type]  # fmt: skip
        yield PricingMesh(pr, cat, loc, od)


def promo(code: str, **kw: object) -> ppb.PromoCode:
    p = ppb.PromoCode(code=code, discount_type=ppb.DISCOUNT_TYPE_PERCENT, percent_off=20)
    for k, v in kw.items():
        if isinstance(v, common_pb2.Money):
            getattr(p, k).CopyFrom(v)
        elif isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


def quote_request(customer: str = "c1", **kw: object) -> ppb.QuoteOrderRequest:
    req = ppb.QuoteOrderRequest(
        customer_id=customer, restaurant_id="rest_1",
        items=[ppb.QuoteItem(item_id="margherita", quantity=1, customizations=["large"]),
               ppb.QuoteItem(item_id="salad", quantity=1)],
        delivery_address=SF,
    )  # fmt: skip
    for k, v in kw.items():
        if isinstance(v, list):
            del getattr(req, k)[:]
            getattr(req, k).extend(v)
        elif isinstance(v, Message):
            getattr(req, k).CopyFrom(v)
        else:
            setattr(req, k, v)
    return req


__all__ = ["PRICING_EXTRA", "REST_CELL", "SF", "PricingMesh", "pricing_mesh", "promo",
           "quote_request"]  # fmt: skip
