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
from aiohttp.typedefs import Handler
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from yarl import URL

from clients import (
    CatalogClient,
    ClientOptions,
    LocationClient,
    OrderClient,
    PricingClient,
    mesh_channel_args,
)
from dashboard.forecast import ForecastBoard
from dashboard.mail import add_mail_routes
from dashboard.mapdata import map_payload, search_grid, surge_cells
from dashboard.state import CityState
from foodmesh.core.auth import DEV_SECRET, InvalidToken, Principal, TokenVerifier, bearer
from foodmesh.core.events import DISPATCH_EVENTS, DRIVER_LOCATIONS, DRIVER_PRESENCE, ORDER_EVENTS
from foodmesh.core.nats import Subjects, open_nats
from foodmesh.core.services import KNOWN
from foodmesh.core.settings import (
    NATS_SCHEMES,
    auth_from_env,
    env_namespace,
    env_port,
    env_str,
    env_targets,
    env_url,
    read_at_start,
)
from foodmesh.core.tasks import stop_tasks
from foodmesh.core.tls import TlsFiles
from foodmesh.v1 import (
    catalog_pb2,
    location_pb2,
    order_pb2,
    pricing_pb2,
)

__all__ = ["COOKIE", "Dashboard", "DashboardConfig", "main", "serve"]

log = logging.getLogger("foodmesh.dashboard")
_STATIC = Path(__file__).parent / "static"
_CENTER = (37.7749, -122.4194)
#: The cookie that carries the viewer's ops token (set by /login or a ?token= link).
COOKIE = "foodmesh_ops"
#: Paths open without a token: logging in and out, the liveness probe (and /static/).
_OPEN = ("/login", "/logout", "/healthz")


@dataclass(frozen=True, slots=True)
class _Viewer:
    """Who is looking, and the token they came with (forwarded to the services)."""

    token: str
    principal: Principal


_VIEWER = web.RequestKey("viewer", _Viewer)


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    nats_url: str = ""
    namespace: str = ""
    auth_secret: str = DEV_SECRET
    #: Production identities: the OIDC provider's JWKS, and the iss/aud required (as the gateway).
    auth_jwks_url: str = ""
    auth_issuer: str = ""
    auth_audience: str = ""
    #: service name -> gRPC target, for health, restaurants, orders, paths, surge
    targets: Mapping[str, str] = field(default_factory=dict)
    #: how often the page gets a new picture, seconds
    tick_s: float = 1.0
    health_every_s: float = 2.0
    surge_every_s: float = 15.0
    #: the road graph to draw: a saved graph's path, "" for the default city, "none" for none
    roads: str = ""
    #: the development SMTP server's inbox listing (``/mail``); "" when there is none
    smtp_inbox_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DashboardConfig:
        """Reads ``FOODMESH_DASHBOARD_*``; raises :class:`ConfigError` naming a bad variable."""
        env = os.environ if env is None else env
        given = env_targets(env, "FOODMESH_DASHBOARD_")
        targets = {s.name: given.get(s.name) or f"127.0.0.1:{s.grpc_port}" for s in KNOWN}
        host = env_str(env, "FOODMESH_DASHBOARD_HOST", "127.0.0.1")
        port = env_port(env, "FOODMESH_DASHBOARD_PORT", 8090)
        nats_url = env_url(env, "FOODMESH_NATS_URL", "", NATS_SCHEMES, several=True)
        namespace = env_namespace(env)
        auth = auth_from_env(env, process="dashboard")  # last: a wrong setting elsewhere first
        return cls(
            host=host,
            port=port,
            nats_url=nats_url,
            namespace=namespace,
            auth_secret=auth.secret,
            auth_jwks_url=auth.jwks_url,
            auth_issuer=auth.issuer,
            auth_audience=auth.audience,
            targets=targets,
            roads=env_str(env, "FOODMESH_DASHBOARD_ROADS", ""),
            smtp_inbox_url=env_str(env, "FOODMESH_DASHBOARD_SMTP_INBOX_URL", ""),
        )


