"""The live city: dispatch as `foodmesh up` sets it against offers at once, side by side.

Two cities of the default size (500 restaurants, 600 drivers), each a `foodmesh up
--no-sim` of its own (state, ports, PostgreSQL, Redis, NATS), driven at the same hours by
`foodmesh sim run` of the same seed: the same customers place the same orders with the
same kitchens (each arrival draws from its own stream), on the same roads (the traffic
follows the city's clock, so two cities compare only side by side):

- **ours**: Dispatch as `up` sets it: stacked orders (K = 2), offers timed to the kitchen,
  each driver timed in their own vehicle;
- **baseline** (``--baseline before``): the dispatch the platform had before trips: every
  order offered at once, one order a driver, drivers timed by the straight line at one
  speed (`FOODMESH_DISPATCH_KITCHEN_RELEASE_S` empty, `FOODMESH_DISPATCH_MAX_ORDERS=1`,
  `FOODMESH_DISPATCH_ROAD_TIMES=0`); ``--baseline at-once``: the same with ETA's road times
  and each driver's vehicle (only the kitchen timing and the stacking off).

Read at the end of the run, for the orders placed in its first ``--placed-for`` minutes
(Order's timeline): click-to-door mean and p90, and its parts (placed → ready: the kitchens,
alike in both; ready → picked up and picked up → delivered: dispatch's); and Dispatch's
figures over the run: the drivers' wait for the food (arrival to the kitchen's ready mark)
and their time at the counter (arrival to pickup, the handover included); and the
simulator's drivers on a trip (the mean of its 5 s progress lines). The city
follows San Francisco's clock (demand, drivers' shifts, traffic): ``--flat`` runs 200
orders an hour with every driver working, whatever the hour.

    python benchmarks/city.py                         # 45 minutes (~50 with start-up)
    python benchmarks/city.py --minutes 45 --json
    python benchmarks/city.py --quick                 # 4 minutes, a smoke run
    python benchmarks/city.py --drivers 150           # a scarce city
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from benchmarks._city_figures import driver_wait  # noqa: E402
from benchmarks._harness import emit_json, machine, now_iso, parser, print_table, ratio  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: Dispatch's metrics port before the offset (``foodmesh.core.services``).
_DISPATCH_METRICS = 9104
#: Offers at once, one order a driver (the kitchen timing and the stacking off) ...
AT_ONCE_ENV = {"FOODMESH_DISPATCH_KITCHEN_RELEASE_S": "", "FOODMESH_DISPATCH_MAX_ORDERS": "1"}
#: ... and drivers timed by the straight line at one speed: the dispatch before trips.
BASELINES = {"before": {**AT_ONCE_ENV, "FOODMESH_DISPATCH_ROAD_TIMES": "0"},
             "at-once": AT_ONCE_ENV}  # fmt: skip

_STEPS = """
SELECT extract(epoch FROM o.created_at)::float8,
  (SELECT extract(epoch FROM min(t.at))::float8 FROM orders.timeline t
   WHERE t.order_id = o.order_id AND t.status = 'ready_for_pickup'),
  (SELECT extract(epoch FROM min(t.at))::float8 FROM orders.timeline t
   WHERE t.order_id = o.order_id AND t.status = 'picked_up'),
  (SELECT extract(epoch FROM min(t.at))::float8 FROM orders.timeline t
   WHERE t.order_id = o.order_id AND t.status = 'delivered')
FROM orders.orders o
WHERE o.created_at >= to_timestamp(%s) AND o.created_at < to_timestamp(%s)
"""


@dataclass(slots=True)
class City:
    name: str
    offset: int
    state: Path
    proc: asyncio.subprocess.Process
    log: Path
    postgres_url: str = ""

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{8080 + self.offset}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{_DISPATCH_METRICS + self.offset}/metrics"

    def env(self, extra: Mapping[str, str]) -> dict[str, str]:
        off = self.offset
        return {**os.environ, "PYTHONPATH": str(ROOT), "FOODMESH_DEV": "1",
                "FOODMESH_STATE_DIR": str(self.state), "FOODMESH_PORT_OFFSET": str(off),
                "FOODMESH_GATEWAY_PORT": str(8080 + off),
                "FOODMESH_DASHBOARD_PORT": str(8090 + off),
                "FOODMESH_GATEWAY_METRICS_PORT": str(9100 + off), **extra}  # fmt: skip


async def _start(name: str, offset: int, root: Path, extra: Mapping[str, str]) -> City:
    state = root / name / "state"
    state.mkdir(parents=True)
    log = root / name / "up.log"
    city = City(name, offset, state, proc=None, log=log)  # type: ignore[arg-type]
    with log.open("wb") as out:
        city.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "foodmesh", "--state-dir", str(state), "up", "--no-sim",
            cwd=ROOT, env=city.env(extra), stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return city


async def _ready(city: City, within_s: float = 900.0) -> None:
    """Until `up` has seeded the city (its ``city N:`` line) and printed its PostgreSQL."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        text = city.log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("FOODMESH_POSTGRES_URL="):
                city.postgres_url = line.split("=", 1)[1].strip()
        if city.postgres_url and any(x.startswith("city ") for x in text.splitlines()):
            return
        if city.proc.returncode is not None:
            raise RuntimeError(f"{city.name}: `foodmesh up` exited:\n{text[-3000:]}")
        await asyncio.sleep(2.0)
    raise RuntimeError(f"{city.name}: not up within {within_s:.0f} s:\n{text[-3000:]}")


