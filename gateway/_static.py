"""What the gateway serves itself: the API docs, the OpenAPI document, the customer web page."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from gateway._docs import DOCS_HTML, DOCS_INIT_JS, asset
from gateway._openapi import openapi
from gateway._routes import RouteTable

__all__ = ["Static"]

_APP_DIR = Path(__file__).parent / "static" / "app"
_APP_FILES = {f.name: f for f in _APP_DIR.glob("*") if f.suffix in (".html", ".js", ".css")}


class Static:
    """``/docs``, ``/openapi.json`` (built once from the routes) and ``/app/``."""

    def __init__(self, routes: RouteTable) -> None:
        self.routes = routes
        self._openapi: bytes | None = None

    async def docs(self, request: web.Request) -> web.Response:
        return web.Response(text=DOCS_HTML, content_type="text/html")

    async def docs_asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "init.js":
            return web.Response(text=DOCS_INIT_JS, content_type="application/javascript")
        path: Path | None = asset(name)
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    async def customer_app(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        if not name:
            raise web.HTTPFound("/app/index.html")
        path = _APP_FILES.get(name)
        if path is None:  # a fixed set of files: no path from the request reaches the disk
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def openapi_json(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            doc = openapi(self.routes)
            self._openapi = json.dumps(doc, separators=(",", ":")).encode()
        return web.Response(body=self._openapi, content_type="application/json")
