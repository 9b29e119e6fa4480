"""Redis for the ETA service: the 5-minute route cache and the shared road overrides.

Routes are cached for ``ttl_s`` (the design's 5 minutes) under the snapped endpoints
(to ~1 m), the traffic bucket (weekday and hour: departures in one bucket share
multipliers) and the version of the overrides in force, so a closure never serves a
route that crosses it. Overrides live in Redis too, so every replica applies the
same ones; each polls their version. Each process keeps the routes it used last in
memory too (a Redis round trip is most of a cached route's cost).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from cachetools import TTLCache

from foodmesh.core.redis import Keys
from foodmesh.roads import Step
from servers.eta.routing import RouteResult

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
    """Routes by key in two tiers: this process's memory, then Redis (shared by replicas).

    A key names snapped endpoints, the traffic bucket and the overrides' version, so an
    entry never goes stale while it lives: the local tier (``local_size`` entries, least
    recently used out first, at most ``local_ttl_s``) only saves the Redis round trip.
    """

    redis: Callable[[], aioredis.Redis]
    keys: Keys
    ttl_s: float = 300.0
    local_size: int = 4096
    local_ttl_s: float = 60.0
    hits: int = 0
    misses: int = 0
    _local: TTLCache[str, RouteResult] = field(init=False)

    def __post_init__(self) -> None:
        ttl = max(0.0, min(self.ttl_s, self.local_ttl_s))
        self._local = TTLCache(max(self.local_size, 1), ttl, timer=time.monotonic)

    def _remember(self, key: str, route: RouteResult) -> None:
        if self.local_size > 0:
            self._local[key] = route

    async def get_or_compute(
        self, key: str, compute: Callable[[], Awaitable[RouteResult]]
    ) -> tuple[RouteResult, bool]:
        """The cached route under ``key``, else ``compute()`` stored for ``ttl_s``.

        A cache that does not answer costs a route computation, never the request.
        """
        held = self._local.get(key)
        if held is not None:
            self.hits += 1
            return held, True
        r = self.redis()
        try:
            raw = await r.get(key)
        except Exception:  # Redis down: route without the cache
            raw = None
        if raw is not None:
            try:
                route = _load(bytes(raw) if not isinstance(raw, str) else raw.encode())
            except (ValueError, KeyError, TypeError):
                pass  # an entry from another version: recompute and overwrite it
            else:
                self.hits += 1
                self._remember(key, route)
                return route, True
        self.misses += 1
        route = await compute()
        self._remember(key, route)
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