async def _stop(proc: asyncio.subprocess.Process, grace_s: float = 60.0) -> None:
    """SIGINT to the process group (`up` stops its services gracefully), then SIGKILL."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        async with asyncio.timeout(grace_s):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


@contextlib.asynccontextmanager
async def cities(
    specs: list[tuple[str, int, Mapping[str, str]]], keep: Path | None = None
) -> AsyncIterator[list[City]]:
    """The cities of ``specs`` (name, port offset, Dispatch's environment), up; stopped after.

    Their state (PostgreSQL's data, logs) under ``keep``, kept; else a temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="foodmesh-bench-city-") as tmp:
        root = keep or Path(tmp)
        started: list[City] = []
        try:
            for name, offset, extra in specs:
                started.append(await _start(name, offset, root, extra))
            await asyncio.gather(*(_ready(c) for c in started))
            yield started
        finally:
            await asyncio.gather(*(_stop(c.proc) for c in started))


async def _counts(city: City, since: float) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(city.postgres_url) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'delivered') FROM orders.orders"
            " WHERE created_at >= to_timestamp(%s)",
            (since,),
        )
        row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _stats(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    a = np.array(xs) / 60.0
    return round(float(a.mean()), 2), round(float(np.percentile(a, 90)), 2)


async def figures(city: City, since: float, until: float, cut: float) -> dict[str, Any]:
    """The orders placed in [since, until), delivered before ``cut``; Dispatch's waits."""
    async with await psycopg.AsyncConnection.connect(city.postgres_url) as conn:
        rows = await (await conn.execute(_STEPS, (since, until))).fetchall()
    placed = [(r[0], r[1], r[2], r[3]) for r in rows]
    done = [r for r in placed if r[3] is not None and r[3] < cut]
    c2d, c2d_p90 = _stats([d - p for p, _, _, d in done])
    ready = [r for r in placed if r[1] is not None and r[1] < cut]
    prep, _ = _stats([r - p for p, r, _, _ in ready])
    picked = [r for r in placed if r[1] is not None and r[2] is not None and r[2] < cut]
    r2p, r2p_p90 = _stats([k - r for _, r, k, _ in picked])
    drop, _ = _stats([d - k for _, _, k, d in done if k is not None])
    r2d, r2d_p90 = _stats([d - r for _, r, _, d in done if r is not None])
    text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(city.metrics_url, timeout=5).read().decode()
    )
    wait_s, wait_n = driver_wait(text)
    food_s, food_n = driver_wait(text, "driver_food_wait")
    return {
        "orders_placed": len(placed),
        "orders_delivered": len(done),
        "click_to_door_mean_min": c2d,
        "click_to_door_p90_min": c2d_p90,
        "placed_to_ready_mean_min": prep,
        "ready_to_picked_mean_min": r2p,
        "ready_to_picked_p90_min": r2p_p90,
        "picked_to_delivered_mean_min": drop,
        "ready_to_door_mean_min": r2d,
        "ready_to_door_p90_min": r2d_p90,
        "driver_food_wait_mean_min": round(food_s / food_n / 60, 2) if food_n else None,
        "driver_at_counter_mean_min": round(wait_s / wait_n / 60, 2) if wait_n else None,
        "pickups": wait_n,
        "drivers_busy_mean": drivers_busy_mean(city.log.with_name("sim.log")),
    }


_BUSY = re.compile(rb"\| drivers ([\d,]+) on, ([\d,]+) busy")


def drivers_busy_mean(sim_log: Path) -> float | None:
    """The simulator's drivers on a trip: the mean of its progress lines (every 5 s) while
    its drivers are on the road (not the lines of its start or its stop)."""
    busy = [
        int(m.group(2).replace(b",", b""))
        for m in _BUSY.finditer(sim_log.read_bytes())
        if m.group(1) != b"0"
    ]
    return round(sum(busy) / len(busy), 1) if busy else None


async def _sim(city: City, args: Any, minutes: float, extra: Mapping[str, str]) -> int:
    argv = [sys.executable, "-m", "foodmesh", "sim", "run", "--gateway", city.gateway,
            "--seed", str(args.seed), "--duration", f"{minutes:g}m",
            "--drivers", str(args.drivers)]  # fmt: skip
    if args.orders_per_hour:
        argv += ["--orders-per-hour", f"{args.orders_per_hour:g}"]
    if args.flat:
        argv += ["--flat", "--no-shifts"]
    log = city.log.with_name("sim.log")
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=city.env(extra), stdin=asyncio.subprocess.DEVNULL,
            stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        async with asyncio.timeout(minutes * 60 + 300):
            return await proc.wait()
    finally:
        await _stop(proc, grace_s=20.0)


