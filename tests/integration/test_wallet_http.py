"""Saved payment methods, digital wallets and ratings, end to end through the real gateway
in front of real Catalog and Order services (PostgreSQL, NATS): what a customer's app does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.integration._gateway import Http, auth, details, gateway, violations
from tests.integration._order import Mesh, order_mesh

pytestmark = pytest.mark.timeout(120)

PLACE: dict[str, Any] = {
    "restaurant_id": "rest_1",
    "items": [{"item_id": "margherita", "quantity": 1, "customizations": ["large"]},
              {"item_id": "salad", "quantity": 1}],
    "delivery_address": {"street": "456 Mission St", "city": "San Francisco",
                         "lat": 37.7749, "lon": -122.4194},
}  # fmt: skip
ROAD = ("confirmed", "preparing", "ready_for_pickup", "picked_up", "in_transit", "delivered")


@dataclass(slots=True)
class App:
    """The gateway as a customer's app (and a kitchen's, and ops') calls it."""

    http: Http
    pg_url: str

    async def call(
        self, method: str, path: str, subject: str, role: str = "customer", **kw: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = {**auth(role, subject), **kw.pop("headers", {})}
        async with self.http.session.request(method, path, headers=headers, **kw) as resp:
            text = await resp.text()
            return resp.status, (await resp.json()) if text else {}

    async def save(self, who: str, token: str, key: str, **more: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", "/api/v1/payment-methods", who,
                               json={"token": token, **more},
                               headers={"Idempotency-Key": key})  # fmt: skip

    async def methods(self, who: str) -> list[dict[str, Any]]:
        code, body = await self.call("GET", "/api/v1/payment-methods", who)
        assert code == 200, body
        return list(body.get("payment_methods", []))

    async def place(self, who: str, key: str, **changes: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", "/api/v1/orders", who, json={**PLACE, **changes},
                               headers={"Idempotency-Key": key})  # fmt: skip

    async def step(self, order_id: str, status: str) -> dict[str, Any]:
        code, body = await self.call("POST", f"/api/v1/orders/{order_id}/status", "ops_1", "ops",
                                     json={"status": f"ORDER_STATUS_{status.upper()}"})  # fmt: skip
        assert code == 200, body
        return dict(body["order"])

    async def ledger(self, order_id: str) -> tuple[str, str, int, int]:
        """The processor's record of the order's payment: (method, status, captured, refunded)."""
        async with await psycopg.AsyncConnection.connect(self.pg_url) as conn:
            cur = await conn.execute(
                "SELECT payment_method, status, captured_minor, refunded_minor"
                " FROM orders.sandbox_payments WHERE reference = %s",
                (order_id,),
            )
            row = await cur.fetchone()
        assert row is not None, order_id
        return str(row[0]), str(row[1]), int(row[2]), int(row[3])


def _reason(body: dict[str, Any]) -> str:
    return str(next((d.get("reason", "") for d in details(body, "ErrorInfo")), ""))


@pytest.fixture
async def app(pg_url: str, redis_url: str, nats_url: str, namespace: str) -> AsyncIterator[App]:
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace,
                          extra={"FOODMESH_ORDER_SETTLE_EVERY_S": "0.2"}) as mesh:  # fmt: skip
        m: Mesh = mesh
        async with gateway({"catalog": m.catalog.target, "order": m.order.target}) as http:
            yield App(http, pg_url)


