"""A first-order-only promo is used once, however many placements race for it (issue 17,
item 10). Real gateway, Order, Pricing and Catalog services."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from foodmesh.v1 import pricing_pb2 as ppb
from tests.integration._pricing import promo
from tests.security._orders import priced

pytestmark = pytest.mark.timeout(180)


async def test_concurrent_first_orders_get_a_first_order_promo_once(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with priced(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                      namespace=namespace, state_dir=tmp_path) as w:  # fmt: skip
        async with w.pricing.client("ops", "ops_1") as ops:
            for code in ("WELCOME", "HELLO"):  # two first-order codes, no per-customer limit
                await ops.upsert_promo_code(ppb.UpsertPromoCodeRequest(
                    promo=promo(code, first_order_only=True)))  # fmt: skip
        # One new customer fires 10 placements at once, with one code or the other.
        codes = ["WELCOME", "HELLO"] * 5
        answers = await asyncio.gather(*(
            w.place("cus_new_1", f"race-{i}", promo_code=code) for i, code in enumerate(codes)
        ))  # fmt: skip
        placed = [body["order"] for status, body in answers if status == 201]
        assert placed, answers
        assert all(status in (201, 400, 412) for status, _ in answers), answers
        discounted = [o for o in placed
                      if int(o["pricing"]["discount"].get("amount_minor", 0)) < 0]  # fmt: skip
        assert len(discounted) == 1, [(s, b.get("order", b)) for s, b in answers]
