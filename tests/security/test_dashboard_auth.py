"""Issue 17 item 1: the ops dashboard needs an ops identity and acts with the viewer's token."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import yaml
import yarl

from dashboard import DashboardConfig, serve
from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.sim.city import build_city
from foodmesh.sim.seed import seed_city
from foodmesh.v1 import order_pb2 as pb
from tests.conftest import REPO
from tests.integration._order import order_mesh

OPS = mint_token(DEV_SECRET, subject="ops_1", role="ops")
_GUARDED = ["/", "/api/map", "/api/snapshot", "/api/stream", "/api/orders/ord_x",
            "/api/drivers/drv_x/path"]  # fmt: skip


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_route_but_login_and_static_needs_an_ops_token() -> None:
    config = DashboardConfig(port=0, roads="none", targets={})
    async with serve(config) as (_, port), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"
        others = {
            "customer": mint_token(DEV_SECRET, subject="cus_1", role="customer"),
            "driver": mint_token(DEV_SECRET, subject="drv_1", role="driver"),
        }
        service = mint_token(DEV_SECRET, subject="order", role="service")
        for path in _GUARDED:
            async with http.get(base + path) as r:
                assert r.status == 401, path
            async with http.get(base + path, headers=_bearer("not.a.token")) as r:
                assert r.status == 401, path
            async with http.get(base + path, headers=_bearer(service)) as r:
                assert r.status == 401, path  # service tokens are not taken here at all
            for role, token in others.items():
                async with http.get(base + path, headers=_bearer(token)) as r:
                    assert r.status == 403, (path, role)
        async with http.get(base + "/api/snapshot", headers=_bearer(OPS)) as r:
            assert r.status == 200
        for path in ("/login", "/static/dashboard.js", "/static/login.js"):
            async with http.get(base + path) as r:
                assert r.status == 200, path


async def test_login_and_a_token_link_set_the_cookie_the_page_uses() -> None:
    config = DashboardConfig(port=0, roads="none", targets={})
    async with serve(config) as (_, port):
        base = f"http://127.0.0.1:{port}"
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1 too
        async with aiohttp.ClientSession(cookie_jar=jar) as http:  # the login page's POST
            async with http.post(base + "/login", json={"token": "nope"}) as r:
                assert r.status == 401
            customer = mint_token(DEV_SECRET, subject="cus_1", role="customer")
            async with http.post(base + "/login", json={"token": customer}) as r:
                assert r.status == 403
            async with http.post(base + "/login", json={"token": OPS}) as r:
                assert r.status == 200
                assert "httponly" in r.headers["Set-Cookie"].lower()
            async with http.get(base + "/api/snapshot") as r:
                assert r.status == 200
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:  # a ?token= link
            async with http.get(f"{base}/?token={OPS}", allow_redirects=False) as r:
                assert r.status == 303 and "token" not in r.headers["Location"]
                assert "foodmesh_ops" in r.headers["Set-Cookie"]
            async with http.get(base + "/") as r:
                assert r.status == 200 and '<canvas id="map"' in await r.text()


async def test_a_token_link_redirects_only_within_the_dashboard() -> None:
    """``//evil.example/?token=…`` must not answer ``Location: //evil.example/`` (a
    protocol-relative address: another site, with the viewer just logged in)."""
    config = DashboardConfig(port=0, roads="none", targets={})
    async with serve(config) as (_, port), aiohttp.ClientSession() as http:
        for path in ("//evil.example/", "///evil.example/x", "/\\evil.example/"):
            url = yarl.URL(f"http://127.0.0.1:{port}").with_path(path, encoded=True)
            async with http.get(url.with_query(token=OPS), allow_redirects=False) as r:
                assert r.status == 303, path
                where = r.headers["Location"]
                assert where.startswith("/") and not where.startswith(("//", "/\\")), where
                assert "evil" not in yarl.URL(where).host if yarl.URL(where).host else True


async def test_the_dashboard_forwards_the_viewer_and_shows_no_pii(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    city = build_city(seed=7, restaurants=3, drivers=0, customers=1)
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace, seed=False) as mesh:  # fmt: skip
        await seed_city(city, catalog_target=mesh.catalog.target)
        config = DashboardConfig(
            port=0, nats_url=nats_url, namespace=namespace, roads="none", tick_s=0.2,
            targets={"catalog": mesh.catalog.target, "order": mesh.order.target},
        )  # fmt: skip
        customer = city.customers[0]
        spec = city.restaurants[0]
        item = next(i for c in spec.menu for i in c.items if i.available)
        async with serve(config) as (_, port), aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with mesh.client("customer", customer.customer_id) as orders:
                placed = await orders.place_order(pb.PlaceOrderRequest(
                    idempotency_key="sec-dash-1", restaurant_id=spec.restaurant_id,
                    items=[pb.OrderItemInput(item_id=item.item_id, quantity=2)],
                    delivery_address=customer.address, payment_method_id="pm_card_visa",
                ))  # fmt: skip
            oid = placed.order.order_id
            deadline = time.monotonic() + 20
            while True:
                async with http.get(base + "/api/snapshot", headers=_bearer(OPS)) as r:
                    snap = await r.text()
                if oid in snap or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert oid in snap
            async with http.get(f"{base}/api/orders/{oid}", headers=_bearer(OPS)) as r:
                assert r.status == 200
                detail = await r.text()
            assert json.loads(detail)["order_id"] == oid
            secrets = [customer.customer_id, customer.address.street, item.item_id,
                       "pm_card_visa", "payment"]  # fmt: skip
            if customer.address.unit:
                secrets.append(customer.address.unit)
            for text in (snap, detail):
                for secret in secrets:
                    assert secret not in text, secret
            # The dashboard holds no credential: the Order service sees the viewer, so a
            # viewer the Order service refuses is refused (an ops token the gateway's
            # verifier takes but that expired meanwhile is refused by both).
            expired = mint_token(DEV_SECRET, subject="ops_1", role="ops", now=time.time() - 7200)
            async with http.get(f"{base}/api/orders/{oid}", headers=_bearer(expired)) as r:
                assert r.status == 401


def test_k8s_admits_the_dashboard_only_from_the_ingress_controller() -> None:
    policy = yaml.safe_load((REPO / "k8s/base/dashboard/networkpolicy.yaml").read_text())
    rules = policy["spec"]["ingress"]
    assert rules, "no way in at all"
    for rule in rules:  # a rule without "from" admits any source
        assert rule.get("from"), rule
        assert all("namespaceSelector" in peer or "podSelector" in peer for peer in rule["from"])