async def test_saved_methods_are_listed_added_once_made_default_removed_and_paid_with(
    app: App,
) -> None:
    assert await app.methods("cus_alice") == []
    code, visa = await app.save("cus_alice", "pm_card_visa", "save-visa")
    assert code == 201, visa
    visa = visa["payment_method"]
    assert (visa["kind"], visa["brand"], visa["last4"], visa["is_default"]) == (
        "PAYMENT_METHOD_KIND_CARD", "visa", "4242", True)  # fmt: skip
    assert visa["display_name"] == "Visa •••• 4242"
    # The same key again is the same method; the same key for another token is refused.
    _, again = await app.save("cus_alice", "pm_card_visa", "save-visa")
    assert again["payment_method"]["payment_method_id"] == visa["payment_method_id"]
    code, reused = await app.save("cus_alice", "pm_card_mastercard", "save-visa")
    assert code == 409 and _reason(reused) == "IDEMPOTENCY_KEY_REUSED", reused
    code, apple = await app.save("cus_alice", "pm_wallet_apple_pay", "save-apple")
    assert code == 201, apple
    apple = apple["payment_method"]
    assert (apple["kind"], apple["wallet"], apple["is_default"]) == (
        "PAYMENT_METHOD_KIND_WALLET", "apple_pay", False)  # fmt: skip
    assert apple["display_name"] == "Apple Pay · Visa •••• 4242"
    listed = await app.methods("cus_alice")
    assert [m["payment_method_id"] for m in listed] == [visa["payment_method_id"],
                                                        apple["payment_method_id"]]  # fmt: skip
    # Field-level refusals: 400 naming the field.
    code, bad = await app.save("cus_alice", "4242424242424242", "save-bad")
    assert code == 400 and "token" in violations(bad), bad
    code, bad = await app.call("POST", "/api/v1/payment-methods", "cus_alice", json={},
                               headers={"Idempotency-Key": "save-none"})  # fmt: skip
    assert code == 400 and "token" in violations(bad), bad
    code, bad = await app.call("POST", "/api/v1/payment-methods/bad%20id!:setDefault",
                               "cus_alice", json={})  # fmt: skip
    assert code == 400 and "payment_method_id" in violations(bad), bad

    # The wallet becomes the default; an order without a payment method pays with it.
    pm_apple = apple["payment_method_id"]
    code, made = await app.call("POST", f"/api/v1/payment-methods/{pm_apple}:setDefault",
                                "cus_alice", json={})  # fmt: skip
    assert code == 200 and made["payment_method"]["is_default"], made
    listed = await app.methods("cus_alice")
    assert [(m["payment_method_id"], m.get("is_default", False)) for m in listed] == [
        (pm_apple, True), (visa["payment_method_id"], False)]  # fmt: skip
    code, by_default = await app.place("cus_alice", "o-default")
    assert code == 201, by_default
    assert by_default["order"]["payment_status"] == "PAYMENT_STATUS_AUTHORIZED"
    assert (by_default["order"]["payment_method_id"],
            by_default["order"]["payment_method_name"]) == (
        pm_apple, "Apple Pay · Visa •••• 4242")  # fmt: skip
    # What paid is the customer's to see: not the restaurant's.
    oid = by_default["order"]["order_id"]
    code, seen = await app.call("GET", f"/api/v1/orders/{oid}", "rest_1", "restaurant")
    assert code == 200, seen
    assert seen["order"]["payment_method_name"] == seen["order"]["payment_method_id"] == ""
    assert (await app.ledger(by_default["order"]["order_id"]))[:2] == (pm_apple, "authorized")
    code, by_card = await app.place("cus_alice", "o-card",
                                    payment_method_id=visa["payment_method_id"])  # fmt: skip
    assert code == 201, by_card
    assert (await app.ledger(by_card["order"]["order_id"]))[0] == visa["payment_method_id"]

    # Removing the default makes the newest left the default; removing again is no error;
    # a removed method pays for nothing.
    code, left = await app.call("DELETE", f"/api/v1/payment-methods/{pm_apple}", "cus_alice")
    assert code == 200, left
    assert [(m["payment_method_id"], m["is_default"]) for m in left["payment_methods"]] == [
        (visa["payment_method_id"], True)]  # fmt: skip
    code, _ = await app.call("DELETE", f"/api/v1/payment-methods/{pm_apple}", "cus_alice")
    assert code == 200
    code, gone = await app.place("cus_alice", "o-removed", payment_method_id=pm_apple)
    assert code == 402 and _reason(gone) == "PAYMENT_INVALID_PAYMENT_METHOD", gone
    # Without any saved method, an order must name one.
    await app.call("DELETE", f"/api/v1/payment-methods/{visa['payment_method_id']}", "cus_alice")
    assert await app.methods("cus_alice") == []
    code, none = await app.place("cus_alice", "o-none")
    assert code == 400 and "payment_method_id" in violations(none), none


async def test_another_customers_method_is_refused_as_an_unknown_one(app: App) -> None:
    _, saved = await app.save("cus_alice", "pm_card_mastercard", "alice-mc")
    pm = saved["payment_method"]["payment_method_id"]
    assert await app.methods("cus_mallory") == []
    unknown = "pm_" + "0" * 24
    answers = []
    for target in (pm, unknown):
        set_code, set_body = await app.call(
            "POST", f"/api/v1/payment-methods/{target}:setDefault", "cus_mallory", json={}
        )
        del_code, del_body = await app.call("DELETE", f"/api/v1/payment-methods/{target}",
                                            "cus_mallory")  # fmt: skip
        pay_code, pay_body = await app.place("cus_mallory", f"steal-{target}",
                                             payment_method_id=target)  # fmt: skip
        answers.append((set_code, _reason(set_body), set_body["message"].replace(target, "?"),
                        del_code, _reason(del_body), pay_code, _reason(pay_body),
                        pay_body["message"]))  # fmt: skip
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 404 and answers[0][3] == 404 and answers[0][5] == 402, answers
    # Nothing was held for Mallory, and Alice's method is still hers and the default.
    async with await psycopg.AsyncConnection.connect(app.pg_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM orders.sandbox_payments"
                                 " WHERE auth_key LIKE 'auth:cus_mallory:%'")  # fmt: skip
        assert await cur.fetchone() == (0,)
    mine = await app.methods("cus_alice")
    assert [(m["payment_method_id"], m["is_default"]) for m in mine] == [(pm, True)]


