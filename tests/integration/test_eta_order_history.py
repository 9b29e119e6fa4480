"""train-eta on real history: delivered orders read from the Order database (real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import psycopg
import pytest

from foodmesh.roads import RoadGraph
from foodmesh.sim import history
from servers import order
from servers.eta.order_history import load_order_history
from servers.eta.training import TrainConfig, kitchen_columns, train
from servers.runtime.migrate import load_migrations, migrate

pytestmark = pytest.mark.integration


async def _insert_deliveries(pg_url: str, n: int) -> None:
    """``n`` delivered orders with their timelines, as the Order service would have left them."""
    rng = np.random.default_rng(0)
    t0 = dt.datetime(2026, 3, 2, 11, tzinfo=dt.UTC)
    orders, timeline = [], []
    for i in range(n):
        rest = (37.77 + 0.01 * (i % 5), -122.42 + 0.01 * (i % 3))
        cust = (rest[0] + rng.uniform(-0.02, 0.02), rest[1] + rng.uniform(-0.02, 0.02))
        placed = t0 + dt.timedelta(minutes=3 * i)
        prep = dt.timedelta(minutes=float(10 + 3 * (i % 5) + rng.uniform(0, 2)))
        wait = dt.timedelta(minutes=float(rng.uniform(1, 3)))
        drive = dt.timedelta(minutes=float(8 + rng.uniform(0, 4)))
        ready, picked = placed + prep, placed + prep + wait
        delivered = picked + drive
        oid = f"ord_{i:05d}"
        orders.append((
            oid, f"cus_{i % 40}", f"rest_{i % 5:05d}", "R", rest[0], rest[1], f"drv_{i % 9:05d}",
            "delivered", json.dumps({"lat": cust[0], "lon": cust[1]}), 1, "USD", 2000 + i,
            0, 0, 0, 0, 0, 0, 2000 + i, 1.0, "sandbox", f"pay_{i}", "captured",
            delivered, 0.8, ready, 4, placed, delivered,
            # The restaurant cell's conditions at placement; unknown (NULL) on every 4th.
            *((None, None, None) if i % 4 == 0 else (i % 7, i % 3, 1.5 if i % 5 == 1 else 1.0)),
        ))  # fmt: skip
        for seq, (status, at) in enumerate(
            (("placed", placed), ("ready_for_pickup", ready), ("picked_up", picked),
             ("delivered", delivered)), start=1):  # fmt: skip
            timeline.append((oid, seq, status, "test", at))
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO orders.orders (order_id, customer_id, restaurant_id, restaurant_name,"
                " restaurant_lat, restaurant_lon, driver_id, status, delivery_address,"
                " delivery_option, currency, subtotal_minor, delivery_fee_minor, service_fee_minor,"
                " small_order_fee_minor, tax_minor, discount_minor, tip_minor, total_minor,"
                " surge_multiplier, payment_provider, payment_id, payment_status,"
                " estimated_delivery_time, eta_confidence, ready_time, last_seq, created_at,"
                " updated_at, eta_drivers_nearby, eta_weather, eta_event_multiplier)"
                " VALUES (" + ", ".join(["%s"] * 32) + ")",
                orders,
            )
            await cur.executemany(
                "INSERT INTO orders.timeline (order_id, seq, status, actor, at)"
                " VALUES (%s, %s, %s, %s, %s)",
                timeline,
            )
        await conn.commit()


async def test_train_eta_learns_from_the_order_databases_deliveries(pg_url: str) -> None:
    graph = RoadGraph.default()
    # No Order schema at all: nothing to learn from, no error.
    quiet = {"progress": lambda _: None, "min_orders": 150}
    assert await load_order_history(pg_url, graph, **quiet) is None  # type: ignore[arg-type]
    assert order.SPEC.migrations is not None
    await migrate(pg_url, service="order", migrations=load_migrations(order.SPEC.migrations))
    await _insert_deliveries(pg_url, 149)
    assert await load_order_history(pg_url, graph, **quiet) is None  # type: ignore[arg-type]
    await _insert_more(pg_url)
    h = await load_order_history(pg_url, graph, **quiet)  # type: ignore[arg-type]
    assert h is not None
    assert set(history.COLUMNS) <= set(h)
    n = len(h["order_ts"])
    assert n == 200
    assert np.all(np.diff(h["order_ts"]) >= 0)
    assert np.allclose(h["total_s"], h["prep_s"] + h["wait_s"] + h["travel_s"])
    assert np.all(np.isfinite(h["route_graph_s"])) and np.all(h["route_distance_m"] > 0)
    # The kitchens as of each placement, as Order computes them live.
    k = kitchen_columns(h)
    assert k["restaurant_load"].max() >= 1
    assert np.isfinite(k["restaurant_recent_prep_min"][50:]).all()
    assert np.isnan(k["restaurant_listed_prep_min"]).all()  # no Catalog schema here
    # The conditions Order kept at placement; NULL read as unknown / none / 1.0.
    i = np.array([int(o[4:]) for o in h["order_id"]])
    unknown = i % 4 == 0
    assert np.isnan(h["drivers_nearby"][unknown]).all()
    assert np.array_equal(h["drivers_nearby"][~unknown], i[~unknown] % 7)
    assert np.array_equal(h["weather"], np.where(unknown, 0, i % 3))
    assert np.array_equal(h["event_multiplier"], np.where(~unknown & (i % 5 == 1), 1.5, 1.0))
    result = train(h, out_dir=None, config=TrainConfig(rounds=30, nthread=1),
                   progress=lambda _: None)  # fmt: skip
    ho = result.metrics["held_out"]
    assert ho["prep"]["mae_min"] < ho["prep"]["baseline_mae_min"]
    assert "total_driver_assigned" not in ho  # no driver positions in a real history
    assert result.model.drivers  # speed histories from the drives to customers


async def _insert_more(pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        await conn.execute("DELETE FROM orders.timeline")
        await conn.execute("DELETE FROM orders.orders")
        await conn.commit()
    await _insert_deliveries(pg_url, 200)
