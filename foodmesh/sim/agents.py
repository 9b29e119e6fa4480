"""What every simulated agent shares: the settings, live counters, tokens and the HTTP caller.

Customers and kitchens are mobile apps: they speak only the public HTTP API of the
gateway with bearer tokens of their own role and id. Drivers speak gRPC streams
(see :mod:`foodmesh.sim.drivers`). Every call has a deadline; every answer is
counted by kind, so the progress line and the final report can say what the
platform did under the load, and bad actors' probes are scored as defended
(a 4xx, INVALID_ARGUMENT, a rejection) or breached (a 5xx, INTERNAL, a dead stream).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.core.services import local_target

__all__ = ["Gateway", "HttpResult", "SimConfig", "Stats", "Tokens"]

_log = logging.getLogger("foodmesh.sim")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How big, how busy, how long, and how the simulated people behave."""

    gateway: str = "http://127.0.0.1:8080"
    location_target: str = local_target("location")
    #: Dispatch's address; None runs drivers without work sessions (fixes only).
    dispatch_target: str | None = local_target("dispatch")
    seed: int = 7
    restaurants: int = 500
    drivers: int = 600
    customers: int = 2000
    #: The week's mean rate; the demand curve shapes it by the hour unless ``flat_demand``.
    orders_per_hour: float = 200.0
    flat_demand: bool = False
    #: Seconds to run; 0 runs until stopped.
    duration_s: float = 600.0
    #: Bring drivers online on their shifts (False: every driver works now).
    shifts: bool = True
    #: Share of drivers who work around the clock whatever their shift (night owls).
    always_on_share: float = 0.1
    #: Seconds over which the drivers already on shift come online at the start.
    ramp_s: float = 30.0
    #: Multiplies sampled kitchen times (confirm delay and prep); below 1 for short tests.
    prep_scale: float = 1.0
    #: Multiplies travel times (below 1 drives faster than the traffic would allow).
    travel_scale: float = 1.0
    #: Seconds at a stop (parking, handing over), before ``travel_scale``.
    stop_s: float = 120.0
    #: Share of payments made with the sandbox's declined card.
    declined_share: float = 0.02
    #: Share of restaurants that confirm orders automatically (half of them only at meals).
    auto_confirm_share: float = 0.3
    #: Share of restaurants whose kitchen never confirms: their orders time out.
    absent_kitchen_share: float = 0.01
    #: Share of orders the customer cancels before the kitchen confirms.
    cancel_share: float = 0.01
    #: Share of delivered orders the customer rates.
    rate_share: float = 0.4
    #: Share of drivers who drop off the network for a while during a delivery.
    silent_share: float = 0.03
    #: Share of customers and drivers who misbehave on purpose (malformed input, double taps).
    bad_share: float = 0.02
    #: Seconds between a customer's looks at their order (polling: an app on SSE would not).
    #: 6,000 orders an hour keep ~3,000 in flight: 50 requests a second at 60 s.
    watch_every_s: float = 60.0
    #: Use the road graph (foodmesh.roads) when it exists; False: straight lines.
    roads: bool = True
    auth_secret: str = DEV_SECRET
    http_timeout_s: float = 10.0
    #: Seconds between progress lines (a tty redraws more often).
    progress_every_s: float = 5.0

    def problems(self) -> list[tuple[str, str]]:
        """``(field, why)`` for each setting out of range; empty when the config is usable."""
        out: list[tuple[str, str]] = []
        if not self.gateway.startswith(("http://", "https://")):
            out.append(("gateway", "must be an http:// or https:// URL"))
        for name in ("restaurants", "customers"):
            if getattr(self, name) < 1:
                out.append((name, "must be at least 1"))
        if self.drivers < 0:
            out.append(("drivers", "must not be negative"))
        if not (self.orders_per_hour >= 0) or self.orders_per_hour > 1_000_000:
            out.append(("orders_per_hour", "must be within 0 to 1,000,000"))
        if not (self.duration_s >= 0):
            out.append(("duration_s", "must not be negative (0 runs until stopped)"))
        for name in ("prep_scale", "travel_scale"):
            v = getattr(self, name)
            if not (0 < v <= 100):
                out.append((name, "must be within (0, 100]"))
        for name in ("declined_share", "cancel_share", "rate_share", "silent_share", "bad_share",
                     "always_on_share", "auto_confirm_share", "absent_kitchen_share"):  # fmt: skip
            v = getattr(self, name)
            if not (0 <= v <= 1):
                out.append((name, "must be a share within [0, 1]"))
        if self.auto_confirm_share + self.absent_kitchen_share > 1:
            out.append(("auto_confirm_share", "with absent_kitchen_share, at most 1"))
        if not (self.stop_s >= 0):
            out.append(("stop_s", "must not be negative"))
        if not (self.watch_every_s > 0):
            out.append(("watch_every_s", "must be positive"))
        return out