async def test_wallets_authorize_capture_and_refund_like_cards_and_a_declined_one_is_402(
    app: App,
) -> None:
    # A one-off Google Pay token: authorized, captured on delivery.
    code, g = await app.place("cus_w", "w-google", payment_method_id="pm_wallet_google_pay")
    assert code == 201, g
    gid = g["order"]["order_id"]
    for s in ROAD:
        last = await app.step(gid, s)
    assert last["payment_status"] == "PAYMENT_STATUS_CAPTURED", last
    method, status, captured, _ = await app.ledger(gid)
    total = int(last["pricing"]["total"]["amount_minor"])
    assert (method, status, captured) == ("pm_wallet_google_pay", "captured", total)
    # The declined wallet: 402 with the processor's code, nothing held.
    code, d = await app.place("cus_w", "w-declined", payment_method_id="pm_wallet_declined")
    assert code == 402 and _reason(d) == "PAYMENT_WALLET_DECLINED", d
    # A saved Apple Pay wallet, cancelled while cooking: part captured, the rest refunded
    # to the wallet.
    _, saved = await app.save("cus_w", "pm_wallet_apple_pay", "w-save")
    pm = saved["payment_method"]["payment_method_id"]
    code, a = await app.place("cus_w", "w-apple", payment_method_id=pm)
    assert code == 201, a
    aid = a["order"]["order_id"]
    for s in ROAD[:2]:
        await app.step(aid, s)
    code, cancelled = await app.call("POST", f"/api/v1/orders/{aid}:cancel", "cus_w",
                                     json={"reason": "changed my mind"})  # fmt: skip
    assert code == 200, cancelled
    o = cancelled["order"]
    assert o["payment_status"] == "PAYMENT_STATUS_PARTIALLY_REFUNDED", o
    method, status, captured, refunded = await app.ledger(aid)
    assert (method, status) == (pm, "partially_refunded")
    assert 0 < refunded == int(o["refunded"]["amount_minor"]) < captured


async def _delivered(app: App, who: str, key: str) -> str:
    code, placed = await app.place(who, key, payment_method_id="pm_card_visa")
    assert code == 201, placed
    order_id = str(placed["order"]["order_id"])
    for s in ROAD:
        await app.step(order_id, s)
    return order_id


