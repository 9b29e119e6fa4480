"""Limits of the gateway: token-bucket rate limits in Redis, and the client's deadline header.

A bucket is one Redis hash, changed by one Lua script (atomic, one key per call), so
every gateway replica shares it. Its key carries a hash tag around the whole bucket
name (``gw:rl:{ip:203.0.113.9}``): a script touches a single key, so Redis Cluster
routes it to the one shard holding it. The script reads the server's clock, so
replicas with skewed clocks agree. If Redis is down or slow the request passes
(fail open, one log line every ``_LOG_EVERY_S``): a broken limiter must not take the
API down with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from foodmesh.core.redis import redis_client

__all__ = ["Decision", "RateLimiter", "bucket_key",
           "parse_timeout"]  # fmt: skip

log = logging.getLogger("foodmesh.gateway.limits")

# KEYS[1] the bucket; ARGV rate (tokens/s), burst (capacity). Returns
# {allowed 0/1, seconds until a token is back (string), tokens left (string)}.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(s[1])
local at = tonumber(s[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait), tostring(tokens)}
"""
_LOG_EVERY_S = 10.0
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIMEOUT = re.compile(r"(\d{1,8}(?:\.\d{1,9})?)([HMSmun]?)")


def bucket_key(kind: str, who: str, namespace: str = "") -> str:
    """The Redis key of one bucket; the hash tag is the whole bucket name."""
    if len(who) > 64 or not who.isprintable() or "}" in who:
        who = hashlib.sha256(who.encode()).hexdigest()[:32]
    return f"gw:rl:{{{namespace}{kind}:{who}}}"


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's answer from a bucket."""

    allowed: bool
    #: Seconds until the next request would pass (0 when allowed).
    retry_after_s: float = 0.0
    scope: str = ""
    limit: float = 0.0


_PASS = Decision(True)


class RateLimiter:
    """Token buckets per client IP and per authenticated caller, shared through Redis."""

    def __init__(self, url: str, *, timeout_s: float = 0.25, namespace: str = "") -> None:
        self.url = url
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.redis = redis_client(
            url, name="gateway", connect_timeout=timeout_s, pool_timeout_s=timeout_s
        )
        self._script = self.redis.register_script(_TOKEN_BUCKET)
        self._logged_at = -math.inf
        self.failures = 0

    async def take(self, kind: str, who: str, *, rate: float, burst: int) -> Decision:
        """Takes a token from the bucket ``kind:who``; passes when the limit is off or Redis is."""
        if rate <= 0 or burst <= 0:
            return _PASS
        try:
            async with asyncio.timeout(self.timeout_s):
                allowed, wait, _left = await self._script(
                    keys=[bucket_key(kind, who, self.namespace)], args=[rate, burst]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            now = time.monotonic()
            if now - self._logged_at >= _LOG_EVERY_S:
                self._logged_at = now
                log.warning("rate limits off (failing open): Redis at %s: %s (%d failures so far)",
                            self.url, exc or type(exc).__name__, self.failures)  # fmt: skip
            return _PASS
        if int(allowed):
            return _PASS
        return Decision(False, float(wait), kind, rate)

    async def close(self) -> None:
        await self.redis.aclose()


def parse_timeout(raw: str) -> float:
    """Seconds of a deadline header: ``2.5`` (seconds) or gRPC's ``500m``/``2S``/``1M``.

    Raises ValueError saying what is wrong.
    """
    m = _TIMEOUT.fullmatch(raw.strip())
    if m is None:
        raise ValueError(
            f"{raw!r} is not a timeout: seconds (2.5) or a number with a gRPC unit "
            "(H, M, S, m, u, n: 500m)"
        )
    value = float(m.group(1)) * _UNITS[m.group(2) or "S"]
    if value <= 0:
        raise ValueError(f"{raw!r}: a timeout must be positive")
    return value
