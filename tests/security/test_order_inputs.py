"""Order inputs that cost money or tell secrets (issue 17, low items): tips are bounded
before any card hold, a saved card is its customer's only, and QuoteOrder does not tell
whether a promo code exists. Real gateway, Order, Pricing and Catalog services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from foodmesh.v1 import pricing_pb2 as ppb
from tests.integration._gateway import violations
from tests.integration._order import usd
from tests.integration._pricing import promo
from tests.security._orders import Live, priced

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def w(pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path) -> Any:
    async with priced(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                      namespace=namespace, state_dir=tmp_path) as live:  # fmt: skip
        yield live


async def _holds(pg_url: str, customer: str) -> int:
    """Authorizations the sandbox processor recorded for the customer (held or declined)."""
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM orders.sandbox_payments"
                                 " WHERE auth_key LIKE %s", (f"auth:{customer}:%",))  # fmt: skip
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("tip", [2**63 - 1, 9_000_000_000_000_000_000 // 2, 100_001, 5_000])
async def test_a_tip_out_of_bounds_is_refused_naming_it_before_any_hold(
    w: Live, pg_url: str, tip: int
) -> None:
    # The cart's subtotal is 26.98: a tip may be up to the subtotal or 20.00 (2,000 minor).
    code, body = await w.place("cus_tipper", f"tip-{tip}",
                               tip={"amount_minor": str(tip), "currency_code": "USD"})  # fmt: skip
    assert code == 400, (code, body)
    assert "tip.amount_minor" in violations(body), body
    assert await _holds(pg_url, "cus_tipper") == 0
    code, body = await w.place("cus_tipper", "tip-ok",
                               tip={"amount_minor": "500", "currency_code": "USD"})  # fmt: skip
    assert code == 201, body
    assert int(body["order"]["pricing"]["tip"]["amount_minor"]) == 500


async def test_a_saved_card_of_another_customer_is_refused_before_any_hold(
    w: Live, pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        # The processor's record of a card Alice saved (its test setup, as a fixture).
        await conn.execute("INSERT INTO orders.sandbox_payment_methods (payment_method_id,"
                           " customer_id, card) VALUES ('pm_alice_visa', 'cus_alice',"
                           " 'pm_card_visa')")  # fmt: skip
    code, body = await w.place("cus_mallory", "steal-1", payment_method_id="pm_alice_visa")
    assert code in (400, 402, 412) and code != 201, (code, body)
    assert "payment_method_id" in body.get("message", ""), body
    assert await _holds(pg_url, "cus_mallory") == 0
    # The same answer as a card that does not exist at all.
    _, unknown = await w.place("cus_mallory", "steal-2", payment_method_id="pm_nobodys")
    assert unknown["message"] == body["message"], (unknown, body)
    code, mine = await w.place("cus_alice", "own-1", payment_method_id="pm_alice_visa")
    assert code == 201, mine
    assert mine["order"]["payment_status"] == "PAYMENT_STATUS_AUTHORIZED"


async def test_quote_answers_the_same_for_unknown_and_ineligible_promo_codes(w: Live) -> None:
    async with w.pricing.client("ops", "ops_1") as ops:
        old = promo("OLDIE")
        old.start_time.FromSeconds(1_000_000)
        old.end_time.FromSeconds(2_000_000)
        await ops.upsert_promo_code(ppb.UpsertPromoCodeRequest(promo=old))
        await ops.upsert_promo_code(ppb.UpsertPromoCodeRequest(
            promo=promo("RICH", min_subtotal=usd(1_000_000))))  # fmt: skip
    quote = {
        "customer_id": "cus_guess", "restaurant_id": "rest_1",
        "items": [{"item_id": "margherita", "quantity": 1, "customizations": ["large"]},
                  {"item_id": "salad", "quantity": 1}],
        "delivery_address": {"street": "456 Mission St", "city": "San Francisco",
                             "state": "CA", "zip": "94105", "lat": 37.7749, "lon": -122.4194},
    }  # fmt: skip
    answers = []
    for code in ("NOSUCHCODE", "OLDIE", "RICH"):
        status, body = await w.call("POST", "/api/v1/quotes", "customer", "cus_guess",
                                    json={**quote, "promo_code": code})  # fmt: skip
        assert status == 400, body
        text = body["message"].replace(code, "<code>")
        infos = [d for d in body.get("details", []) if "ErrorInfo" in d.get("@type", "")]
        answers.append((status, text, [d.get("reason") for d in infos]))
    assert answers[0] == answers[1] == answers[2], answers
