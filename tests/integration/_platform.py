"""The platform a simulated city runs on, for the simulator's and the browser's tests.

Real Catalog, Order, Location and Dispatch services (each on a free port) and the
real gateway in front of them, on the test's PostgreSQL, Redis and NATS; a small
city seeded into them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from clients import OrderClient
from foodmesh.sim.city import CENTER, City, build_city
from foodmesh.sim.demand import distance_m
from foodmesh.sim.seed import seed_city
from tests.integration._gateway import gateway
from tests.integration._location import location_service
from tests.integration._order import order_mesh, token

NOWHERE = "127.0.0.1:1"


def small_city(*, always_open: int = 5) -> City:
    """20 restaurants and 10 drivers; customers within 2 km of the centre, where 5 (or
    ``always_open``) never close."""
    big = build_city(seed=11, restaurants=20, drivers=10, customers=400, always_open=always_open)
    near = tuple(c for c in big.customers if distance_m(CENTER, (c.address.lat, c.address.lon))
                 < 2000)[:60]  # fmt: skip
    return dataclasses.replace(big, customers=near)


@dataclass(slots=True)
class Platform:
    gateway: str
    location: str
    order: str
    catalog: str
    dispatch: str | None = None


@contextlib.asynccontextmanager
async def platform(
    *,
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    state_dir: Path,
    with_dispatch: bool = False,
    city: City | None = None,
    order_extra: dict[str, str] | None = None,
    dispatch_extra: dict[str, str] | None = None,
) -> AsyncIterator[Platform]:
    """The services, the gateway and ``city`` (default :func:`small_city`) seeded;
    ``order_extra`` and ``dispatch_extra`` add to those services' settings."""
    city = city or small_city()
    common = dict(redis_url=redis_url, nats_url=nats_url, namespace=namespace)
    async with contextlib.AsyncExitStack() as stack:
        mesh = await stack.enter_async_context(
            order_mesh(pg_url=pg_url, seed=False, extra=order_extra, **common)
        )  # type: ignore[arg-type]
        feed = await stack.enter_async_context(
            OrderClient(mesh.order.target, options=token("service", "location"))
        )
        loc = await stack.enter_async_context(location_service(
            pg_url=pg_url, state_dir=state_dir, orders=feed,
            extra={"FOODMESH_LOCATION_DISPATCH_TARGET": NOWHERE,
                   "FOODMESH_LOCATION_ETA_TARGET": NOWHERE}, **common,  # type: ignore[arg-type]
        ))  # fmt: skip
        targets = {"catalog": mesh.catalog.target, "order": mesh.order.target,
                   "location": loc.target}  # fmt: skip
        dispatch_target = None
        if with_dispatch:
            from servers import dispatch
            from servers.runtime.migrate import load_migrations, migrate
            from servers.runtime.serve import run_service
            from tests.integration._dispatch import dispatch_settings

            assert dispatch.SPEC.migrations is not None
            await migrate(pg_url, service="dispatch",
                          migrations=load_migrations(dispatch.SPEC.migrations))  # fmt: skip
            dsp = await stack.enter_async_context(run_service(dispatch.SPEC, dispatch_settings(
                pg_url=pg_url, nats_url=nats_url, namespace=namespace, location=loc.target,
                order=mesh.order.target, extra=dispatch_extra)))  # fmt: skip
            dispatch_target = targets["dispatch"] = dsp.target
        http = await stack.enter_async_context(gateway(targets))
        await seed_city(city, catalog_target=mesh.catalog.target, dispatch_target=dispatch_target)
        yield Platform(http.base, loc.target, mesh.order.target, mesh.catalog.target,
                       dispatch_target)  # fmt: skip


__all__ = ["NOWHERE", "Platform", "platform", "small_city"]
