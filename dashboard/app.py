"""The ops dashboard: a live map of the city and the platform's figures, over SSE.

One small aiohttp app. It listens to the events the services already publish on
NATS (driver fixes, presence, order and dispatch events) and folds them into a
``CityState``; it asks the services themselves (with a service token) for what
events do not carry: the restaurants, an order's timeline, a driver's path,
surge per cell, and every service's health. The page draws our own road graph
on a canvas: no map tiles, no CDN, nothing fetched from the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from clients import CatalogClient, ClientOptions, LocationClient, OrderClient, PricingClient
from dashboard.mapdata import map_payload, search_grid, surge_cells
from dashboard.state import CityState
from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.core.events import DISPATCH_EVENTS, DRIVER_LOCATIONS, DRIVER_PRESENCE, ORDER_EVENTS
from foodmesh.core.nats import Subjects, open_nats
from foodmesh.core.services import KNOWN
from foodmesh.core.tasks import stop_tasks
from foodmesh.core.tls import TlsConfigError, TlsFiles, require_tls_outside_dev
from foodmesh.v1 import (
    catalog_pb2,
    location_pb2,
    order_pb2,
    pricing_pb2,
)

__all__ = ["Dashboard", "DashboardConfig", "main", "serve"]

log = logging.getLogger("foodmesh.dashboard")
_STATIC = Path(__file__).parent / "static"
_CENTER = (37.7749, -122.4194)


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    nats_url: str = ""
    namespace: str = ""
    auth_secret: str = DEV_SECRET
    #: service name -> gRPC target, for health, restaurants, orders, paths, surge
    targets: Mapping[str, str] = field(default_factory=dict)
    #: how often the page gets a new picture, seconds
    tick_s: float = 1.0
    health_every_s: float = 2.0
    surge_every_s: float = 15.0
    #: the road graph to draw: a saved graph's path, "" for the default city, "none" for none
    roads: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DashboardConfig:
        env = os.environ if env is None else env
        targets = {}
        for s in KNOWN:
            t = env.get(f"FOODMESH_DASHBOARD_{s.name.upper()}_TARGET")
            targets[s.name] = t or f"127.0.0.1:{s.grpc_port}"
        return cls(
            host=env.get("FOODMESH_DASHBOARD_HOST", "127.0.0.1"),
            port=int(env.get("FOODMESH_DASHBOARD_PORT", "8090")),
            nats_url=env.get("FOODMESH_NATS_URL", ""),
            namespace=env.get("FOODMESH_NAMESPACE", ""),
            auth_secret=env.get("FOODMESH_AUTH_SECRET") or DEV_SECRET,
            targets=targets,
            roads=env.get("FOODMESH_DASHBOARD_ROADS", ""),
        )


class Dashboard:
    """The app and its feeds; ``start``/``stop`` around serving it."""

    def __init__(self, config: DashboardConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.state = CityState()
        self.health: dict[str, str] = {name: "UNKNOWN" for name in config.targets}
        self.restaurants: list[list[Any]] = []
        self.surge: list[list[Any]] = []
        self._map: bytes | None = None
        self._nc: NATS | None = None
        self._tasks: list[asyncio.Task[None]] = []
        token = mint_token(config.auth_secret, subject="dashboard", role="service",
                           ttl_s=365 * 86400)  # fmt: skip
        opts = ClientOptions(metadata=(("authorization", f"Bearer {token}"),), deadline_s=3.0)
        t = config.targets
        self.catalog = CatalogClient(t["catalog"], options=opts) if "catalog" in t else None
        self.orders = OrderClient(t["order"], options=opts) if "order" in t else None
        self.location = LocationClient(t["location"], options=opts) if "location" in t else None
        self.pricing = PricingClient(t["pricing"], options=opts) if "pricing" in t else None
        self._health_channels = {name: _channel(target) for name, target in t.items()}

    # ------------------------------------------------------------------ feeds
    async def start(self) -> None:
        if self.config.nats_url:
            self._nc = await open_nats(self.config.nats_url, name="dashboard")
            subj = Subjects(self.config.namespace)
            now = self.clock
            feeds: list[tuple[str, Callable[[bytes, float], None]]] = [
                (DRIVER_LOCATIONS.any, lambda b, t: self.state.on_fix(
                    DRIVER_LOCATIONS.decode(b), t)),
                (DRIVER_PRESENCE.name, lambda b, t: self.state.on_presence(
                    DRIVER_PRESENCE.decode(b), t)),
                (ORDER_EVENTS.all, lambda b, t: self.state.on_order(
                    ORDER_EVENTS.decode(b), t)),
                (DISPATCH_EVENTS.all, lambda b, t: self.state.on_dispatch(
                    DISPATCH_EVENTS.decode(b), t)),
            ]  # fmt: skip
            for name, fold in feeds:

                async def cb(msg: Msg, fold: Callable[[bytes, float], None] = fold) -> None:
                    try:
                        fold(msg.data, now())
                    except Exception as exc:  # a bad message must not stop the feed
                        log.warning("undecodable event on %s: %s", msg.subject, exc)

                await self._nc.subscribe(subj.subject(name), cb=cb)
        self._tasks = [
            asyncio.create_task(self._health_loop(), name="dashboard-health"),
            asyncio.create_task(self._restaurants_once(), name="dashboard-restaurants"),
            asyncio.create_task(self._surge_loop(), name="dashboard-surge"),
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        for c in (self.catalog, self.orders, self.location, self.pricing):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close()
        for ch in self._health_channels.values():
            await ch.close()

    async def _health_loop(self) -> None:
        while True:
            for name, ch in self._health_channels.items():
                try:
                    resp = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=1.0
                    )
                    self.health[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                        resp.status
                    )
                except grpc.aio.AioRpcError as exc:
                    self.health[name] = (
                        "DOWN" if exc.code() == grpc.StatusCode.UNAVAILABLE else exc.code().name
                    )
            await asyncio.sleep(self.config.health_every_s)

    async def _restaurants_once(self) -> None:
        """All restaurants within 25 miles of the city centre, paged; retried until it works."""
        if self.catalog is None:
            return
        delay = 1.0
        while True:
            try:
                found: dict[str, list[Any]] = {}
                for lat, lon in search_grid(_CENTER):  # search answers who delivers *there*
                    token = ""
                    while True:
                        resp = await self.catalog.search_restaurants(
                            catalog_pb2.SearchRestaurantsRequest(
                                lat=lat, lon=lon, radius=25, page_size=100, page_token=token
                            )
                        )
                        for r in resp.restaurants:
                            found[r.restaurant_id] = [
                                r.restaurant_id, r.name, round(r.location.lat, 5),
                                round(r.location.lon, 5), r.is_open,
                            ]  # fmt: skip
                        token = resp.next_page_token
                        if not token:
                            break
                self.restaurants = sorted(found.values())
                self._map = None  # drawn again with them
                if found:
                    return
            except grpc.aio.AioRpcError as exc:
                log.debug("restaurants not loaded yet: %s", exc.code().name)
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    async def _surge_loop(self) -> None:
        if self.pricing is None:
            return
        while True:
            cells = surge_cells(self.restaurants) if self.restaurants else []
            found = []
            for cell, lat, lon in cells:
                try:
                    resp = await self.pricing.get_surge(
                        pricing_pb2.GetSurgeRequest(lat=lat, lon=lon)
                    )
                except grpc.aio.AioRpcError:
                    break  # Pricing not there (yet): try again next round
                s = resp.surge
                found.append([s.cell or cell, lat, lon, round(s.multiplier, 2), s.demand,
                              s.supply])  # fmt: skip
            self.surge = found
            await asyncio.sleep(self.config.surge_every_s)

    # ------------------------------------------------------------------- http
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/map", self._map_json)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/orders/{order_id}", self._order)
        app.router.add_get("/api/drivers/{driver_id}/path", self._path)
        app.router.add_static("/static/", _STATIC, show_index=False)
        return app

    def picture(self) -> dict[str, Any]:
        snap = self.state.snapshot(self.clock())
        snap["health"] = dict(self.health)
        snap["surge"] = self.surge
        snap["restaurant_count"] = len(self.restaurants)
        return snap

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(_STATIC / "index.html")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _map_json(self, request: web.Request) -> web.Response:
        if self._map is None:
            graph = None
            if self.config.roads != "none":
                graph = await asyncio.to_thread(_load_graph, self.config.roads)
            payload = map_payload(graph, self.restaurants)
            self._map = json.dumps(payload, separators=(",", ":")).encode()
        resp = web.Response(body=self._map, content_type="application/json")
        resp.enable_compression()
        return resp

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(self.picture())

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})  # fmt: skip
        await resp.prepare(request)
        n = 0
        try:
            while True:
                n += 1
                body = json.dumps(self.picture(), separators=(",", ":"))
                await resp.write(f"id: {n}\nevent: picture\ndata: {body}\n\n".encode())
                await asyncio.sleep(self.config.tick_s)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def _order(self, request: web.Request) -> web.Response:
        oid = request.match_info["order_id"]
        if self.orders is None:
            raise web.HTTPServiceUnavailable(text="no Order service configured")
        try:
            resp = await self.orders.get_order(order_pb2.GetOrderRequest(order_id=oid))
        except grpc.aio.AioRpcError as exc:
            return _grpc_error(exc)
        body = json_format.MessageToDict(resp.order, preserving_proto_field_name=True)
        view = self.state.order_view(oid)
        if view is not None:
            body["offers_made"] = view.offers
            body["escalated"] = view.escalated
        return web.json_response(body)

    async def _path(self, request: web.Request) -> web.Response:
        did = request.match_info["driver_id"]
        points = self.state.driver_path(did)
        if not points and self.location is not None:  # not seen since start: ask Location
            end = self.clock()
            req = location_pb2.GetLocationHistoryRequest(driver_id=did, max_points=500)
            req.start_time.FromSeconds(int(end - 3600))
            req.end_time.FromSeconds(int(end) + 1)
            try:
                resp = await self.location.get_location_history(req)
            except grpc.aio.AioRpcError as exc:
                return _grpc_error(exc)
            points = [[p.timestamp.seconds, round(p.lat, 5), round(p.lon, 5)]
                      for p in resp.points]  # fmt: skip
        return web.json_response({"driver_id": did, "points": points})


def _grpc_error(exc: grpc.aio.AioRpcError) -> web.Response:
    status = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400,
              grpc.StatusCode.UNAVAILABLE: 503}.get(exc.code(), 502)  # fmt: skip
    return web.json_response({"code": exc.code().name, "message": exc.details() or ""},
                             status=status)  # fmt: skip


def _load_graph(spec: str) -> Any:
    """The road graph to draw, or None when the roads package cannot give one."""
    try:
        from foodmesh.roads import RoadGraph
    except ImportError:
        return None
    try:
        return RoadGraph.load(spec) if spec else RoadGraph.default()
    except Exception as exc:  # the map is decoration: the figures still work without it
        log.warning("no road graph for the map: %s", exc)
        return None


@contextlib.asynccontextmanager
async def serve(config: DashboardConfig) -> AsyncIterator[tuple[Dashboard, int]]:
    """Runs the dashboard (port 0: a free one); yields it and its port."""
    dash = Dashboard(config)
    await dash.start()
    runner = web.AppRunner(dash.app(), handler_cancellation=True, access_log=None,
                           shutdown_timeout=1.0)  # fmt: skip
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        yield dash, int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
        await dash.stop()


async def _run(config: DashboardConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(config) as (_, port):
        print(f"dashboard listening on http://{config.host}:{port}", flush=True)
        await stop.wait()


def _channel(target: str) -> grpc.aio.Channel:
    """A channel to a service, over TLS when ``FOODMESH_TLS_CA`` names its CA bundle."""
    credentials = TlsFiles.from_env().channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, credentials)


def main() -> int:
    """Runs the dashboard until SIGTERM/SIGINT; settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        require_tls_outside_dev(TlsFiles.from_env(), who="dashboard", serves=False, dials=True)
    except TlsConfigError as exc:
        print(f"dashboard: {exc}", flush=True)
        return 1
    config = DashboardConfig.from_env()
    try:
        asyncio.run(_run(config))
    except OSError as exc:
        print(f"dashboard: cannot listen on {config.host}:{config.port}: {exc}", flush=True)
        return 1
    return 0