class Dashboard:
    """The app and its feeds; ``start``/``stop`` around serving it."""

    def __init__(
        self,
        config: DashboardConfig,
        *,
        clock: Callable[[], float] = time.time,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.config = config
        # The gateway's check, without the service key: service tokens are refused here.
        self.verifier = verifier or TokenVerifier.configured(
            secret=config.auth_secret, jwks_url=config.auth_jwks_url,
            issuer=config.auth_issuer, audience=config.auth_audience,
        )  # fmt: skip
        #: The latest ops viewer's token and its expiry: the background reads' credential.
        self._viewer: tuple[str, float] | None = None
        self.clock = clock
        self.state = CityState()
        self.health: dict[str, str] = {name: "UNKNOWN" for name in config.targets}
        self.restaurants: list[list[Any]] = []
        self.surge: list[list[Any]] = []
        self.forecast = ForecastBoard()
        self._map: bytes | None = None
        self._nc: NATS | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # No credential of its own: every call carries a viewer's token (see _viewer).
        opts = ClientOptions(deadline_s=3.0)
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
            asyncio.create_task(self._forecast_loop(), name="dashboard-forecast"),
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
            viewer = self._viewer_metadata()
            if viewer is None:  # nobody logged in yet: no credential to ask with
                await asyncio.sleep(0.5)
                continue
            try:
                found: dict[str, list[Any]] = {}
                for lat, lon in search_grid(_CENTER):  # search answers who delivers *there*
                    token = ""
                    while True:
                        resp = await self.catalog.search_restaurants(
                            catalog_pb2.SearchRestaurantsRequest(
                                lat=lat, lon=lon, radius=25, page_size=100, page_token=token
                            ),
                            metadata=viewer,
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
            viewer = self._viewer_metadata()
            cells = surge_cells(self.restaurants) if self.restaurants and viewer else []
            found = []
            for cell, lat, lon in cells:
                try:
                    resp = await self.pricing.get_surge(
                        pricing_pb2.GetSurgeRequest(lat=lat, lon=lon), metadata=viewer or ()
                    )
                except grpc.aio.AioRpcError:
                    break  # Pricing not there (yet): try again next round
                s = resp.surge
                found.append([s.cell or cell, lat, lon, round(s.multiplier, 2), s.demand,
                              s.supply])  # fmt: skip
            if cells:
                self.surge = found
            await asyncio.sleep(self.config.surge_every_s if cells else 0.5)

    async def _forecast_loop(self) -> None:
        """Pricing's demand forecast of the busiest cells, beside what they ordered."""
        if self.pricing is None:
            return
        while True:
            viewer = self._viewer_metadata()
            if viewer is not None:
                try:
                    self.forecast.update(await self.pricing.forecast_demand(
                        pricing_pb2.ForecastDemandRequest(limit=8), metadata=viewer))  # fmt: skip
                except grpc.aio.AioRpcError as exc:  # Pricing not there (yet): next round
                    log.debug("no demand forecast: %s", exc.code().name)
            await asyncio.sleep(self.config.surge_every_s if viewer else 0.5)

    # ------------------------------------------------------------------- http
    def _viewer_metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The latest ops viewer's token as call metadata, while it is valid."""
        if self._viewer is None or self._viewer[1] <= self.clock():
            return None
        return bearer(self._viewer[0])

    async def _principal(self, token: str) -> Principal:
        """The ops viewer a token names; raises the 401 or 403 response saying why."""
        try:
            principal = await self.verifier.verify_async(token)
        except InvalidToken as exc:
            raise _refusal(401, "UNAUTHENTICATED", f"invalid token: {exc}") from None
        if principal.role != "ops":
            why = f"the dashboard is for ops; this token's role is {principal.role!r}"
            raise _refusal(403, "PERMISSION_DENIED", why)
        if principal.expires_at > self.clock():
            self._viewer = (token, principal.expires_at)
        return principal

    @web.middleware
    async def _require_ops(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every route but the login page, the liveness probe and static files needs ops."""
        if request.path in _OPEN or request.path.startswith("/static/"):
            return await handler(request)
        try:
            if link := request.query.get("token"):  # a ready-made link: keep it as a cookie
                principal = await self._principal(link)
                query = {k: v for k, v in request.query.items() if k != "token"}
                # One leading slash, whatever the link had: "//host/" would send the viewer,
                # just logged in, to another site (a protocol-relative address).
                path = "/" + request.path.lstrip("/\\")
                there = URL.build(path=path, query=query or None, encoded=False)
                found = web.HTTPSeeOther(location=str(there))
                _set_cookie(found, request, link, principal, self.clock())
                raise found
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
            if header and not token:
                raise _refusal(401, "UNAUTHENTICATED", "authorization must be 'Bearer <token>'")
            token = token or request.cookies.get(COOKIE, "")
            if not token:
                raise _refusal(401, "UNAUTHENTICATED",
                               "the dashboard needs an ops token: log in at /login")  # fmt: skip
            request[_VIEWER] = _Viewer(token, await self._principal(token))
        except web.HTTPUnauthorized as refused:
            if request.path == "/":  # a browser: the login page, which says what to do
                return web.FileResponse(_STATIC / "login.html", status=401)
            raise refused
        return await handler(request)

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(_STATIC / "login.html")

    async def _login(self, request: web.Request) -> web.Response:
        """Takes a token (form field or JSON ``token``); sets the cookie for an ops one."""
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _refusal(400, "INVALID_ARGUMENT", "body is not JSON") from None
            token = body.get("token") if isinstance(body, dict) else None
        else:
            token = (await request.post()).get("token")
        if not isinstance(token, str) or not token.strip():
            raise _refusal(400, "INVALID_ARGUMENT", "token: a bearer token is required",
                           field="token")  # fmt: skip
        principal = await self._principal(token.strip())
        done = web.json_response({"subject": principal.subject, "role": principal.role})
        _set_cookie(done, request, token.strip(), principal, self.clock())
        return done

    async def _logout(self, request: web.Request) -> web.Response:
        gone = web.json_response({"status": "logged out"})
        gone.del_cookie(COOKIE, path="/")
        return gone

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._require_ops])
        app.router.add_get("/", self._index)
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/map", self._map_json)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/orders/{order_id}", self._order)
        app.router.add_get("/api/drivers/{driver_id}/path", self._path)
        app.router.add_static("/static/", _STATIC, show_index=False)
        add_mail_routes(app, self.config.smtp_inbox_url)
        return app

    def picture(self) -> dict[str, Any]:
        snap = self.state.snapshot(self.clock())
        snap["health"] = dict(self.health)
        snap["surge"] = self.surge
        snap["forecast"] = self.forecast.picture()
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
        viewer = request[_VIEWER].principal
        n = 0
        try:
            while self.clock() < viewer.expires_at:  # an expired token's stream ends
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
        token = request[_VIEWER].token
        try:
            resp = await self.orders.get_order(
                order_pb2.GetOrderRequest(order_id=oid), metadata=bearer(token)
            )
        except grpc.aio.AioRpcError as exc:
            return _grpc_error(exc)
        full = json_format.MessageToDict(resp.order, preserving_proto_field_name=True)
        # What the details pane shows; no customer, address, items or payment.
        body = {k: full[k] for k in _ORDER_FIELDS if k in full}
        customer = full.get("customer_id")
        for step in body.get("timeline", []):
            if customer and step.get("actor") == customer:
                step["actor"] = "customer"
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
            token = request[_VIEWER].token
            try:
                resp = await self.location.get_location_history(req, metadata=bearer(token))
            except grpc.aio.AioRpcError as exc:
                return _grpc_error(exc)
            points = [[p.timestamp.seconds, round(p.lat, 5), round(p.lon, 5)]
                      for p in resp.points]  # fmt: skip
        return web.json_response({"driver_id": did, "points": points})


#: The fields of an order that /api/orders/{id} returns (the details pane's).
_ORDER_FIELDS = ("order_id", "status", "restaurant_id", "restaurant_name", "driver_id",
                 "estimated_delivery_time", "timeline", "created_at", "updated_at",
                 "alert", "cancellation_reason")  # fmt: skip


def _refusal(status: int, code: str, message: str, *, field: str = "") -> web.HTTPException:
    """A JSON error response to raise: ``{"code", "message"}`` (and the field at fault)."""
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["details"] = [{"field_violations": [{"field": field, "description": message}]}]
    kind = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden}[status]
    headers = {"WWW-Authenticate": 'Bearer realm="foodmesh-dashboard"'} if status == 401 else {}
    return kind(text=json.dumps(body), content_type="application/json", headers=headers)


def _set_cookie(
    resp: web.StreamResponse, request: web.Request, token: str, who: Principal, now: float
) -> None:
    """The viewer's token as an HttpOnly, same-site cookie that dies with the token."""
    max_age = max(1, int(min(who.expires_at - now, 86400)))
    resp.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Strict",
                    secure=request.secure, max_age=max_age)  # fmt: skip


def _grpc_error(exc: grpc.aio.AioRpcError) -> web.Response:
    status = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400,
              grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
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
        return grpc.aio.insecure_channel(target, options=mesh_channel_args())
    return grpc.aio.secure_channel(target, credentials, options=mesh_channel_args())


def main() -> int:
    """Runs the dashboard until SIGTERM/SIGINT; settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = read_at_start("dashboard", DashboardConfig.from_env)
    if config is None:
        return 1
    try:
        asyncio.run(_run(config))
    except OSError as exc:
        print(f"dashboard: cannot listen on {config.host}:{config.port}: {exc}", flush=True)
        return 1
    return 0
