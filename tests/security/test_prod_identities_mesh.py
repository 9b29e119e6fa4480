"""Real services run under their prod identities, on a valkey-server and a nats-server
started from the files the prod overlay ships: Catalog as Redis user ``catalog``, Order as
NATS user ``order``, Location as both ``location`` users. What each does in its normal work
(the search index's scripts, the order placed event through the outbox, a driver's fixes)
stays inside what its users may do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from clients import CatalogClient, OrderClient
from foodmesh.v1 import catalog_pb2
from servers import order
from servers.runtime.config import Settings
from servers.runtime.nats import open_nats
from servers.runtime.serve import run_service
from tests.integration._location import DriverApp, fix, location_service, wait_for
from tests.integration._order import HOME, place_request, seeded_catalog, token
from tests.security._prod import nats_with_prod_users, valkey_with_prod_acl

pytestmark = pytest.mark.integration


async def test_catalog_and_order_work_under_their_own_redis_and_nats_users(
    pg_url: str, tmp_path: Path
) -> None:
    async with (
        valkey_with_prod_acl(tmp_path / "redis") as valkey,
        nats_with_prod_users(tmp_path / "nats") as nats,
        # Prod runs without a namespace: keys and subjects are the ones the ACLs name.
        seeded_catalog(
            pg_url=pg_url, redis_url=valkey.url("catalog", cluster=True), nats_url="",
            namespace="", seed=True,
        ) as cat,
    ):  # fmt: skip
        async with CatalogClient(cat.target, options=token("customer", "cust_1")) as catalog:
            found = await catalog.search_restaurants(
                catalog_pb2.SearchRestaurantsRequest(lat=HOME.lat, lon=HOME.lon, radius=3)
            )
        assert [r.restaurant_id for r in found.restaurants] == ["rest_1"]
        settings = Settings(
            service="order", postgres_url=pg_url, nats_url=nats.url("order"), namespace="",
            metrics_enabled=False, health_check_interval_s=0.05, shutdown_grace_s=0.5,
            extra={"FOODMESH_ORDER_CATALOG_TARGET": cat.target},
        )  # fmt: skip
        async with run_service(order.SPEC, settings) as svc:
            async with OrderClient(svc.target, options=token("customer", "cust_1")) as orders:
                placed = await orders.place_order(place_request("k-prod"))
            # Dispatch's user reads the event the order service's user published.
            nc = await open_nats(nats.url("dispatch"), name="dispatch")
            try:
                sub = await nc.jetstream().pull_subscribe(
                    "orders.v1.>",
                    durable="dispatch-orders",
                    stream="ORDERS",
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL
                    ),
                )
                (msg,) = await sub.fetch(1, timeout=10)
                await msg.ack()
            finally:
                await nc.close()
        assert msg.subject == "orders.v1.placed"
        assert placed.order.order_id.encode() in msg.data


async def test_location_ingests_fixes_under_its_own_redis_and_nats_users(
    pg_url: str, tmp_path: Path
) -> None:
    async with (
        valkey_with_prod_acl(tmp_path / "redis") as valkey,
        nats_with_prod_users(tmp_path / "nats") as nats,
        location_service(
            pg_url=pg_url, redis_url=valkey.url("location", cluster=True),
            nats_url=nats.url("location"), namespace="", state_dir=tmp_path / "state",
        ) as svc,
    ):  # fmt: skip
        dashboard = await open_nats(nats.url("dashboard"), name="dashboard")
        try:
            seen: list[str] = []

            async def on_fix(msg: Msg) -> None:
                seen.append(msg.subject)

            await dashboard.subscribe("location.v1.driver.*", cb=on_fix)
            await dashboard.flush()
            async with DriverApp(svc.target, "drv_1") as app:
                ack = await app.send(fix(HOME.lat, HOME.lon, seq=1))
                assert ack.accepted == 1, ack

                async def published() -> bool:
                    return seen == ["location.v1.driver.drv_1"]

                await wait_for(published, within=10)
        finally:
            await dashboard.close()
        admin = aioredis.Redis.from_url(valkey.url("admin"))
        try:
            # The fix landed under the keys the location user owns, and only there.
            keys = sorted(k.decode() for k in await admin.keys("*"))
        finally:
            await admin.aclose()
        assert "driver:drv_1" in keys
        assert all(k.startswith(("driver:", "drivers:", "presence:")) for k in keys), keys