async def test_restaurant_food_and_driver_are_rated_apart_and_aggregated_apart(app: App) -> None:
    code, placed = await app.place("cus_r", "r-early", payment_method_id="pm_card_visa")
    early = placed["order"]["order_id"]
    rate = {"restaurant_rating": 5, "food_rating": 3, "driver_rating": 4,
            "restaurant_review": "quick, but the pizza was cold"}  # fmt: skip
    # Not delivered yet: refused.
    code, body = await app.call("POST", f"/api/v1/orders/{early}/rating", "cus_r", json=rate)
    assert code == 400 and _reason(body) == "NOT_DELIVERED", body
    first = await _delivered(app, "cus_r", "r-1")
    # Not your order: as no order at all.
    code, body = await app.call("POST", f"/api/v1/orders/{first}/rating", "cus_other", json=rate)
    assert code == 404, body
    # Out of range: 400 naming the field.
    for field, value in (("food_rating", 6), ("restaurant_rating", 0), ("driver_rating", -1)):
        code, body = await app.call("POST", f"/api/v1/orders/{first}/rating", "cus_r",
                                    json={**rate, field: value})  # fmt: skip
        assert code == 400 and field in violations(body), (field, body)
    code, got = await app.call("POST", f"/api/v1/orders/{first}/rating", "cus_r", json=rate)
    assert code == 200, got
    assert (got["restaurant_rating"], got["restaurant_review_count"]) == (5.0, 1)
    assert (got["food_rating"], got["food_rating_count"]) == (3.0, 1)
    # Once per order: the same rating again is the same answer, another one is refused.
    code, again = await app.call("POST", f"/api/v1/orders/{first}/rating", "cus_r", json=rate)
    assert (code, again) == (200, got)
    code, body = await app.call("POST", f"/api/v1/orders/{first}/rating", "cus_r",
                                json={**rate, "food_rating": 5})  # fmt: skip
    assert code == 409, body
    # A second order: the restaurant rated, its food skipped.
    second = await _delivered(app, "cus_r", "r-2")
    code, got = await app.call("POST", f"/api/v1/orders/{second}/rating", "cus_r",
                               json={"restaurant_rating": 3})  # fmt: skip
    assert code == 200, got
    assert (got["restaurant_rating"], got["restaurant_review_count"]) == (4.0, 2)
    assert (got["food_rating"], got["food_rating_count"]) == (3.0, 1)
    # The restaurant's page shows both, apart.
    code, page = await app.call("GET", "/api/v1/restaurants/rest_1", "cus_someone")
    assert code == 200, page
    r = page["restaurant"]
    assert (r["rating"], r["review_count"], r["food_rating"], r["food_rating_count"]) == (
        4.0, 2, 3.0, 1)  # fmt: skip
    code, reviews = await app.call("GET", "/api/v1/restaurants/rest_1/reviews", "cus_someone")
    assert [(v["rating"], v.get("food_rating", 0)) for v in reviews["reviews"]] == [(3, 0), (5, 3)]
    # The driver's rating is kept apart, for the driver (Dispatch aggregates it per driver).
    async with await psycopg.AsyncConnection.connect(app.pg_url) as conn:
        cur = await conn.execute("SELECT restaurant_rating, food_rating, driver_rating"
                                 " FROM orders.ratings WHERE order_id = %s", (first,))  # fmt: skip
        assert await cur.fetchone() == (5, 3, 4)


async def test_a_rating_the_catalog_did_not_take_is_handed_to_it_again_once(app: App) -> None:
    # A rating stored by RateOrder whose call to the Catalog was lost (the Catalog away,
    # the Order process killed before it): the settle pass delivers it.
    async with await psycopg.AsyncConnection.connect(app.pg_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO orders.ratings (order_id, customer_id, restaurant_id,"
            " restaurant_rating, restaurant_review, food_rating, created_at)"
            " VALUES ('ord_lost_1', 'cus_l', 'rest_1', 2, 'lost on the way', 4,"
            " now() - interval '1 minute')"
        )  # fmt: skip
    for _ in range(100):
        code, page = await app.call("GET", "/api/v1/restaurants/rest_1", "cus_l")
        r = page["restaurant"]
        if r.get("review_count", 0):
            break
        await asyncio.sleep(0.1)
    assert (r["rating"], r["review_count"], r["food_rating"], r["food_rating_count"]) == (
        2.0, 1, 4.0, 1)  # fmt: skip
    async with await psycopg.AsyncConnection.connect(app.pg_url) as conn:
        cur = await conn.execute("SELECT restaurant_forwarded FROM orders.ratings"
                                 " WHERE order_id = 'ord_lost_1'")  # fmt: skip
        assert await cur.fetchone() == (True,)
        await asyncio.sleep(0.5)  # more passes: still counted once
        cur = await conn.execute("SELECT count(*) FROM catalog.reviews")
        assert await cur.fetchone() == (1,)


async def test_racing_saves_make_one_default_one_method_per_key_and_stop_at_the_limit(
    app: App,
) -> None:
    # Six racing saves of one key: one method; six of different keys: one default.
    same = await asyncio.gather(*(app.save("cus_race", "pm_card_visa", "k-same")
                                  for _ in range(6)))  # fmt: skip
    assert {code for code, _ in same} == {201}, same
    assert len({b["payment_method"]["payment_method_id"] for _, b in same}) == 1
    many = await asyncio.gather(*(app.save("cus_race", "pm_wallet_google_pay", f"k-{i}")
                                  for i in range(6)))  # fmt: skip
    assert {code for code, _ in many} == {201}, many
    listed = await app.methods("cus_race")
    assert len(listed) == 7 and sum(bool(m.get("is_default")) for m in listed) == 1, listed
    for i in range(6, 19):
        code, body = await app.save("cus_race", "pm_card_mastercard", f"k-{i}")
        assert code == 201, body
    code, full = await app.save("cus_race", "pm_card_mastercard", "k-one-too-many")
    assert code == 400 and _reason(full) == "TOO_MANY_PAYMENT_METHODS", full
    assert len(await app.methods("cus_race")) == 20
