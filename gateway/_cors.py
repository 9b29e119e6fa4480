"""Cross-origin requests: preflights answered, and the allow headers on every response."""

from __future__ import annotations

import grpc
from aiohttp import web

from gateway._config import GatewayConfig
from gateway._errors import GatewayError, error_info
from gateway._routes import RouteTable

__all__ = ["Cors"]

#: Request headers a browser may send cross-origin (answered in preflights).
_ALLOW_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, X-Request-Id, X-Request-Timeout, "
    "grpc-timeout, Last-Event-ID, traceparent, tracestate"
)
_EXPOSE_HEADERS = "X-Request-Id, Retry-After, Allow"


class Cors:
    """The configured origins' access to the API (``config.cors_origins``)."""

    def __init__(self, config: GatewayConfig, routes: RouteTable) -> None:
        self.config = config
        self.routes = routes

    @staticmethod
    def is_preflight(request: web.Request) -> bool:
        return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers

    def preflight(self, request: web.Request, request_id: str) -> web.Response:
        """204 with what the origin may send; 403 for an origin not allowed, 404/405 for a
        route that does not exist."""
        origin = request.headers.get("Origin", "")
        if not origin or not self.config.cors_allows(origin):
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"cross-origin requests from {origin or 'an unnamed origin'} are not allowed",
                [error_info("CORS_ORIGIN_NOT_ALLOWED", origin=origin)],
            )
        wanted = request.headers["Access-Control-Request-Method"].upper()
        self.routes.match(wanted, request.raw_path)  # 404 / 405 when it does not exist
        return web.Response(
            status=204,
            headers={
                "X-Request-Id": request_id,
                "Access-Control-Allow-Methods": wanted,
                "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                "Access-Control-Max-Age": str(self.config.cors_max_age_s),
            },
        )

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every response to an allowed origin says so (errors and streams included)."""
        origin = request.headers.get("Origin")
        if origin and self.config.cors_allows(origin):
            response.headers["Access-Control-Allow-Origin"] = (
                "*" if "*" in self.config.cors_origins else origin
            )
            response.headers["Access-Control-Expose-Headers"] = _EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")
