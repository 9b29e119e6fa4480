"""``foodmesh seed``: writes a city into the running services, through their public RPCs.

Everything goes through the services' own contracts (UpsertRestaurant, UpsertMenu,
UpsertDriver) with a service token, as an operator's import tool would: the
services validate it, index it and announce it exactly as they would any other
change. Upserts are idempotent by id, so seeding twice leaves the same city.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from clients import CatalogClient, ClientOptions, DispatchClient
from foodmesh.core.auth import ServiceCredentials, auth_settings
from foodmesh.core.progress import Progress
from foodmesh.sim.city import City
from foodmesh.v1 import catalog_pb2, dispatch_pb2

__all__ = ["SeedResult", "seed_city", "service_credentials", "service_metadata"]

_log = logging.getLogger("foodmesh.sim.seed")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SeedResult:
    restaurants: int
    menus: int
    drivers: int
    #: Why drivers were not written (no Dispatch service), or "".
    skipped_drivers: str = ""


def service_credentials(subject: str = "seed") -> ServiceCredentials:
    """A short-lived service credential (refreshed per call) under the configured service key.

    Raises :class:`foodmesh.core.auth.AuthConfigError` without a secret outside dev mode.
    """
    settings = auth_settings(process=subject, service=True)
    return ServiceCredentials(settings.service_secret, subject=subject)


def service_metadata(subject: str = "seed") -> tuple[tuple[str, str], ...]:
    """A service token as call metadata (valid 10 minutes; prefer :func:`service_credentials`)."""
    return service_credentials(subject).metadata()


async def _each(
    items: Iterable[T], fn: Callable[[T], Awaitable[Any]], *, concurrency: int, progress: Progress
) -> None:
    queue = list(items)
    queue.reverse()

    async def worker() -> None:
        while queue:
            await fn(queue.pop())
            progress.add()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    progress.finish()


async def seed_city(
    city: City,
    *,
    catalog_target: str,
    dispatch_target: str | None = None,
    concurrency: int = 16,
) -> SeedResult:
    """Upserts the city's restaurants and menus (and drivers, given a Dispatch target)."""
    options = ClientOptions(credentials=service_credentials().metadata, deadline_s=15.0)
    catalog = CatalogClient(catalog_target, options=options)
    try:

        async def restaurant(spec: Any) -> None:
            await catalog.upsert_restaurant(
                catalog_pb2.UpsertRestaurantRequest(restaurant=spec.restaurant)
            )
            await catalog.upsert_menu(
                catalog_pb2.UpsertMenuRequest(
                    restaurant_id=spec.restaurant_id, categories=list(spec.menu)
                )
            )

        await _each(
            city.restaurants,
            restaurant,
            concurrency=concurrency,
            progress=Progress("restaurants and menus", total=len(city.restaurants)),
        )
    finally:
        await catalog.close()
    n = len(city.restaurants)
    if dispatch_target is None or not city.drivers:
        return SeedResult(n, n, 0, "no Dispatch service" if city.drivers else "")
    dispatch = DispatchClient(dispatch_target, options=options)
    try:

        async def driver(spec: Any) -> None:
            await dispatch.upsert_driver(dispatch_pb2.UpsertDriverRequest(driver=spec.driver))

        try:
            await _each(
                city.drivers,
                driver,
                concurrency=concurrency,
                progress=Progress("drivers", total=len(city.drivers)),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                raise
            _log.warning("drivers not seeded: Dispatch answered %s", exc.code().name)
            return SeedResult(n, n, 0, f"Dispatch {exc.code().name}")
    finally:
        await dispatch.close()
    return SeedResult(n, n, len(city.drivers))
