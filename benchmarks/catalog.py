"""SearchRestaurants over 10,000 restaurants, open loop, against a raw Redis GEOSEARCH.

Data: ``--restaurants`` (default 10,000) restaurants spread uniformly over a 55 x 53 km
metro area around San Francisco (about 3.4 per km², a little under a real city's
density), each with 1-3 cuisines, an octagonal delivery zone of 3-6 miles and a
maximum distance of 5-10 miles. They are written to PostgreSQL through the
service's own store; the service then builds its Redis index from PostgreSQL at
start (the rebuild time is reported).

Load: searches at uniformly random points of the area (no two alike: nothing a cache of
popular searches could reuse), radius 5 miles (a third at 2-10), 30% with
a cuisine filter, a quarter open-now, random sort, page size 20; sent open loop at
``--rate`` (default 200/s) for ``--duration`` s (default 20), latency counted from the
intended send time. The service runs as ``--replicas`` processes (default 2, the HPA's
minimum in production) with production defaults (access log on), called round robin from one
client channel as callers reach a headless Service's pods; the load generator in this one.
``--replicas 1`` shows what a single replica carries.

Then a *popular* phase at the same rate: the searches come from 50 busy 0.01° cells (a
different exact point every time, inside those cells): what the popular-search cache
(``servers/catalog/cells.py``) serves from its entries. And, in this process, the cache
itself: the CPU of one search on the replica's table computed whole (a miss: scan the
latitude band, then decide) against one finished from a cached cell (a hit), over the same
points (``cache`` in the JSON).

Text: every restaurant has a menu of 12-24 dishes (names and descriptions from a list
of ~110 dishes over the cuisines). A *text* phase sends the same points with ``q`` set (a
dish, a misspelt dish, a word being typed, a cuisine or a word of a name; a third of them
misspelt), and an *autocomplete* phase completes prefixes there; their baseline is the
geo-only search of the same run (``ours``). And the engine not chosen, measured: the same
text queries as PostgreSQL ``pg_trgm`` word-similarity searches over dish and restaurant
names (GIN trigram indexes) inside the radius's bounding box (``pg_trgm``; a floor: no
zones, hours, or exact distances), from this process over 8 connections, at the same rate.

Baseline: the same points sent as raw ``GEOSEARCH ... BYRADIUS`` (ids only, no
documents) over a GEO set per geohash-4 region of the same restaurants (written by the
benchmark: the index itself keeps no GEO sets, each replica holds its regions in memory),
pipelined, at the same rate, from this process: the floor of fetching the candidates.
The ratio says what exact distance, zones, hours, filters, ranking, paging and gRPC
cost on top.

    python benchmarks/catalog.py              # ~90 s (seeding included)
    python benchmarks/catalog.py --quick --json
Target: search p95 < 50 ms at 200 req/s, text searches included.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    ServerProcess,
    bench_infra,
    emit_json,
    fresh_database,
    machine,
    now_iso,
    open_loop,
    parser,
    print_table,
    ratio,
    server_processes,
)
from clients import CatalogClient, ClientOptions  # noqa: E402
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token  # noqa: E402
from foodmesh.core.geo import METERS_PER_MILE, cells_covering  # noqa: E402
from foodmesh.core.redis import Keys  # noqa: E402
from foodmesh.v1 import catalog_pb2 as pb  # noqa: E402
from servers.catalog import SPEC  # noqa: E402
from servers.catalog.hours import Span  # noqa: E402
from servers.catalog.index import REGION_PRECISION, SearchIndex, region_of  # noqa: E402
from servers.catalog.model import Address, Category, Item, Menu, Restaurant, Zone  # noqa: E402
from servers.catalog.store import CatalogStore  # noqa: E402
from servers.catalog.zones import Polygon  # noqa: E402
from servers.runtime.migrate import load_migrations, migrate  # noqa: E402

CENTER = (37.76, -122.43)
SPAN_LAT, SPAN_LON = 0.25, 0.30
CUISINES = ["italian", "thai", "mexican", "sushi", "indian", "burgers", "chinese", "vegan",
            "pizza", "korean", "greek", "french"]  # fmt: skip
#: Dishes per cuisine: (name, description).
DISHES: dict[str, list[tuple[str, str]]] = {
    "italian": [("Margherita Pizza", "tomato, mozzarella, basil"), ("Spaghetti Carbonara",
                "egg, pecorino, guanciale"), ("Lasagna", "beef ragu, bechamel"),
                ("Tiramisu", "espresso, mascarpone"), ("Caesar Salad", "romaine, parmesan"),
                ("Risotto ai Funghi", "porcini, parmesan"), ("Burrata", "cream, tomatoes")],
    "thai": [("Pad Thai", "rice noodles, peanuts, tamarind"), ("Green Curry", "coconut, basil"),
             ("Tom Yum Soup", "lemongrass, shrimp"), ("Massaman Curry", "potato, peanuts"),
             ("Pad See Ew", "wide noodles, broccoli"), ("Mango Sticky Rice", "coconut cream")],
    "mexican": [("Carnitas Taco", "pork, onion, cilantro"), ("Super Burrito", "rice, beans"),
                ("Chicken Quesadilla", "cheese, salsa"), ("Chips and Guacamole", "avocado"),
                ("Enchiladas Verdes", "tomatillo sauce"), ("Churros", "cinnamon sugar")],
    "sushi": [("Salmon Nigiri", "fresh salmon"), ("Spicy Tuna Roll", "tuna, sriracha mayo"),
              ("Rainbow Roll", "assorted fish, avocado"), ("Miso Soup", "tofu, wakame"),
              ("Edamame", "sea salt"), ("Chirashi Bowl", "sashimi over rice")],
    "indian": [("Chicken Tikka Masala", "tomato cream sauce"), ("Palak Paneer", "spinach"),
               ("Garlic Naan", "tandoor bread"), ("Lamb Vindaloo", "spicy, vinegar"),
               ("Chicken Biryani", "basmati, saffron"), ("Samosa", "potato, peas")],
    "burgers": [("Cheeseburger", "cheddar, pickles"), ("Bacon Burger", "smoked bacon"),
                ("Veggie Burger", "black bean patty"), ("Fries", "sea salt"),
                ("Onion Rings", "beer batter"), ("Chocolate Shake", "vanilla ice cream")],
    "chinese": [("Kung Pao Chicken", "peanuts, chili"), ("Mapo Tofu", "sichuan pepper"),
                ("Har Gow", "shrimp dumplings"), ("Beef Chow Fun", "wide rice noodles"),
                ("Dan Dan Noodles", "pork, chili oil"), ("Fried Rice", "egg, scallion")],
    "vegan": [("Buddha Bowl", "quinoa, kale, tahini"), ("Falafel Wrap", "hummus, pickles"),
              ("Cauliflower Wings", "buffalo sauce"), ("Lentil Soup", "cumin, lemon"),
              ("Acai Bowl", "banana, granola"), ("Tofu Scramble", "turmeric, peppers")],
    "pizza": [("Pepperoni Pizza", "mozzarella, pepperoni"), ("Margherita Pizza",
              "tomato, basil"), ("Hawaiian Pizza", "ham, pineapple"), ("Garlic Knots",
              "butter, parsley"), ("Calzone", "ricotta, ham"), ("Funghi Pizza", "mushrooms")],
    "korean": [("Bibimbap", "rice, vegetables, egg"), ("Bulgogi", "marinated beef"),
               ("Kimchi Jjigae", "kimchi stew"), ("Korean Fried Chicken", "soy garlic"),
               ("Japchae", "glass noodles"), ("Tteokbokki", "rice cakes, gochujang")],
    "greek": [("Gyro Plate", "lamb, tzatziki"), ("Souvlaki", "pork skewers"),
              ("Greek Salad", "feta, olives"), ("Spanakopita", "spinach pie"),
              ("Moussaka", "eggplant, lamb"), ("Baklava", "honey, walnuts")],
    "french": [("Croque Monsieur", "ham, gruyere"), ("French Onion Soup", "gruyere crouton"),
               ("Steak Frites", "bearnaise"), ("Quiche Lorraine", "bacon, egg"),
               ("Creme Brulee", "vanilla custard"), ("Croissant", "butter")],
}  # fmt: skip
_NAME_WORDS = ["Golden", "Little", "Lucky", "Blue", "Corner", "Sunset", "Mission", "Harbor"]
_NAME_NOUNS = {"italian": "Trattoria", "thai": "Thai Kitchen", "mexican": "Taqueria",
               "sushi": "Sushi Bar", "indian": "Curry House", "burgers": "Burger Joint",
               "chinese": "Dumpling House", "vegan": "Green Kitchen", "pizza": "Pizzeria",
               "korean": "Korean BBQ", "greek": "Taverna", "french": "Bistro"}  # fmt: skip
#: What customers type: dishes, misspelt dishes, words being typed, cuisines, name words.
TEXT_QUERIES = [
    "margherita pizza",
    "margarita",
    "pad thai",
    "pad tai",
    "burrito",
    "burito",
    "ramen",
    "sushi",
    "curry",
    "tikka masala",
    "tika masala",
    "dumplings",
    "dumplngs",
    "piz",
    "burg",
    "tacos",
    "noodles",
    "nodles",
    "vegan",
    "korean",
    "pizzeria",
    "taqueria",
    "bistro",
    "croissant",
    "crossaint",
    "bibimbap",
    "bibimbab",
    "fries",
    "salad",
    "caesar",
    "ceasar",
    "golden",
    "lucky sushi",
    "spicy tuna",
    "falafel",
    "falafal",
    "gyro",
    "baklava",
    "souvlaki",
    "chow fun",
]
COMPLETIONS = [
    "p",
    "pi",
    "piz",
    "bu",
    "bur",
    "sus",
    "ra",
    "cu",
    "cur",
    "ta",
    "tac",
    "no",
    "ma",
    "mar",
    "dum",
    "ko",
    "fa",
    "gy",
    "cro",
    "sal",
]
NAMESPACE = "bench"
CALL_TIMEOUT_S = 5.0


# --- the server side (a child process) ----------------------------------------------------


async def _serve() -> None:
    from servers.runtime.config import Settings
    from servers.runtime.serve import configure_logging, run_service

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings.from_env("catalog", {**os.environ, "FOODMESH_SHUTDOWN_GRACE_S": "2"})
    configure_logging(settings.log_level)
    async with run_service(SPEC, settings) as running:
        print(f"READY {running.port}", flush=True)
        await stop.wait()


# --- data -----------------------------------------------------------------------------------


def _octagon(lat: float, lon: float, miles: float) -> Polygon:
    dlat = miles * METERS_PER_MILE / 111_195.0
    dlon = dlat / math.cos(math.radians(lat))
    pts = [(lat + dlat * math.sin(k * math.pi / 4), lon + dlon * math.cos(k * math.pi / 4))
           for k in range(8)]  # fmt: skip
    return Polygon.of(pts)


def _restaurants(n: int, seed: int) -> list[Restaurant]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lat = CENTER[0] + rng.uniform(-SPAN_LAT, SPAN_LAT)
        lon = CENTER[1] + rng.uniform(-SPAN_LON, SPAN_LON)
        late = rng.random() < 0.3
        hours = tuple(Span(d, 11 * 60, (26 if late else 22) * 60) for d in range(1, 8))
        cuisines = tuple(rng.sample(CUISINES, rng.randint(1, 3)))
        name = f"{rng.choice(_NAME_WORDS)} {_NAME_NOUNS[cuisines[0]]} {i}"
        out.append(
            Restaurant(
                restaurant_id=f"rest_{i:05d}", name=name,
                cuisines=cuisines,
                address=Address(lat, lon, street=f"{i} Market St", city="San Francisco",
                                state="CA", zip="94103", country="US"),
                time_zone="America/Los_Angeles", hours=hours, closures=(),
                price_level=rng.randint(1, 4), currency="USD",
                minimum_order_minor=rng.randrange(0, 2000, 100),
                avg_prep_time_min=rng.choice([10, 15, 20, 25, 30]),
                image_url=f"https://cdn.example/rest_{i:05d}.jpg", paused=rng.random() < 0.03,
                zones=(Zone("main", _octagon(lat, lon, rng.uniform(3, 6)),
                            rng.randrange(99, 699, 50), 0),),
                max_delivery_miles=rng.choice([5.0, 7.5, 10.0]), owner_id=f"owner_{i}",
            )
        )  # fmt: skip
    return out


def _menu(r: Restaurant, seed: int) -> Menu:
    """12-24 dishes of the restaurant's cuisines, a category per cuisine."""
    rng = random.Random(seed)
    cats = []
    want = rng.randint(12, 24)
    pool = [(c, d) for c in r.cuisines for d in DISHES[c]]
    pool += [(c, d) for c in rng.sample(CUISINES, 2) for d in DISHES[c]]
    chosen = rng.sample(pool, min(want, len(pool)))
    for c in dict.fromkeys(c for c, _ in chosen):
        items = tuple(Item(f"{r.restaurant_id}_{k}", n, d, rng.randrange(499, 2999, 50),
                           rng.random() > 0.03, "")
                      for k, (cc, (n, d)) in enumerate(chosen) if cc == c)  # fmt: skip
        cats.append(Category(c, c.title(), items))
    return Menu(r.restaurant_id, r.currency, tuple(cats))


