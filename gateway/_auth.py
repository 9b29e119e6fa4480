"""Who calls: the bearer token verified (and its principal cached), the route's roles checked.

401/403 come before any upstream call; the token goes on upstream, where each service
checks it again.
"""

from __future__ import annotations

import time

import grpc
from aiohttp import web

from foodmesh.core.auth import InvalidToken, Principal, TokenVerifier
from gateway._errors import GatewayError, error_info
from gateway._routes import Route

__all__ = ["Authenticator"]

#: A verified token is checked again at least this often (and never kept past its expiry).
_RECHECK_S = 30.0
_MAX_CACHED = 10_000


class Authenticator:
    """Bearer tokens through ``verifier``, each verified at most every 30 s."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier
        self._principals: dict[str, tuple[Principal, float]] = {}

    async def authorize(self, route: Route, request: web.Request) -> Principal:
        """The caller of ``route``: 401 without a valid token, 403 for a role it does not admit."""
        if not route.roles:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{route.rpc.full_name} may not be called by anybody",
                [error_info("ROLE_NOT_ALLOWED")],
            )
        header = request.headers.get("Authorization", "")
        if not header:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this call needs a bearer token (Authorization: Bearer <token>)",
                [error_info("NO_TOKEN")],
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization must be 'Bearer <token>'",
                [error_info("INVALID_TOKEN")],
            )
        try:
            principal = await self.verify(token.strip())
        except InvalidToken as exc:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"invalid bearer token: {exc}",
                [error_info("INVALID_TOKEN")],
            ) from None
        if principal.role == "service":  # internal identities never come from outside
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "service identities may not call through the gateway",
                [error_info("ROLE_NOT_ALLOWED", role=principal.role)],
            )
        if principal.role not in route.roles:
            allowed = ", ".join(sorted(route.roles))
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {principal.role!r} may not call {route.rpc.name} (allowed: {allowed})",
                [error_info("ROLE_NOT_ALLOWED", role=principal.role)],
            )
        return principal

    async def verify(self, token: str) -> Principal:
        now = time.time()
        hit = self._principals.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await self.verifier.verify_async(token)
        if len(self._principals) >= _MAX_CACHED:
            self._principals.clear()
        # Checked again at least every 30 s, and never kept past the token's expiry.
        self._principals[token] = (principal, min(now + _RECHECK_S, principal.expires_at))
        return principal
