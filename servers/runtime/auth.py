"""Who may call what: bearer tokens checked against each RPC's ``(foodmesh.v1.access)`` roles.

The roles live in the contracts (``proto/foodmesh/v1/*.proto``), so the gateway
and every service enforce the same rule from the same place. A method of ours
with no access option is refused to everybody; methods outside ``foodmesh.v1``
(health, reflection) are open. Ownership (my order, my stream) is the
service's own check on top, through :func:`current_principal`.

Tokens are checked by :class:`foodmesh.core.auth.TokenVerifier`: user tokens (HS256 with
the shared secret, or RS256/ES256 against the OIDC provider's JWKS when
``FOODMESH_AUTH_JWKS_URL`` is set), and the services' own short-lived service tokens
under the service key, which only services take (see :mod:`foodmesh.core.auth`). A verified
token is cached at most a minute and never past its ``exp``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterable, Mapping

from google.protobuf import descriptor, descriptor_pool

import foodmesh.v1  # noqa: F401 — registers the contracts' descriptors
from foodmesh.core.auth import InvalidToken, Principal, TokenVerifier, UnknownSigningKey
from foodmesh.core.errors import PermissionDenied, Unauthenticated
from foodmesh.v1 import (  # noqa: F401 — imported for their descriptors
    catalog_pb2,
    common_pb2,
    dispatch_pb2,
    eta_pb2,
    location_pb2,
    notification_pb2,
    options_pb2,
    order_pb2,
    pricing_pb2,
)

__all__ = ["Authorizer", "KeysPending", "access_rules", "current_principal", "require"]

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)
_PACKAGE = "foodmesh.v1."


def _role_name(value: int) -> str:
    return common_pb2.Role.Name(value).removeprefix("ROLE_").lower()  # type: ignore[arg-type]


def access_rules(services: Iterable[str]) -> dict[str, frozenset[str]]:
    """``/pkg.Service/Method`` → the roles that may call it, for every method of ``services``."""
    pool = descriptor_pool.Default()
    rules: dict[str, frozenset[str]] = {}
    for name in services:
        if not name.startswith(_PACKAGE):
            continue
        svc: descriptor.ServiceDescriptor = pool.FindServiceByName(name)
        for method in svc.methods:
            rule = method.GetOptions().Extensions[options_pb2.access]
            rules[f"/{name}/{method.name}"] = frozenset(_role_name(r) for r in rule.roles)
    return rules


class KeysPending(Unauthenticated):
    """A token names a signing key the JWKS does not hold yet, and a fetch is allowed.

    The interceptor fetches the keys off the event loop (:meth:`Authorizer.fetch_keys`)
    and authorizes again; a call that still fails is refused with this error's message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="INVALID_TOKEN")


class Authorizer:
    """Checks one call's credential against the method's roles; caches verified tokens."""

    __slots__ = ("_cache", "_rules", "verifier")

    _CACHE_MAX = 10_000

    def __init__(
        self,
        secret: str,
        rules: Mapping[str, frozenset[str]],
        *,
        verifier: TokenVerifier | None = None,
        service_secret: str | None = None,
    ) -> None:
        # Without an explicit verifier the environment decides (JWKS or HS256 user tokens);
        # services always take service tokens (``service_secret``, or the derived key).
        self.verifier = verifier or TokenVerifier.from_env(
            secret=secret, service_secret=service_secret, services=True
        )
        self._rules = dict(rules)
        self._cache: dict[str, tuple[Principal, float]] = {}

    def _verify(self, token: str) -> Principal:
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            # Never fetch keys here: this runs on the event loop (see KeysPending).
            principal = self.verifier.verify(token, now=now, fetch=False)
        except UnknownSigningKey as exc:
            jwks = self.verifier.jwks
            if jwks is not None and jwks.may_refresh():
                raise KeysPending(f"invalid bearer token: {exc}") from None
            raise Unauthenticated(f"invalid bearer token: {exc}", reason="INVALID_TOKEN") from None
        except InvalidToken as exc:
            raise Unauthenticated(f"invalid bearer token: {exc}", reason="INVALID_TOKEN") from None
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        # Re-verified at least once a minute, and never kept past the token's expiry.
        self._cache[token] = (principal, min(now + 60.0, principal.expires_at))
        return principal

    async def fetch_keys(self) -> None:
        """Fetches the JWKS in a worker thread (after :class:`KeysPending`)."""
        jwks = self.verifier.jwks
        if jwks is not None:
            await asyncio.to_thread(jwks.refresh)

    def authorize(self, method: str, metadata: Mapping[str, str | bytes]) -> Principal | None:
        """The caller of ``method``; raises Unauthenticated / PermissionDenied naming why."""
        if not method.startswith("/" + _PACKAGE):
            return None
        roles = self._rules.get(method)
        if roles is None:
            # Served here but unknown to the rules: a servicer outside our contracts.
            return None
        if not roles:
            raise PermissionDenied(f"{method} has no access rule: nobody may call it")
        header = metadata.get("authorization")
        if not header:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <token>'",
                reason="NO_TOKEN",
            )
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be 'Bearer <token>'", reason="INVALID_TOKEN")
        principal = self._verify(token.strip())
        if principal.role not in roles:
            raise PermissionDenied(
                f"role {principal.role!r} may not call {method.rsplit('/', 1)[-1]} "
                f"(allowed: {', '.join(sorted(roles))})",
                reason="ROLE_NOT_ALLOWED",
            )
        return principal


def current_principal() -> Principal | None:
    """The authenticated caller of the RPC being handled (None outside one or when open)."""
    return _principal.get()


def require() -> Principal:
    """The caller of the RPC being handled; raises Unauthenticated when there is none."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("this call needs a bearer token", reason="NO_TOKEN")
    return principal
