"""Real services run under their prod identities, on a valkey-server and a nats-server
started from the files the prod overlay ships: Catalog as Redis user ``catalog``, Order and
Dispatch as their NATS users, Pricing and Location as both their users. What each does in
its normal work (the search index's scripts, quotes and surge demand, the order placed
event through the outbox, Dispatch's stream and consumer, a driver's fixes) stays inside
what its users may do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from clients import CatalogClient, OrderClient
from foodmesh.core.nats import open_nats
from foodmesh.v1 import catalog_pb2
from servers import dispatch, order, pricing
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import run_service
from tests.integration._dispatch import dispatch_settings
from tests.integration._location import DriverApp, fix, location_service, wait_for
from tests.integration._order import HOME, place_request, seeded_catalog, token
from tests.integration._pricing import PRICING_EXTRA
from tests.security._prod import nats_with_prod_users, valkey_with_prod_acl

pytestmark = pytest.mark.integration


async def test_catalog_pricing_order_and_dispatch_work_under_their_own_users(
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
        assert pricing.SPEC.migrations is not None
        await migrate(pg_url, service="pricing",
                      migrations=load_migrations(pricing.SPEC.migrations))  # fmt: skip
        common = {"postgres_url": pg_url, "namespace": "", "metrics_enabled": False,
                  "health_check_interval_s": 0.05, "shutdown_grace_s": 0.5}  # fmt: skip
        pricing_settings = Settings(
            service="pricing", redis_url=valkey.url("pricing", cluster=True),
            nats_url=nats.url("pricing"),
            extra={"FOODMESH_PRICING_CATALOG_TARGET": cat.target,
                   "FOODMESH_PRICING_LOCATION_TARGET": "127.0.0.1:1", **PRICING_EXTRA},
            **common,  # type: ignore[arg-type]
        )  # fmt: skip
        order_settings = Settings(
            service="order", nats_url=nats.url("order"),
            **common,  # type: ignore[arg-type]
        )  # fmt: skip
        async with (
            run_service(pricing.SPEC, pricing_settings) as pr,
            run_service(order.SPEC, dataclasses.replace(order_settings, extra={
                "FOODMESH_ORDER_CATALOG_TARGET": cat.target,
                "FOODMESH_ORDER_PRICING_TARGET": pr.target})) as svc,
        ):  # fmt: skip
            async with OrderClient(svc.target, options=token("customer", "cust_1")) as orders:
                placed = await orders.place_order(place_request("k-prod"))
            # Pricing quoted the order (a quote in Redis) and counts it in its cell's
            # demand when the placed event comes (a script over surge keys).
            admin = aioredis.Redis.from_url(valkey.url("admin"))
            try:

                async def counted() -> bool:
                    keys = [k.decode() for k in await admin.keys("*")]
                    return any(k.startswith("surge_demand:") for k in keys)

                await wait_for(counted, within=15)
                keys = sorted(k.decode() for k in await admin.keys("*"))
            finally:
                await admin.aclose()
            owners = ("catalog:", "quote:", "surge")
            assert all(k.startswith(owners) for k in keys), keys
            # Dispatch's user reads the event the order service's user published.
            nc = await open_nats(nats.url("dispatch"), name="dispatch")
            try:

                async def stream_made() -> bool:  # by the order service, as it starts
                    try:
                        await nc.jetstream().stream_info("ORDERS")
                    except Exception:
                        return False
                    return True

                await wait_for(stream_made, within=10)
                sub = await nc.jetstream().pull_subscribe(
                    "orders.v1.>",
                    durable="security-check",
                    stream="ORDERS",
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL
                    ),
                )
                (msg,) = await sub.fetch(1, timeout=10)
                await msg.ack()
                assert msg.subject == "orders.v1.placed"
                assert placed.order.order_id.encode() in msg.data
                # And the Dispatch service itself, as that user: its stream and its
                # durable consumer of the order events.
                assert dispatch.SPEC.migrations is not None
                await migrate(pg_url, service="dispatch",
                              migrations=load_migrations(dispatch.SPEC.migrations))  # fmt: skip
                dispatch_config = dispatch_settings(
                    pg_url=pg_url, nats_url=nats.url("dispatch"), namespace="",
                    location="127.0.0.1:1", order=svc.target,
                )  # fmt: skip
                async with run_service(dispatch.SPEC, dispatch_config):
                    js = nc.jetstream()

                    async def working() -> bool:
                        # (Its leases bucket is made at its first claim, when a region
                        # has work: test_prod_nats_permissions makes it as this user.)
                        try:
                            await js.stream_info("DISPATCH")
                            info = await js.consumer_info("ORDERS", "dispatch-orders")
                        except Exception:
                            return False
                        return info.delivered.stream_seq >= 1

                    await wait_for(working, within=15)
            finally:
                await nc.close()


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