async def _seed(pg_url: str, restaurants: list[Restaurant], progress: Progress) -> None:
    assert SPEC.migrations is not None
    await migrate(pg_url, service="catalog", migrations=load_migrations(SPEC.migrations))
    async with AsyncConnectionPool(pg_url, min_size=8, max_size=8, open=False) as pool:
        store = CatalogStore(pool)
        queue = list(reversed(restaurants))

        async def worker() -> None:
            while queue:
                r = queue.pop()
                await store.upsert_restaurant(r)
                await store.replace_menu(_menu(r, seed=int(r.restaurant_id[5:])))
                progress.add()

        await asyncio.gather(*(worker() for _ in range(8)))
    progress.finish()


def _requests(n: int, seed: int) -> list[pb.SearchRestaurantsRequest]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        req = pb.SearchRestaurantsRequest(
            lat=CENTER[0] + rng.uniform(-SPAN_LAT * 0.9, SPAN_LAT * 0.9),
            lon=CENTER[1] + rng.uniform(-SPAN_LON * 0.9, SPAN_LON * 0.9),
            radius=5.0 if rng.random() < 2 / 3 else rng.choice([2.0, 3.0, 10.0]),
            sort=rng.choice([1, 1, 2, 3, 4]),  # type: ignore[arg-type]
            page_size=20,
            open_now=rng.random() < 0.25,
        )
        if rng.random() < 0.3:
            req.cuisine.append(rng.choice(CUISINES))
        out.append(req)
    return out


