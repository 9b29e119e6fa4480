"""How fast `foodmesh infra up` brings real PostgreSQL, Redis and NATS to ready.

Cold: a fresh state directory (PostgreSQL's initdb included). Warm: a restart on
existing data. Each is measured for the three servers started together (what
`infra up` does) and for each server alone; the baseline is the three started
one after the other, so the ratio shows what starting them at once buys.
Target (issue 3): all three ready in under 3 s.

    python benchmarks/infra.py            # 5 rounds
    python benchmarks/infra.py --quick --json
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Progress, emit_json, machine, parser, print_table  # noqa: E402
from foodmesh import infra  # noqa: E402
from foodmesh.infra._servers import NatsServer, PostgresServer, RedisServer  # noqa: E402

NO_URLS: dict[str, str] = {}


async def _together(state: Path) -> float:
    t0 = time.perf_counter()
    await infra.up(state, durable=False, env=NO_URLS)
    took = time.perf_counter() - t0
    await infra.down(state)
    return took


async def _alone(state: Path, kind: type[PostgresServer | RedisServer | NatsServer]) -> float:
    server = kind(state, durable=False)
    t0 = time.perf_counter()
    await server.ensure(ready_within=30)
    took = time.perf_counter() - t0
    await asyncio.to_thread(server.stop)
    return took


def _remove_all(root: Path) -> None:
    for d in root.iterdir():
        infra.remove_state(d)
    shutil.rmtree(root, ignore_errors=True)


async def run(rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="foodmesh-bench-infra-"))
    progress = Progress("infra rounds", total=rounds)
    times: dict[str, list[float]] = {}

    def add(key: str, v: float) -> None:
        times.setdefault(key, []).append(v)

    try:
        for i in range(rounds):
            state = root / f"together-{i}"
            add("cold_together", await _together(state))
            add("warm_together", await _together(state))
            for kind in (PostgresServer, RedisServer, NatsServer):
                alone = root / f"alone-{i}"
                add(f"cold_{kind.name}", await _alone(alone, kind))
                add(f"warm_{kind.name}", await _alone(alone, kind))
            progress.add()
        progress.finish()
    finally:
        for d in await asyncio.to_thread(lambda: sorted(root.iterdir())):
            await infra.down(d)  # also after a failed round: no server outlives the run
        await asyncio.to_thread(_remove_all, root)
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    worst = {k: round(max(v), 3) for k, v in times.items()}
    seq = {
        phase: round(sum(med[f"{phase}_{n}"] for n in ("postgres", "redis", "nats")), 3)
        for phase in ("cold", "warm")
    }
    return {
        "benchmark": "infra",
        "machine": machine(),
        "rounds": rounds,
        "raw": {"cold_sequential_s": seq["cold"], "warm_sequential_s": seq["warm"]},
        "ours": {
            "cold_together_s": med["cold_together"],
            "warm_together_s": med["warm_together"],
            "cold_together_worst_s": worst["cold_together"],
        },
        "per_server_median_s": {k: v for k, v in med.items() if "together" not in k},
        "ratio": {
            "cold_together_over_sequential": round(med["cold_together"] / seq["cold"], 3),
            "warm_together_over_sequential": round(med["warm_together"] / seq["warm"], 3),
        },
        "target_s": 3.0,
    }


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--rounds", type=int)
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    result = asyncio.run(run(rounds))
    if args.json:
        emit_json(result)
        return 0
    m = result["per_server_median_s"]
    ours, raw = result["ours"], result["raw"]
    rows = [
        ["all three at once (ours)", ours["cold_together_s"], ours["warm_together_s"]],
        ["one after another (baseline)", raw["cold_sequential_s"], raw["warm_sequential_s"]],
        *([f"  {n} alone", m[f"cold_{n}"], m[f"warm_{n}"]] for n in ("postgres", "redis", "nats")),
    ]  # fmt: skip
    print_table(f"infra up to ready, median of {rounds} (target < 3 s)",
                ["start", "cold s", "warm s"], rows)  # fmt: skip
    print(f"worst cold start: {result['ours']['cold_together_worst_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
