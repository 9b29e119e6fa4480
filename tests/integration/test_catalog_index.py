"""The search index's in-memory copies against a real Redis: loaded once, caught up by the
change log, reloaded whole when that is cheaper or the only safe way."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis.asyncio as aioredis

from foodmesh.core.redis import Keys
from servers.catalog import index as index_module
from servers.catalog.index import SearchIndex, region_of, regions_for
from servers.catalog.model import Address, Restaurant
from servers.catalog.search import Query, SearchDoc
from servers.catalog.table import RegionTable
from tests.unit.test_catalog_search import restaurant

Q = Query(lat=37.77, lon=-122.42, radius_miles=5.0)


def held(view: tuple[RegionTable, list[int]]) -> dict[str, SearchDoc]:
    """The documents of the parts a search reads."""
    table, parts = view
    start = table.part_start.tolist()
    return {
        table.docs[i].restaurant_id: table.docs[i]
        for p in parts
        for i in range(start[p], start[p + 1])
    }


def moved(r: Restaurant, **changes: object) -> Restaurant:
    return dataclasses.replace(r, version=r.version + 1, **changes)  # type: ignore[arg-type]


async def test_copies_load_once_catch_up_by_changes_and_reload_when_too_many(
    redis_client: aioredis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SearchIndex(redis_client, Keys(namespace))
    reader = SearchIndex(redis_client, Keys(namespace))
    rs = [restaurant(f"r{i:03d}", 37.77 + i * 1e-4, -122.42, version=1) for i in range(30)]
    for r in rs:
        await writer.put(r)
    await redis_client.set(writer.built_key, "30 epoch-1")

    # Many searches at once on a replica holding nothing: each region is loaded once.
    views = await asyncio.gather(*(reader.view(Q) for _ in range(10)))
    regions = len(regions_for(Q))
    assert reader.full_loads == regions and reader.catch_ups == 0
    for v in views:
        assert set(held(v)) == {r.restaurant_id for r in rs}

    # One change: the copy catches up by it alone.
    rs[0] = moved(rs[0], name="Renamed")
    await writer.put(rs[0])
    assert held(await reader.view(Q))["r000"].name == "Renamed"
    assert reader.full_loads == regions and reader.catch_ups == 1
    await reader.view(Q)  # nothing changed: nothing to do
    assert reader.full_loads == regions and reader.catch_ups == 1

    # More changes than a catch-up takes: the region is loaded whole.
    monkeypatch.setattr(index_module, "_CATCH_UP_MAX", 3)
    for i in range(5):
        rs[i] = moved(rs[i], price_level=4)
        await writer.put(rs[i])
    docs = held(await reader.view(Q))
    assert [docs[f"r{i:03d}"].price_level for i in range(6)] == [4, 4, 4, 4, 4, 2]
    assert reader.full_loads == regions + 1

    # A restaurant moving to another region leaves this one (a removal in the change log).
    far = moved(rs[1], address=Address(40.0, -100.0))
    assert region_of(40.0, -100.0) != region_of(rs[1].address.lat, rs[1].address.lon)
    await writer.put(far, before=rs[1])
    assert "r001" not in held(await reader.view(Q))
    there = await reader.view(Query(lat=40.0, lon=-100.0, radius_miles=1.0))
    assert list(held(there)) == ["r001"]

    # A write older than the one indexed changes nothing.
    await writer.put(dataclasses.replace(rs[2], name="stale", version=1))
    assert held(await reader.view(Q))["r002"].name != "stale"


async def test_a_new_epoch_reloads_what_a_replica_holds(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    writer = SearchIndex(redis_client, Keys(namespace))
    reader = SearchIndex(redis_client, Keys(namespace))
    r = restaurant("r1", 37.77, -122.42, version=1)
    await writer.put(r)
    await redis_client.set(writer.built_key, "1 epoch-1")
    assert set(held(await reader.view(Q))) == {"r1"}
    loads = reader.full_loads
    # Redis lost everything; the rebuild writes another restaurant, at generation 1 again.
    await redis_client.delete(*[k async for k in redis_client.scan_iter(match=f"{namespace}:*")])
    await writer.put(restaurant("r2", 37.77, -122.42, version=1))
    await redis_client.set(writer.built_key, "1 epoch-2")
    assert set(held(await reader.view(Q))) == {"r2"}
    assert reader.full_loads > loads