def _texts(reqs: list[pb.SearchRestaurantsRequest], seed: int) -> list[pb.SearchRestaurantsRequest]:
    """The same searches with words to find."""
    rng = random.Random(seed)
    out = []
    for req in reqs:
        t = pb.SearchRestaurantsRequest()
        t.CopyFrom(req)
        t.q = rng.choice(TEXT_QUERIES)
        out.append(t)
    return out


def _completions(reqs: list[pb.SearchRestaurantsRequest],
                 seed: int) -> list[pb.AutocompleteRestaurantsRequest]:  # fmt: skip
    rng = random.Random(seed)
    return [pb.AutocompleteRestaurantsRequest(q=rng.choice(COMPLETIONS), lat=r.lat, lon=r.lon,
                                              radius=r.radius) for r in reqs]  # fmt: skip


_PG_TRGM_SETUP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS bench_items_trgm ON catalog.menu_items"
    " USING gin (name gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS bench_restaurants_trgm ON catalog.restaurants"
    " USING gin (name gin_trgm_ops)",
    "ANALYZE",
]
# Restaurants within the radius's bounding box whose name or a dish's name is
# word-similar to the query (threshold 0.4: "margarita" ~ "Margherita Pizza"), best first.
_PG_TRGM_QUERY = """
SELECT r.restaurant_id, max(h.s) AS s
  FROM (SELECT i.restaurant_id, word_similarity(%(q)s, i.name) AS s
          FROM catalog.menu_items i WHERE %(q)s <%% i.name
        UNION ALL
        SELECT r2.restaurant_id, word_similarity(%(q)s, r2.name)
          FROM catalog.restaurants r2 WHERE %(q)s <%% r2.name) h
  JOIN catalog.restaurants r USING (restaurant_id)
 WHERE r.lat BETWEEN %(lat0)s AND %(lat1)s AND r.lon BETWEEN %(lon0)s AND %(lon1)s
 GROUP BY r.restaurant_id ORDER BY s DESC, r.restaurant_id LIMIT 20
"""


