"""The Dispatch service's PostgreSQL (schema ``fleet``): the only package here that runs SQL.

One store per use case, all on one pool (:class:`Fleet` holds them): drivers'
profiles, their sessions, offers, assignments, figures, routes and the calls owed
to Order. Every change is one transaction that moves the rows it must (offer,
assignment, driver, stats), records what the Order service must be told
(``order_calls``) and the event announcing it (``outbox``) together. Each step is a
conditional ``UPDATE ... WHERE status = <expected>``: a step that lost a race changes
nothing and is reported as such, and the partial unique indexes of the migration (one
open offer per driver and per order, one active order per driver) turn any double
offer or double assignment into a constraint error that rolls the whole step back.
Rows come back as the records of ``model.py`` through psycopg's row factories.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from servers.dispatch.store._sql import Announce, ts
from servers.dispatch.store.assignments import AssignmentStore, NewOrder
from servers.dispatch.store.calls import OrderCalls
from servers.dispatch.store.drivers import DriverStore
from servers.dispatch.store.offers import OfferStore
from servers.dispatch.store.routes import RouteLog
from servers.dispatch.store.sessions import SessionStore
from servers.dispatch.store.stats import StatsStore

__all__ = [
    "Announce",
    "AssignmentStore",
    "DriverStore",
    "Fleet",
    "NewOrder",
    "OfferStore",
    "OrderCalls",
    "RouteLog",
    "SessionStore",
    "StatsStore",
    "ts",
]


@dataclass(frozen=True, slots=True)
class Fleet:
    """The fleet's stores, sharing one pool."""

    drivers: DriverStore
    sessions: SessionStore
    offers: OfferStore
    assignments: AssignmentStore
    stats: StatsStore
    routes: RouteLog
    calls: OrderCalls

    @classmethod
    def on(cls, pool: AsyncConnectionPool, announce: Announce) -> Fleet:
        return cls(
            drivers=DriverStore(pool),
            sessions=SessionStore(pool, announce),
            offers=OfferStore(pool, announce),
            assignments=AssignmentStore(pool, announce),
            stats=StatsStore(pool),
            routes=RouteLog(pool),
            calls=OrderCalls(pool),
        )
