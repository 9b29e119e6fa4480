"""What a request may take: the client's address and the rate limits it is charged (429 +
Retry-After), and the upstream deadline it asked for (capped).

The buckets themselves are :mod:`gateway._limits` (Redis, shared by every replica).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from collections.abc import Awaitable

import grpc
from aiohttp import web
from google.rpc import error_details_pb2

from foodmesh.core.auth import Principal
from gateway._config import GatewayConfig
from gateway._errors import GatewayError, bad_request, error_info
from gateway._limits import Decision, RateLimiter, parse_timeout
from gateway._routes import Route

__all__ = ["Admission"]

_TIMEOUT_HEADERS = ("X-Request-Timeout", "grpc-timeout")


class Admission:
    """Rate limits per client address, per caller and per address's failed requests
    (none without a ``limiter``), and the deadline of each call."""

    def __init__(self, config: GatewayConfig, limiter: RateLimiter | None) -> None:
        self.config = config
        self.limiter = limiter
        self._trusted = tuple(ipaddress.ip_network(n) for n in config.trusted_proxies)

    def client_ip(self, request: web.Request) -> str:
        """The client's address: the right-most ``X-Forwarded-For`` hop not a trusted proxy.

        Entries left of it were written by the client and prove nothing; without trust
        the peer's address is the client's.
        """
        peer = request.remote or "unknown"
        if not self._trusted and not self.config.trust_forwarded_for:
            return peer
        hops = [
            h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", ())).split(",")
        ]
        client = peer
        if self._trusted and not self._is_trusted(peer):
            return peer  # not through our proxies: whatever it says is its own
        for hop in reversed([h for h in hops if h]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client  # garbage: the last hop we could believe
            client = hop
            if not self._trusted or not self._is_trusted(hop):
                return client  # trust_forwarded_for alone: the peer is the one proxy
        return client

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    async def charge_failure(self, request: web.Request) -> None:
        """A request that failed before its caller was known: the address's failure bucket."""
        if self.limiter is None or self.config.fail_rate <= 0:
            return
        _limited(await self.limiter.take(
            "fail", self.client_ip(request),
            rate=self.config.fail_rate, burst=self.config.fail_burst,
        ))  # fmt: skip

    async def charge(self, principal: Principal, request: web.Request) -> None:
        """A request of a known caller: the address's bucket and the caller's."""
        if self.limiter is None:
            return
        checks: list[Awaitable[Decision]] = []
        if self.config.ip_rate > 0:
            checks.append(self.limiter.take(
                "ip", self.client_ip(request),
                rate=self.config.ip_rate, burst=self.config.ip_burst,
            ))  # fmt: skip
        if self.config.token_rate > 0:
            checks.append(self.limiter.take(
                "caller", f"{principal.role}:{principal.subject}",
                rate=self.config.token_rate, burst=self.config.token_burst,
            ))  # fmt: skip
        for decision in await asyncio.gather(*checks):
            _limited(decision)

    def deadline(self, route: Route, request: web.Request) -> float:
        """The upstream deadline: the client's header (capped) or the configured one."""
        cap = (
            self.config.stream_deadline_s if route.server_streaming else self.config.max_deadline_s
        )
        default = (
            self.config.stream_deadline_s if route.server_streaming else self.config.deadline_s
        )
        for name in _TIMEOUT_HEADERS:
            raw = request.headers.get(name)
            if raw is None:
                continue
            try:
                return min(parse_timeout(raw), cap)
            except ValueError as exc:
                raise bad_request(f"bad {name} header: {exc}", [(name, str(exc))]) from None
        return default


def _limited(decision: Decision) -> None:
    if decision.allowed:
        return
    wait = max(1, math.ceil(decision.retry_after_s))
    who = {"ip": "this client address", "fail": "this client address (failed requests)"}.get(
        decision.scope, "this caller"
    )
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromNanoseconds(int(decision.retry_after_s * 1e9))
    raise GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"too many requests from {who} (limit {decision.limit:g}/s); retry in {wait} s",
        [error_info("RATE_LIMITED", scope=decision.scope, limit=f"{decision.limit:g}"), retry],
        headers={"Retry-After": str(wait)},
    )