def _box(req: pb.SearchRestaurantsRequest) -> dict[str, float | str]:
    dlat = (req.radius or 5.0) * METERS_PER_MILE / 111_195.0
    dlon = dlat / math.cos(math.radians(req.lat))
    return {"q": req.q, "lat0": req.lat - dlat, "lat1": req.lat + dlat,
            "lon0": req.lon - dlon, "lon1": req.lon + dlon}  # fmt: skip


def _popular(n: int, seed: int, cells: int = 50) -> list[pb.SearchRestaurantsRequest]:
    """Searches from ``cells`` busy 0.01° cells: exact points differ, cells repeat."""
    rng = random.Random(seed)
    centres = [(round(CENTER[0] + rng.uniform(-SPAN_LAT * 0.8, SPAN_LAT * 0.8), 2),
                round(CENTER[1] + rng.uniform(-SPAN_LON * 0.8, SPAN_LON * 0.8), 2))
               for _ in range(cells)]  # fmt: skip
    out = []
    for req in _requests(n, seed + 1):
        clat, clon = rng.choice(centres)
        req.lat = clat + rng.uniform(-0.0049, 0.0049)
        req.lon = clon + rng.uniform(-0.0049, 0.0049)
        req.radius = 5.0
        del req.cuisine[:]
        out.append(req)
    return out