async def run(args: Any) -> dict[str, Any]:
    minutes = 4.0 if args.quick else args.minutes
    placed_for = min(args.placed_for, minutes * 2 / 3) if args.quick else args.placed_for
    specs: list[tuple[str, int, Mapping[str, str]]] = [
        ("ours", args.offset, {}),
        ("baseline", args.offset + 1000, BASELINES[args.baseline]),
    ]
    print(f"starting two cities (ports +{args.offset}, +{args.offset + 1000})", file=sys.stderr)
    async with cities(specs, args.state_dir) as (ours, base):
        await asyncio.sleep(20.0)  # the demand prior and the first ETA model
        start = time.time()
        print(f"both up; the simulated city runs {minutes:g} min", file=sys.stderr)
        sims = [asyncio.create_task(_sim(c, args, minutes, extra))
                for c, (_, _, extra) in zip((ours, base), specs, strict=True)]  # fmt: skip
        while not all(s.done() for s in sims):
            await asyncio.wait(sims, timeout=60.0)
            (p1, d1), (p2, d2) = await asyncio.gather(_counts(ours, start), _counts(base, start))
            m = (time.time() - start) / 60
            print(f"minute {m:4.1f}/{minutes:g}: ours {p1} placed, {d1} delivered | "
                  f"baseline {p2} placed, {d2} delivered", file=sys.stderr)  # fmt: skip
        codes = [s.result() for s in sims]
        cut = time.time()
        until = start + placed_for * 60
        got = await asyncio.gather(
            figures(ours, start, until, cut), figures(base, start, until, cut)
        )
    ours_f, base_f = got
    keys = ("click_to_door_p90_min", "click_to_door_mean_min", "ready_to_door_p90_min",
            "ready_to_picked_mean_min", "driver_food_wait_mean_min",
            "drivers_busy_mean")  # fmt: skip
    return {
        "benchmark": "city",
        "when": now_iso(),
        "machine": machine(),
        "minutes": minutes,
        "placed_for_min": placed_for,
        "flat": args.flat,
        "seed": args.seed,
        "drivers": args.drivers,
        "orders_per_hour": args.orders_per_hour or None,
        "baseline_dispatch": {"name": args.baseline, "env": BASELINES[args.baseline]},
        "sim_exit_codes": codes,
        "baseline": base_f,
        "ours": ours_f,
        "ratio": {k: ratio(ours_f[k], base_f[k]) for k in keys},
    }


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=45.0, help="the simulated run (45)")
    p.add_argument("--placed-for", type=float, default=30.0,
                   help="figures of the orders placed in the first N minutes (30)")  # fmt: skip
    p.add_argument("--flat", action="store_true", help="200 orders an hour, every driver on")
    p.add_argument("--seed", type=int, default=7, help="the simulated city's seed (7)")
    p.add_argument("--drivers", type=int, default=600,
                   help="drivers of the city (600, as up; fewer: a scarce city)")  # fmt: skip
    p.add_argument("--orders-per-hour", type=float, default=0.0,
                   help="the demand's base rate (0: the simulator's default)")  # fmt: skip
    p.add_argument("--baseline", choices=sorted(BASELINES), default="before",
                   help="before: the dispatch before trips (default); at-once: the same with"
                   " road times and vehicles")  # fmt: skip
    p.add_argument("--state-dir", help="keep the cities' state here (default: removed)")
    p.add_argument("--offset", type=int, default=1000,
                   help="port offset of the first city; the second +1000 (1000)")  # fmt: skip
    args = p.parse_args()
    args.state_dir = Path(args.state_dir).resolve() if args.state_dir else None
    res = asyncio.run(run(args))
    rows = [
        (label, res["baseline"][k], res["ours"][k], res["ratio"].get(k))
        for label, k in (
            ("orders placed (first window)", "orders_placed"),
            ("delivered by the end", "orders_delivered"),
            ("click-to-door mean, min", "click_to_door_mean_min"),
            ("click-to-door p90, min", "click_to_door_p90_min"),
            ("placed -> ready (kitchens), min", "placed_to_ready_mean_min"),
            ("ready -> picked up, mean, min", "ready_to_picked_mean_min"),
            ("ready -> picked up, p90, min", "ready_to_picked_p90_min"),
            ("picked up -> delivered, min", "picked_to_delivered_mean_min"),
            ("ready -> door, mean, min", "ready_to_door_mean_min"),
            ("ready -> door, p90, min", "ready_to_door_p90_min"),
            ("driver's wait for the food, min", "driver_food_wait_mean_min"),
            ("driver at the counter, min", "driver_at_counter_mean_min"),
            ("pickups", "pickups"),
            ("drivers on a trip, mean", "drivers_busy_mean"),
        )
    ]
    title = (f"The live city, {res['minutes']:g} min ({'flat' if res['flat'] else 'its clock'}),"
             f" {res['drivers']} drivers, orders placed in the first"
             f" {res['placed_for_min']:g} min")  # fmt: skip
    print_table(title, ("figure", f"baseline ({args.baseline})", "ours (as up sets)",
                        "ours/baseline"),
                rows)  # fmt: skip
    if args.json:
        emit_json(res)
    return 0 if all(c == 0 for c in res["sim_exit_codes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
