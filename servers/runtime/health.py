"""Health that tells the truth: SERVING only while every dependency answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from foodmesh.core.tasks import stop_tasks

__all__ = ["Check", "HealthReporter"]

Check = Callable[[], Awaitable[None]]
_log = logging.getLogger("foodmesh.health")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


#: The health name that is SERVING whenever the process runs (for liveness probes).
LIVENESS = "liveness"


class HealthReporter:
    """Runs the dependency checks on an interval and sets the standard health service.

    The overall status ("") and every service name move together: a service is
    only as healthy as the dependencies it needs.
    """

    def __init__(
        self,
        servicer: HealthServicer,
        services: tuple[str, ...],
        checks: Mapping[str, Check],
        *,
        interval_s: float = 2.0,
        check_timeout_s: float = 1.0,
    ) -> None:
        self.servicer = servicer
        self.services = ("", *services)
        self.checks = dict(checks)
        self.interval_s = interval_s
        self.check_timeout_s = check_timeout_s
        self.serving = False
        self.failing: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._shutting_down = False
        self._first = asyncio.Event()

    async def _set(self, serving: bool) -> None:
        for name in self.services:
            await self.servicer.set(name, _SERVING if serving else _NOT_SERVING)

    async def check_once(self) -> bool:
        """Runs every check concurrently; updates health; True when all answered."""
        names = list(self.checks)

        async def run(name: str) -> str | None:
            try:
                async with asyncio.timeout(self.check_timeout_s):
                    await self.checks[name]()
            except Exception as exc:  # a failed check is data, not a crash
                return f"{type(exc).__name__}: {exc}".strip()[:300]
            return None

        results = await asyncio.gather(*(run(n) for n in names))
        failing = {n: r for n, r in zip(names, results, strict=True) if r is not None}
        if failing != self.failing:
            for name, why in failing.items():
                _log.warning("dependency %s is not answering: %s", name, why)
            for name in set(self.failing) - set(failing):
                _log.info("dependency %s answers again", name)
        self.failing = failing
        healthy = not failing
        if self._shutting_down:
            return healthy
        if healthy != self.serving or not self._first.is_set():
            self.serving = healthy
            await self._set(healthy)
        self._first.set()
        return healthy

    async def _loop(self) -> None:
        while not self._shutting_down:
            await self.check_once()
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        # "liveness": SERVING while the process answers at all (Kubernetes' liveness
        # probe); the other names follow the dependencies (readiness).
        await self.servicer.set(LIVENESS, _SERVING)
        await self._set(False)
        self._task = asyncio.create_task(self._loop(), name="health-checks")

    async def wait_serving(self, within_s: float) -> bool:
        """Waits until all dependencies answer, at most ``within_s`` seconds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within_s
        while not self.serving:
            if loop.time() >= end:
                return False
            await asyncio.sleep(min(0.05, self.interval_s))
        return True

    async def shutdown(self) -> None:
        """NOT_SERVING for good: load balancers stop sending new calls."""
        self._shutting_down = True
        self.serving = False
        if self._task is not None:
            await stop_tasks([self._task])
        await self.servicer.enter_graceful_shutdown()
