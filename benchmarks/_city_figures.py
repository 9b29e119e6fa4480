"""The live city's delivery figures, read from a running ``foodmesh up``.

Prints, for the orders placed since ``--since`` (and before ``--until``; epoch seconds)
and delivered:
click-to-door mean and p90 (the Order service's own records: placement to the
``delivered`` step of its timeline), the drivers' mean time at the restaurant
(Dispatch's ``foodmesh_dispatch_driver_wait_seconds``: arrived to picked up, the counter's
handover included) and their mean wait for the food
(``foodmesh_dispatch_driver_food_wait_seconds``: arrived to the kitchen's ready mark, none
when the food was there first), both over the Dispatch process's life. Nothing is started
here: it reads the city's PostgreSQL (``--postgres-url`` or ``FOODMESH_POSTGRES_URL``) and
Dispatch's metrics page.

    python benchmarks/_city_figures.py --since 1765087000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import urllib.request
from typing import Any

import numpy as np
import psycopg

_CLICK_TO_DOOR = """
SELECT extract(epoch FROM t.at - o.created_at)
FROM orders.orders o
JOIN orders.timeline t ON t.order_id = o.order_id AND t.status = 'delivered'
WHERE o.created_at >= to_timestamp(%s) AND o.created_at < to_timestamp(%s)
"""
_PLACED = """
SELECT count(*) FROM orders.orders
WHERE created_at >= to_timestamp(%s) AND created_at < to_timestamp(%s)
"""


def driver_wait(metrics_text: str, metric: str = "driver_wait") -> tuple[float, int]:
    """(sum seconds, count) of a driver-wait histogram in a Prometheus page."""
    found: dict[str, float] = {}
    for name in ("sum", "count"):
        m = re.search(rf"^foodmesh_dispatch_{metric}_seconds_{name} (\S+)$", metrics_text, re.M)
        found[name] = float(m.group(1)) if m else 0.0
    return found["sum"], int(found["count"])


async def figures(
    postgres_url: str, metrics_url: str, since: float, until: float = float("inf")
) -> dict[str, Any]:
    """The figures of the orders placed in [since, until) (epoch seconds)."""
    until = min(until, 4e9)
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cur = await conn.execute(_CLICK_TO_DOOR, (since, until))
        secs = np.array([float(r[0]) for r in await cur.fetchall()])
        cur = await conn.execute(_PLACED, (since, until))
        row = await cur.fetchone()
        placed = int(row[0]) if row else 0
    text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    )
    wait_sum, wait_n = driver_wait(text)
    food_sum, food_n = driver_wait(text, "driver_food_wait")
    return {
        "orders_placed": placed,
        "orders_delivered": len(secs),
        "click_to_door_mean_min": round(float(secs.mean()) / 60, 2) if len(secs) else None,
        "click_to_door_p90_min": (
            round(float(np.percentile(secs, 90)) / 60, 2) if len(secs) else None
        ),
        "driver_waits": wait_n,
        "driver_wait_mean_min": round(wait_sum / wait_n / 60, 2) if wait_n else None,
        "food_waits": food_n,
        "driver_food_wait_mean_min": round(food_sum / food_n / 60, 2) if food_n else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--since", type=float, required=True, help="orders placed from (epoch s)")
    ap.add_argument("--until", type=float, default=float("inf"),
                    help="orders placed before (epoch s; default: now)")  # fmt: skip
    ap.add_argument("--postgres-url", default=os.environ.get("FOODMESH_POSTGRES_URL", ""))
    ap.add_argument(
        "--metrics-url",
        default="http://127.0.0.1:9104/metrics",
        help="Dispatch's metrics page (default: its port under `foodmesh up`)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    if not args.postgres_url:
        print("--postgres-url or FOODMESH_POSTGRES_URL is needed", file=sys.stderr)
        return 2
    out = asyncio.run(figures(args.postgres_url, args.metrics_url, args.since, args.until))
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
