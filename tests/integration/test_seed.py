"""`foodmesh seed`: the city goes in through the services' RPCs, twice changes nothing,
and the design's example requests work as written (search at its point, an order to it)."""

from __future__ import annotations

import psycopg

from clients import CatalogClient
from foodmesh.sim.city import CENTER, build_city
from foodmesh.sim.seed import seed_city
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.integration._order import order_mesh, token


async def _count(pg_url: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM catalog.restaurants),"
            " (SELECT count(*) FROM catalog.menu_items)"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_seeding_writes_the_city_once_and_the_seed_examples_work(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    city = build_city(seed=7, restaurants=40, drivers=0, customers=5)
    async with order_mesh(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace, seed=False
    ) as mesh:
        first = await seed_city(city, catalog_target=mesh.catalog.target)
        assert (first.restaurants, first.menus, first.drivers) == (40, 40, 0)
        counts = await _count(pg_url)
        items = sum(len(c.items) for r in city.restaurants for c in r.menu)
        assert counts == (40, items)
        await seed_city(city, catalog_target=mesh.catalog.target)  # again: the same city
        assert await _count(pg_url) == counts

        async with CatalogClient(mesh.catalog.target, options=token("customer", "c")) as cat:
            found = await cat.search_restaurants(
                cpb.SearchRestaurantsRequest(lat=CENTER[0], lon=CENTER[1], radius=5)
            )
            assert len(found.restaurants) >= 5
            assert all(r.distance_miles <= 5 for r in found.restaurants)
            spec = city.restaurants[0]  # within half a mile, open around the clock
            menu = await cat.get_menu(cpb.GetMenuRequest(restaurant_id=spec.restaurant_id))
            assert [c.name for c in menu.menu.categories] == [c.name for c in spec.menu]

        customer = city.customers[0]
        item = next(i for c in spec.menu for i in c.items if i.available)
        async with mesh.client("customer", customer.customer_id) as orders:
            placed = await orders.place_order(
                pb.PlaceOrderRequest(
                    idempotency_key="seed-example",
                    restaurant_id=spec.restaurant_id,
                    items=[pb.OrderItemInput(item_id=item.item_id, quantity=2)],
                    delivery_address=common_pb2.Address(
                        street=customer.address.street, lat=CENTER[0], lon=CENTER[1],
                        city="San Francisco", state="CA", zip="94103", country="US",
                    ),
                    payment_method_id="pm_card_visa",
                )
            )  # fmt: skip
        assert placed.order.status == common_pb2.ORDER_STATUS_PLACED
        assert placed.order.pricing.subtotal.amount_minor == 2 * item.price.amount_minor
