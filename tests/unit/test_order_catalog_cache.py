"""The Order service's memory of Catalog answers: shared, short-lived, failures forgotten."""

from __future__ import annotations

import asyncio

import pytest

from clients.catalog import CachedCatalog
from foodmesh.v1 import catalog_pb2, common_pb2
from servers.runtime.cache import TtlCache


class FakeCatalog:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def _answer(self, what: str) -> None:
        self.calls.append(what)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("catalog away")

    async def get_restaurant(
        self, request: catalog_pb2.GetRestaurantRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.GetRestaurantResponse:
        await self._answer("restaurant")
        return catalog_pb2.GetRestaurantResponse(
            restaurant=catalog_pb2.Restaurant(restaurant_id=request.restaurant_id)
        )

    async def get_menu(
        self, request: catalog_pb2.GetMenuRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.GetMenuResponse:
        await self._answer("menu")
        return catalog_pb2.GetMenuResponse()

    async def check_delivery(
        self, request: catalog_pb2.CheckDeliveryRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.CheckDeliveryResponse:
        await self._answer("delivery")
        return catalog_pb2.CheckDeliveryResponse(deliverable=request.location.lat > 0)

    async def add_review(
        self, request: catalog_pb2.AddReviewRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.AddReviewResponse:
        await self._answer("review")
        return catalog_pb2.AddReviewResponse()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _where(lat: float) -> catalog_pb2.CheckDeliveryRequest:
    return catalog_pb2.CheckDeliveryRequest(
        restaurant_id="rest_1", location=common_pb2.LatLng(lat=lat, lon=1.0)
    )


async def test_answers_are_reused_until_they_expire() -> None:
    inner, clock = FakeCatalog(), Clock()
    cache = CachedCatalog(inner, cache=TtlCache(ttl_s=2.0, clock=clock))
    req = catalog_pb2.GetRestaurantRequest(restaurant_id="rest_1")
    first = await cache.get_restaurant(req)
    clock.now += 1.9
    assert await cache.get_restaurant(req) is first
    clock.now += 0.2
    assert await cache.get_restaurant(req) is not first
    assert inner.calls == ["restaurant", "restaurant"]


async def test_delivery_answers_are_kept_per_point_and_restaurants_apart() -> None:
    inner = FakeCatalog()
    cache = CachedCatalog(inner, cache=TtlCache(ttl_s=5.0))
    assert (await cache.check_delivery(_where(1.0))).deliverable
    assert not (await cache.check_delivery(_where(-1.0))).deliverable
    await cache.check_delivery(_where(1.0))
    await cache.get_menu(catalog_pb2.GetMenuRequest(restaurant_id="rest_1"))
    await cache.get_menu(catalog_pb2.GetMenuRequest(restaurant_id="rest_2"))
    assert inner.calls == ["delivery", "delivery", "menu", "menu"]
    cache.forget("rest_1")
    await cache.check_delivery(_where(1.0))
    assert inner.calls[-1] == "delivery"


async def test_concurrent_misses_make_one_call() -> None:
    inner = FakeCatalog()
    inner.gate = asyncio.Event()
    cache = CachedCatalog(inner, cache=TtlCache(ttl_s=5.0))
    req = catalog_pb2.GetMenuRequest(restaurant_id="rest_1")
    waiting = [asyncio.create_task(cache.get_menu(req)) for _ in range(20)]
    await asyncio.sleep(0)
    inner.gate.set()
    answers = await asyncio.gather(*waiting)
    assert inner.calls == ["menu"]
    assert all(a is answers[0] for a in answers)


async def test_a_failure_is_not_remembered() -> None:
    inner = FakeCatalog()
    inner.fail = True
    cache = CachedCatalog(inner, cache=TtlCache(ttl_s=5.0))
    req = catalog_pb2.GetRestaurantRequest(restaurant_id="rest_1")
    with pytest.raises(RuntimeError):
        await cache.get_restaurant(req)
    inner.fail = False
    assert (await cache.get_restaurant(req)).restaurant.restaurant_id == "rest_1"
    assert inner.calls == ["restaurant", "restaurant"]


async def test_a_caller_giving_up_does_not_cancel_the_shared_call() -> None:
    inner = FakeCatalog()
    inner.gate = asyncio.Event()
    cache = CachedCatalog(inner, cache=TtlCache(ttl_s=5.0))
    req = catalog_pb2.GetMenuRequest(restaurant_id="rest_1")
    impatient = asyncio.create_task(cache.get_menu(req))
    patient = asyncio.create_task(cache.get_menu(req))
    await asyncio.sleep(0)
    impatient.cancel()
    inner.gate.set()
    await patient
    assert impatient.cancelled()
    assert inner.calls == ["menu"]


async def test_zero_ttl_asks_every_time_and_reviews_always_pass_through() -> None:
    inner = FakeCatalog()
    cache = CachedCatalog(inner, cache=TtlCache(ttl_s=0))
    req = catalog_pb2.GetMenuRequest(restaurant_id="rest_1")
    await cache.get_menu(req)
    await cache.get_menu(req)
    await CachedCatalog(inner, cache=TtlCache(ttl_s=5)).add_review(catalog_pb2.AddReviewRequest())
    assert inner.calls == ["menu", "menu", "review"]


async def test_the_memory_is_bounded() -> None:
    inner = FakeCatalog()
    cache = CachedCatalog(inner, cache=TtlCache(ttl_s=60.0, max_entries=3))
    for i in range(10):
        await cache.check_delivery(_where(float(i + 1)))
    assert len(cache.cache._entries) <= 3
