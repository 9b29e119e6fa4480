"""The ETA report per stage, read from the Order database (``sim run --report eta``)."""

from __future__ import annotations

import argparse
import datetime as dt

import psycopg
import pytest

from foodmesh.commands.sim import _duration
from servers import order
from servers.order.eta_stages import report
from servers.runtime.migrate import load_migrations, migrate

pytestmark = pytest.mark.integration


def test_durations_read_as_people_write_them() -> None:
    assert [_duration(t) for t in ("600", "90s", "45m", "1h", "0")] == [600, 90, 2700, 3600, 0]
    for bad in ("", "m", "-5m", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            _duration(bad)


async def test_report_gives_each_stages_error_and_coverage_after_warm_up(pg_url: str) -> None:
    assert order.SPEC.migrations is not None
    await migrate(pg_url, service="order", migrations=load_migrations(order.SPEC.migrations))
    t0 = dt.datetime(2026, 3, 2, 18, tzinfo=dt.UTC)
    m = dt.timedelta(minutes=1)
    # (minutes after t0 delivered, placement error, pickup error): actual - estimated.
    orders = [(10, 9.0, 0.0), (40, 2.0, 1.0), (45, -4.0, -0.5), (50, 1.0, 0.5), (55, 3.0, 0.0)]
    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        for i, (at, e_place, e_pick) in enumerate(orders):
            oid = f"ord_{i}"
            delivered = t0 + at * m
            await c.execute("INSERT INTO orders.timeline (order_id, seq, status, actor, at)"
                            " VALUES (%s, 9, 'delivered', 't', %s)", (oid, delivered))  # fmt: skip
            for stage, err, half in (("placement", e_place, 2.5), ("pickup", e_pick, None)):
                eta = delivered - err * m
                lo, hi = (eta - half * m, eta + half * m) if half else (None, None)
                await c.execute(
                    "INSERT INTO orders.eta_estimates (order_id, stage, at,"
                    " estimated_delivery_time, lower_time, upper_time) VALUES (%s, %s, %s, %s,"
                    " %s, %s)", (oid, stage, t0, eta, lo, hi))  # fmt: skip
        await c.commit()
    got = {r.stage: r for r in await report(pg_url, since=t0 + 30 * m, until=t0 + 60 * m)}
    assert set(got) == {"placement", "pickup"}  # no other stage was estimated
    p = got["placement"]
    assert p.orders == 4  # the first delivery, in the warm-up, is left out
    assert p.mae_min == pytest.approx(2.5) and p.bias_min == pytest.approx(0.5)
    assert p.p90_min == pytest.approx(4.0)
    assert p.coverage80 == pytest.approx(0.5)  # -4 and 3 fall outside +-2.5
    k = got["pickup"]
    assert k.mae_min == pytest.approx(0.5) and k.coverage80 is None
