"""The soak's audit against real stores: a clean city passes; a planted lost order, double
charge, lingering hold, double assignment and unpublished event are each caught."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from foodmesh.commands.migrate import migrate_services
from foodmesh.soak.audit import AuditSettings, run_audit

pytestmark = pytest.mark.integration

_SETTINGS = AuditSettings(stuck_after_s=900, grace_s=60, driver_limit=1)


async def _order(conn: psycopg.AsyncConnection[Any], order_id: str, *, status: str,
                 total: int = 1500, driver: str = "") -> None:  # fmt: skip
    await conn.execute(
        """
        INSERT INTO orders.orders (order_id, customer_id, restaurant_id, restaurant_name,
            restaurant_lat, restaurant_lon, driver_id, status, delivery_address, delivery_option,
            currency, subtotal_minor, delivery_fee_minor, service_fee_minor,
            small_order_fee_minor, tax_minor, discount_minor, tip_minor, total_minor,
            surge_multiplier, payment_provider, payment_id, payment_status,
            estimated_delivery_time, eta_confidence, ready_time, last_seq, created_at, updated_at)
        VALUES (%s, 'cust_1', 'rest_1', 'R', 37.77, -122.42, %s, %s, '{}', 1, 'USD', %s, 0, 0,
            0, 0, 0, 0, %s, 1.0, 'sandbox', %s, %s, now(), 0.9, now(), 2,
            now() - interval '10 minutes', now() - interval '5 minutes')
        """,
        (order_id, driver, status, total, total, f"pay_{order_id}",
         "captured" if status == "delivered" else "authorized"),
    )  # fmt: skip
    for seq, st in enumerate(("placed", status), start=1):
        await conn.execute(
            "INSERT INTO orders.timeline (order_id, seq, status, actor, at)"
            " VALUES (%s, %s, %s, 'cust_1', now())",
            (order_id, seq, st),
        )


async def _payment(conn: psycopg.AsyncConnection[Any], payment_id: str, order_id: str, *,
                   status: str, amount: int = 1500, captured: int = 0) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO orders.sandbox_payments (payment_id, auth_key, payment_method,"
        " amount_minor, currency, status, captured_minor, reference, created_at)"
        " VALUES (%s, %s, 'pm_card_visa', %s, 'USD', %s, %s, %s, now() - interval '10 minutes')",
        (payment_id, "auth:" + payment_id, amount, status, captured, order_id),
    )


async def _assignment(conn: psycopg.AsyncConnection[Any], order_id: str, driver: str,
                      status: str) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO fleet.assignments (order_id, region, status, driver_id, pickup_lat,"
        " pickup_lon, dropoff_lat, dropoff_lon, ready_at, created_at, updated_at)"
        " VALUES (%s, '9q8y', %s, %s, 37.77, -122.42, 37.78, -122.41, now(),"
        " now() - interval '10 minutes', now() - interval '5 minutes')",
        (order_id, status, driver),
    )


async def test_audit_passes_a_clean_city_and_catches_each_planted_fault(pg_url: str) -> None:
    await migrate_services(["order", "dispatch", "pricing"], pg_url)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await _order(conn, "ord_a", status="delivered", driver="drv_1")
        await _payment(conn, "pay_ord_a", "ord_a", status="captured", captured=1500)
        await _assignment(conn, "ord_a", "drv_1", "delivered")
        await _order(conn, "ord_b", status="cancelled")
        await _payment(conn, "pay_ord_b", "ord_b", status="voided")
        await conn.execute("UPDATE orders.orders SET refunded_minor = total_minor"
                           " WHERE order_id = 'ord_b'")  # fmt: skip
        await _assignment(conn, "ord_b", "", "cancelled")

        clean = await run_audit(postgres_url=pg_url, nats_url=None,
                                acknowledged=["ord_a", "ord_b"], settings=_SETTINGS)  # fmt: skip
        assert clean.passed, clean.failures()
        assert (clean.delivered, clean.cancelled, clean.lost_orders) == (1, 1, 0)

        # A lost order: acknowledged to its customer, absent from the store.
        told = ["ord_a", "ord_b", "ord_gone"]
        lost = await run_audit(postgres_url=pg_url, nats_url=None, acknowledged=told,
                               settings=_SETTINGS)  # fmt: skip
        assert lost.lost_orders == 1 and lost.examples["lost_orders"] == ["ord_gone"]
        assert not lost.passed

        # A double charge: a second captured payment for the delivered order.
        await _payment(conn, "pay_ord_a_again", "ord_a", status="captured", captured=1500)
        charged = await run_audit(postgres_url=pg_url, nats_url=None,
                                  acknowledged=["ord_a", "ord_b"], settings=_SETTINGS)  # fmt: skip
        assert charged.double_charges == 1, charged.failures()
        assert "ord_a" in charged.examples["double_charges"][0]
        await conn.execute(
            "DELETE FROM orders.sandbox_payments WHERE payment_id = 'pay_ord_a_again'"
        )

        # A card hold with no order, past the grace period; an offer left open; two drivers
        # on one order; an event never published.
        await _payment(conn, "pay_orphan", "ord_never_placed", status="authorized")
        await conn.execute(
            "INSERT INTO fleet.offers (offer_id, order_id, driver_id, attempt, status,"
            " earnings_minor, currency, distance_miles, score, created_at, expire_at)"
            " VALUES ('off_1', 'ord_a', 'drv_2', 1, 'open', 500, 'USD', 1, 1,"
            " now() - interval '10 minutes', now() - interval '9 minutes')"
        )
        await conn.execute("UPDATE fleet.assignments SET driver_id = 'drv_3'"
                           " WHERE order_id = 'ord_a'")  # fmt: skip
        # The delivery applied twice: the order enters "delivered" again.
        for seq, st in ((3, "picked_up"), (4, "delivered")):
            await conn.execute(
                "INSERT INTO orders.timeline (order_id, seq, status, actor, at)"
                " VALUES ('ord_a', %s, %s, 'drv_1', now())",
                (seq, st),
            )
        await conn.execute(
            "INSERT INTO orders.outbox (event_id, subject, payload)"
            " VALUES ('ev_1', 'orders.v1.placed', '')"
        )
        broken = await run_audit(postgres_url=pg_url, nats_url=None,
                                 acknowledged=["ord_a", "ord_b"], settings=_SETTINGS)  # fmt: skip
        assert broken.lingering_holds == 1
        assert broken.dangling_offers == 1
        assert broken.double_assignments == 1
        assert broken.double_applied == 1 and "delivered x2" in broken.examples["double_applied"][0]
        assert broken.undrained_outboxes["orders.outbox"] == 1
        assert broken.undrained_outboxes["fleet.order_calls"] == 0  # discovered, and clean
        assert not broken.passed


async def test_audit_finds_a_durable_consumer_behind(pg_url: str, nats_url: str,
                                                     namespace: str) -> None:  # fmt: skip
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream, subject = f"{namespace.upper()}_SOAK", f"{namespace}.soak.events"
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="late", ack_policy=AckPolicy.EXPLICIT)
        )
        for i in range(3):
            await js.publish(subject, f"event {i}".encode())
        audit = await run_audit(postgres_url=pg_url, nats_url=nats_url, acknowledged=[],
                                settings=_SETTINGS)  # fmt: skip
        assert audit.lagging_consumers[f"{stream}/late"] == 3
        assert not audit.passed
        sub = await js.pull_subscribe(subject, durable="late", stream=stream)
        for msg in await sub.fetch(3, timeout=5):
            await msg.ack_sync()
        audit = await run_audit(postgres_url=pg_url, nats_url=nats_url, acknowledged=[],
                                settings=_SETTINGS)  # fmt: skip
        assert audit.lagging_consumers[f"{stream}/late"] == 0
    finally:
        await js.delete_stream(stream)
        await nc.close()