def _cache_cpu(restaurants: list[Restaurant], reqs: list[pb.SearchRestaurantsRequest],
               progress: Progress) -> dict[str, Any]:  # fmt: skip
    """In-process CPU per search: computed whole (miss) vs finished from the cell (hit)."""
    import datetime as dt

    from servers.catalog.cells import CellCache
    from servers.catalog.convert import query_from_pb
    from servers.catalog.search import SearchDoc, paginate
    from servers.catalog.table import RegionTable, search_table

    table = RegionTable.merge([RegionTable([SearchDoc.of(r) for r in restaurants])])
    now = dt.datetime.now(dt.UTC)
    queries = [query_from_pb(r) for r in reqs]
    cache = CellCache(ttl_s=3600.0)
    for q in queries:  # fill: every cell once
        cache.rows(table, q, [0])
    out: dict[str, Any] = {}
    for name in ("miss", "hit"):
        t0 = time.process_time()
        for q in queries:
            rows, zones = cache.rows(table, q, [0]) if name == "hit" else (None, None)
            paginate(search_table(table, q, now, parts=[0], rows=rows, zones=zones), q, "")
            progress.add()
        out[f"{name}_us_per_search"] = round((time.process_time() - t0) / len(queries) * 1e6, 1)
    out["ratio_hit_to_miss"] = ratio(out["hit_us_per_search"], out["miss_us_per_search"])
    out["searches"] = len(queries)
    progress.finish()
    return out


# --- the run --------------------------------------------------------------------------------