@dataclass(slots=True)
class Stats:
    """Live counters of a simulation (one event loop: no locks needed)."""

    started: float = field(default_factory=time.monotonic)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Unexpected answers by kind: http_5xx, timeout, grpc_INTERNAL, ...
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Bad actors' probes the platform refused properly, by probe.
    defended: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Bad actors' probes that got a 5xx, INTERNAL or a broken stream, by probe.
    breached: collections.Counter[str] = field(default_factory=collections.Counter)
    drivers_online: int = 0
    drivers_busy: int = 0
    #: Told of every answered API call and location ack, for a soak's record:
    #: ``(method, path, status, seconds, body)``; status 0 when no answer came.
    observe: Callable[[str, str, int, float, dict[str, Any]], None] | None = None

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def as_json(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed(), 3),
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "defended": dict(self.defended),
            "breached": dict(self.breached),
            "drivers_online": self.drivers_online,
        }


class Tokens:
    """Bearer tokens per (role, subject), minted once and renewed before they lapse."""

    def __init__(self, secret: str, *, ttl_s: float = 6 * 3600.0) -> None:
        self._secret = secret
        self._ttl = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}

    def get(self, role: str, subject: str) -> str:
        now = time.time()
        hit = self._cache.get((role, subject))
        if hit is not None and hit[0] > now + 60:
            return hit[1]
        token = mint_token(self._secret, subject=subject, role=role, ttl_s=self._ttl)
        self._cache[(role, subject)] = (now + self._ttl, token)
        return token

    def header(self, role: str, subject: str) -> str:
        return f"Bearer {self.get(role, subject)}"


@dataclass(frozen=True, slots=True)
class HttpResult:
    """An answer of the gateway: ``status`` 0 when none came (``error`` says why)."""

    status: int
    body: dict[str, Any]
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def violations(self) -> dict[str, str]:
        """BadRequest field violations of an error body."""
        out: dict[str, str] = {}
        for d in self.body.get("details", []) or []:
            if isinstance(d, dict) and d.get("@type", "").endswith("google.rpc.BadRequest"):
                for v in d.get("field_violations", []):
                    out[str(v.get("field", ""))] = str(v.get("description", ""))
        return out


class Gateway:
    """The public HTTP API, called as an app would: bearer token, deadline, JSON."""

    def __init__(
        self,
        base_url: str,
        *,
        tokens: Tokens,
        stats: Stats,
        timeout_s: float = 10.0,
        connections: int = 200,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.stats = stats
        self.timeout_s = timeout_s
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._logged_5xx = 0

    async def __aenter__(self) -> Gateway:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections),
            headers={"User-Agent": "foodmesh-sim"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str,
        subject: str,
        body: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        retry_throttled: int = 3,
        count_errors: bool = True,
    ) -> HttpResult:
        """One request; 429s wait their Retry-After (a few times); never raises for HTTP."""
        assert self._session is not None, "use `async with Gateway(...)`"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        hdrs = {
            "Authorization": self.tokens.header(role, subject),
            # the server's share of the deadline, in grpc-timeout's form
            "X-Request-Timeout": f"{max(1, int(timeout * 1000))}m",
            **(headers or {}),
        }
        data = None if body is None else json.dumps(body)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        observe = self.stats.observe
        t0 = time.perf_counter()
        for attempt in range(retry_throttled + 1):
            try:
                async with self._session.request(
                    method,
                    self.base_url + path,
                    data=data,
                    params=params,
                    headers=hdrs,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:
                    text = await resp.text()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After", "1")
            except TimeoutError:
                if count_errors:
                    self.stats.error("timeout")
                if observe is not None:
                    observe(method, path, 0, time.perf_counter() - t0, {})
                return HttpResult(0, {}, "timeout")
            except aiohttp.ClientError as exc:
                if count_errors:
                    self.stats.error("connection")
                if observe is not None:
                    observe(method, path, 0, time.perf_counter() - t0, {})
                return HttpResult(0, {}, f"connection: {type(exc).__name__}")
            try:
                parsed = json.loads(text) if text else {}
            except ValueError:
                parsed = {"raw": text[:200]}
            if not isinstance(parsed, dict):
                parsed = {"value": parsed}
            if status == 429 and attempt < retry_throttled:
                self.stats.inc("throttled")
                try:
                    wait = min(10.0, max(0.1, float(retry_after)))
                except ValueError:
                    wait = 1.0
                await asyncio.sleep(wait)
                continue
            if status >= 500 and count_errors:
                self.stats.error(f"http_{status}")
                if self._logged_5xx < 20:
                    self._logged_5xx += 1
                    _log.warning("%s %s answered %d: %s", method, path, status, text[:300])
            elif status == 429 and count_errors:
                self.stats.error("http_429")
            if observe is not None:
                observe(method, path, status, time.perf_counter() - t0, parsed)
            return HttpResult(status, parsed)
        raise AssertionError("unreachable")  # pragma: no cover
