"""Redis for the ETA service: the 5-minute route cache and the shared road overrides.

Routes are cached for ``ttl_s`` (the seed's 5 minutes) under the snapped endpoints
(to ~1 m), the traffic bucket (weekday and hour: departures in one bucket share
multipliers) and the version of the overrides in force, so a closure never serves a
route that crosses it. Overrides live in Redis too, so every replica applies the
same ones; each polls their version.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from foodmesh.roads import Step
from servers.eta.routing import RouteResult
from servers.runtime.redis import Keys

__all__ = ["OverrideStore", "RouteCache", "route_key"]


def route_key(
    keys: Keys,
    origin: tuple[float, float],
    destination: tuple[float, float],
    bucket: tuple[int, int],
    overrides_version: str,
) -> str:
    o = f"{origin[0]:.5f},{origin[1]:.5f}"
    d = f"{destination[0]:.5f},{destination[1]:.5f}"
    return keys.key("eta", "route", o, d, f"{bucket[0]}-{bucket[1]}", overrides_version)


def _dump(r: RouteResult) -> bytes:
    return json.dumps(
        {
            "d": r.distance_m,
            "t": r.duration_s,
            "f": r.free_flow_s,
            "p": r.polyline,
            "x": [list(p) for p in r.path],
            "s": [
                [s.maneuver, s.street, s.distance_m, s.duration_s, s.lat, s.lon] for s in r.steps
            ],  # fmt: skip
            "l": r.straight_line,
        },
        separators=(",", ":"),
    ).encode()


def _load(raw: bytes) -> RouteResult:
    v = json.loads(raw)
    return RouteResult(
        distance_m=float(v["d"]),
        duration_s=float(v["t"]),
        free_flow_s=float(v["f"]),
        polyline=str(v["p"]),
        path=tuple((float(a), float(b)) for a, b in v["x"]),
        steps=tuple(
            Step(str(m), str(n), float(d), float(t), float(a), float(b))
            for m, n, d, t, a, b in v["s"]
        ),  # fmt: skip
        straight_line=bool(v["l"]),
    )


@dataclass(slots=True)
class RouteCache:
    redis: Callable[[], aioredis.Redis]
    keys: Keys
    ttl_s: float = 300.0
    hits: int = 0
    misses: int = 0

    async def get_or_compute(
        self, key: str, compute: Callable[[], Awaitable[RouteResult]]
    ) -> tuple[RouteResult, bool]:
        """The cached route under ``key``, else ``compute()`` stored for ``ttl_s``.

        A cache that does not answer costs a route computation, never the request.
        """
        r = self.redis()
        try:
            raw = await r.get(key)
        except Exception:  # Redis down: route without the cache
            raw = None
        if raw is not None:
            try:
                self.hits += 1
                return _load(bytes(raw) if not isinstance(raw, str) else raw.encode()), True
            except (ValueError, KeyError, TypeError):
                pass  # an entry from another version: recompute and overwrite it
        self.misses += 1
        route = await compute()
        try:
            await r.set(key, _dump(route), px=int(self.ttl_s * 1000))
        except Exception:  # the answer stands without the cache
            pass
        return route, False


@dataclass(slots=True)
class OverrideStore:
    """The overrides in force, shared by replicas: a request's bytes under a version."""

    redis: Callable[[], aioredis.Redis]
    keys: Keys

    @property
    def key(self) -> str:
        return self.keys.key("eta", "overrides")

    async def put(self, version: str, payload: bytes) -> None:
        await self.redis().hset(self.key, mapping={"version": version, "payload": payload})

    async def version(self) -> str | None:
        v = await self.redis().hget(self.key, "version")
        return v.decode() if isinstance(v, bytes) else v

    async def get(self) -> tuple[str, bytes] | None:
        v, p = await self.redis().hmget(self.key, ["version", "payload"])
        if v is None or p is None:
            return None
        return (v.decode() if isinstance(v, bytes) else str(v)), (
            p if isinstance(p, bytes) else str(p).encode()
        )