class _Replicas:
    """The catalog's replicas as one client sees them: a round-robin channel over every
    replica (as a headless Service gives a gRPC client in Kubernetes), CPU summed."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers

    @property
    def target(self) -> str:
        if len(self.servers) == 1:
            return self.servers[0].target
        return "ipv4:" + ",".join(s.target for s in self.servers)

    def cpu_seconds(self) -> float | None:
        each = [s.cpu_seconds() for s in self.servers]
        return None if any(c is None for c in each) else sum(c for c in each if c is not None)


async def run(*, n: int, rate: float, duration: float, replicas: int = 2) -> dict[str, Any]:
    restaurants = _restaurants(n, seed=1)
    requests = _requests(max(1, round(rate * duration)), seed=2)
    popular = _popular(max(1, round(rate * duration)), seed=3)
    texts = _texts(requests, seed=4)
    completions = _completions(requests, seed=5)
    async with bench_infra("catalog") as urls:
        pg_url = await fresh_database(urls.postgres_url, "catalog")
        t0 = time.perf_counter()
        await _seed(pg_url, restaurants, Progress("seed PostgreSQL", total=n))
        seed_s = time.perf_counter() - t0
        redis = aioredis.Redis.from_url(urls.redis_url)
        keys = Keys(NAMESPACE)
        await redis.delete(SearchIndex(redis, keys).built_key)
        async with redis.pipeline(transaction=False) as pipe:
            for r in restaurants:
                geo = keys.region("bench:geo", region_of(r.address.lat, r.address.lon))
                pipe.geoadd(geo, [r.address.lon, r.address.lat, r.restaurant_id])
            await pipe.execute()
        env = {
            "FOODMESH_POSTGRES_URL": pg_url,
            "FOODMESH_REDIS_URL": urls.redis_url,
            "FOODMESH_NATS_URL": urls.nats_url,
            "FOODMESH_NAMESPACE": NAMESPACE,
            "FOODMESH_CATALOG_PORT": "0",
            "FOODMESH_CATALOG_METRICS_PORT": "0",
        }
        os.environ.update(env)
        opts = ClientOptions(
            metadata=bearer(mint_token(DEV_SECRET, subject="bench", role="service")),
            channel_args=(("grpc.lb_policy_name", "round_robin"),),
        )
        try:
            async with (
                server_processes(*[(sys.executable, __file__, "--serve")] * replicas) as servers,
                CatalogClient(_Replicas(servers).target, options=opts) as client,
            ):
                server = _Replicas(servers)
                t0 = time.perf_counter()
                for _ in range(2400):  # up to 2 minutes
                    if await redis.exists(SearchIndex(redis, keys).built_key):
                        break
                    await asyncio.sleep(0.05)
                rebuild_s = time.perf_counter() - t0
                sizes = []
                for req in requests[:50]:  # warm up; and how big the answers are
                    reply = await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                    sizes.append(reply.total_count)

                raw_i = 0

                async def raw() -> None:
                    nonlocal raw_i
                    req = requests[raw_i % len(requests)]
                    raw_i += 1
                    radius_m = (req.radius or 5.0) * METERS_PER_MILE
                    async with redis.pipeline(transaction=False) as pipe:
                        for region in cells_covering(req.lat, req.lon, radius_m, REGION_PRECISION):
                            pipe.geosearch(keys.region("bench:geo", region), longitude=req.lon,
                                           latitude=req.lat, radius=radius_m, unit="m")  # fmt: skip
                        await pipe.execute()

                ours_i = 0
                totals: list[int] = []

                async def ours() -> None:
                    nonlocal ours_i
                    req = requests[ours_i % len(requests)]
                    ours_i += 1
                    reply = await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                    totals.append(reply.total_count)

                total = round(rate * duration)
                raw_cpu0 = time.process_time()
                raw_result = await open_loop(
                    raw, rate=rate, duration=duration,
                    progress=Progress(f"raw GEOSEARCH @{rate:g}/s", total=total),
                )  # fmt: skip
                raw_cpu = time.process_time() - raw_cpu0
                cpu0 = server.cpu_seconds()
                ours_result = await open_loop(
                    ours, rate=rate, duration=duration,
                    progress=Progress(f"SearchRestaurants @{rate:g}/s", total=total),
                )  # fmt: skip
                cpu1 = server.cpu_seconds()
                pop_i = 0

                async def hot() -> None:
                    nonlocal pop_i
                    req = popular[pop_i % len(popular)]
                    pop_i += 1
                    await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)

                for req in popular[:50]:
                    await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                pcpu0 = server.cpu_seconds()
                popular_result = await open_loop(
                    hot, rate=rate, duration=duration,
                    progress=Progress(f"popular cells @{rate:g}/s", total=total),
                )  # fmt: skip
                pcpu1 = server.cpu_seconds()

                text_i = 0
                text_totals: list[int] = []

                async def text() -> None:
                    nonlocal text_i
                    req = texts[text_i % len(texts)]
                    text_i += 1
                    reply = await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                    text_totals.append(reply.total_count)

                for req in texts[:50]:
                    await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                tcpu0 = server.cpu_seconds()
                text_result = await open_loop(
                    text, rate=rate, duration=duration,
                    progress=Progress(f"text search @{rate:g}/s", total=total),
                )  # fmt: skip
                tcpu1 = server.cpu_seconds()
                ac_i = 0

                async def complete() -> None:
                    nonlocal ac_i
                    req = completions[ac_i % len(completions)]
                    ac_i += 1
                    await client.autocomplete_restaurants(req, deadline_s=CALL_TIMEOUT_S)

                acpu0 = server.cpu_seconds()
                ac_result = await open_loop(
                    complete, rate=rate, duration=duration,
                    progress=Progress(f"autocomplete @{rate:g}/s", total=total),
                )  # fmt: skip
                acpu1 = server.cpu_seconds()
            # The engine not chosen: PostgreSQL trigrams, the catalog server stopped.
            async with AsyncConnectionPool(
                pg_url, min_size=8, max_size=8, open=False, timeout=CALL_TIMEOUT_S
            ) as pg:
                async with pg.connection() as conn:
                    await conn.set_autocommit(True)
                    for sql in _PG_TRGM_SETUP:
                        await conn.execute(sql)
                pg_i = 0
                pg_totals: list[int] = []

                async def pg_text() -> None:
                    nonlocal pg_i
                    req = texts[pg_i % len(texts)]
                    pg_i += 1
                    async with pg.connection() as conn:
                        await conn.execute(
                            "SET pg_trgm.word_similarity_threshold = 0.4;"
                            " SET statement_timeout = 5000"
                        )  # our deadline
                        cur = await conn.execute(_PG_TRGM_QUERY, _box(req))
                        pg_totals.append(len(await cur.fetchall()))

                for _ in range(20):
                    await pg_text()
                pg_result = await open_loop(
                    pg_text, rate=rate, duration=duration,
                    progress=Progress(f"pg_trgm text @{rate:g}/s", total=total),
                )  # fmt: skip
        finally:
            await redis.aclose()
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0

    def fig(r: LatencyResult) -> dict[str, Any]:
        out = r.as_dict()
        out["p95_ms"] = (
            round(float(sorted(r.samples_s)[int(0.95 * (len(r.samples_s) - 1))]) * 1000, 3)
            if r.ok
            else None
        )
        return out

    raw_fig, ours_fig, pop_fig = fig(raw_result), fig(ours_result), fig(popular_result)
    text_fig, ac_fig, pg_fig = fig(text_result), fig(ac_result), fig(pg_result)
    for f, c0, c1, lat in (
        (text_fig, tcpu0, tcpu1, text_result),
        (ac_fig, acpu0, acpu1, ac_result),
    ):
        if c0 is not None and c1 is not None and lat.ok:
            f["server_cpu_ms_per_call"] = round((c1 - c0) / lat.ok * 1000, 3)
    text_fig["hits_mean"] = round(sum(text_totals) / len(text_totals), 1) if text_totals else None
    pg_fig["rows_mean"] = round(sum(pg_totals) / len(pg_totals), 1) if pg_totals else None
    if server_cpu is not None and ours_result.ok:
        ours_fig["server_cpu_ms_per_call"] = round(server_cpu / ours_result.ok * 1000, 3)
        ours_fig["server_cpu_pct"] = round(100 * server_cpu / ours_result.seconds, 1)
    if pcpu0 is not None and pcpu1 is not None and popular_result.ok:
        pop_fig["server_cpu_ms_per_call"] = round((pcpu1 - pcpu0) / popular_result.ok * 1000, 3)
    sample = requests[: min(len(requests), 2000)]
    hot_sample = popular[: min(len(popular), 2000)]
    cache_fig = {
        "random_points": _cache_cpu(restaurants, sample,
                                    Progress("in-process miss/hit, random", total=2 * len(sample))),
        "popular_cells": _cache_cpu(restaurants, hot_sample,
                                    Progress("in-process miss/hit, popular",
                                             total=2 * len(hot_sample))),
    }  # fmt: skip
    raw_fig["client_cpu_ms_per_call"] = round(raw_cpu / max(1, raw_result.ok) * 1000, 3)
    return {
        "benchmark": "catalog",
        "machine": machine(),
        "date": now_iso(),
        "settings": {
            "restaurants": n,
            "rate": rate,
            "duration_s": duration,
            "area_km": [round(2 * SPAN_LAT * 111.2, 1), round(2 * SPAN_LON * 88.0, 1)],
            "page_size": 20,
            "replicas": replicas,
            "servers": f"catalog: {replicas} replica process(es), round robin from one client"
            " channel; load generator in this process",
        },
        "seed_s": round(seed_s, 2),
        "index_rebuild_s": round(rebuild_s, 2),
        "hits_per_search": {
            "mean": round(sum(totals) / len(totals), 1) if totals else None,
            "max": max(totals, default=None),
            "warmup_mean": round(sum(sizes) / len(sizes), 1) if sizes else None,
        },
        "raw": raw_fig,
        "ours": ours_fig,
        "popular": pop_fig,
        "text": text_fig,
        "autocomplete": ac_fig,
        "pg_trgm": pg_fig,
        "cache": cache_fig,
        "ratio": {
            "p50": ratio(ours_result.p50_ms, raw_result.p50_ms),
            "p95": ratio(ours_fig["p95_ms"], raw_fig["p95_ms"]),
            "p99": ratio(ours_result.p99_ms, raw_result.p99_ms),
            "throughput": ratio(ours_result.rate, raw_result.rate),
            "text_p95_to_geo_p95": ratio(text_fig["p95_ms"], ours_fig["p95_ms"]),
            "autocomplete_p95_to_geo_p95": ratio(ac_fig["p95_ms"], ours_fig["p95_ms"]),
            "text_p95_to_pg_trgm_p95": ratio(text_fig["p95_ms"], pg_fig["p95_ms"]),
            # Load-independent: the replica's CPU per text search over per geo search.
            "text_server_cpu_to_geo": ratio(
                text_fig.get("server_cpu_ms_per_call"), ours_fig.get("server_cpu_ms_per_call")
            ),
        },
        "target": {
            "p95_ms": 50.0,
            "met": bool(ours_fig["p95_ms"] and ours_fig["p95_ms"] < 50),
            "text_met": bool(text_fig["p95_ms"] and text_fig["p95_ms"] < 50),
            "autocomplete_met": bool(ac_fig["p95_ms"] and ac_fig["p95_ms"] < 50),
        },
    }


def _report(result: dict[str, Any], took: float) -> None:
    s = result["settings"]
    rows = []
    for name, key in (("raw Redis GEOSEARCH (ids only)", "raw"), ("SearchRestaurants", "ours"),
                      ("SearchRestaurants, 50 popular cells", "popular"),
                      ("SearchRestaurants with q (text)", "text"),
                      ("AutocompleteRestaurants", "autocomplete"),
                      ("PostgreSQL pg_trgm, same text (not chosen)", "pg_trgm")):  # fmt: skip
        f = result[key]
        rows.append([name, f["rate"], f["p50_ms"], f["p95_ms"], f["p99_ms"], f["max_ms"],
                     f["errors"] + f["dropped"], f.get("server_cpu_ms_per_call")])  # fmt: skip
    print_table(
        f"catalog search: {s['restaurants']:,} restaurants, open loop @{s['rate']:g}/s for "
        f"{s['duration_s']:g}s, {result['machine']['cpus']} cpus, {took:.0f}s in all",
        ["path", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "failed", "srv CPU ms/call"],
        rows,
    )
    print_table("ours / raw", ["figure", "ratio"], [[k, v] for k, v in result["ratio"].items()])
    print_table(
        "popular-search cache, in-process CPU per search (search + first page)",
        ["searches", "miss µs", "hit µs", "hit / miss"],
        [[k, c["miss_us_per_search"], c["hit_us_per_search"], c["ratio_hit_to_miss"]]
         for k, c in result["cache"].items()],
    )  # fmt: skip
    h = result["hits_per_search"]
    print(f"\nhits per search: mean {h['mean']}, max {h['max']}; seeding {result['seed_s']} s, "
          f"index rebuilt from PostgreSQL in {result['index_rebuild_s']} s")  # fmt: skip
    t = result["target"]
    for what, key in (("geo search", "met"), ("text search", "text_met"),
                      ("autocomplete", "autocomplete_met")):  # fmt: skip
        print(f"target p95 < 50 ms at {s['rate']:g}/s, {what}: {'met' if t[key] else 'NOT met'}")


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--restaurants", type=int, default=10_000)
    p.add_argument("--replicas", type=int, default=2,
                   help="catalog replica processes, called round robin (default 2)")  # fmt: skip
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    duration = args.duration or (4.0 if args.quick else 20.0)
    rate = args.rate or 200.0
    n = args.restaurants if not args.quick else min(args.restaurants, 3000)
    t0 = time.perf_counter()
    result = asyncio.run(run(n=n, rate=rate, duration=duration, replicas=max(1, args.replicas)))
    if args.json:
        emit_json(result)
    else:
        _report(result, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
