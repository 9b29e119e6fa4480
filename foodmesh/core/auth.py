"""Bearer tokens: who is calling and in what role.

Two kinds of token, told apart by the JWT header's ``alg``:

- **HS256** (dev mode, and the services' own tokens): a compact JWT signed with
  HMAC-SHA256 and the shared secret ``FOODMESH_AUTH_SECRET``; minted by
  :func:`mint_token` (the simulator, the tests, ``foodmesh token``) and checked by
  :func:`verify_token`, pure standard library.
- **RS256 / ES256** (production): issued by an OIDC provider and checked against
  the public keys it publishes at ``FOODMESH_AUTH_JWKS_URL`` (:class:`JwksCache`:
  cached, refetched on a ``kid`` it has not seen and every ``ttl_s``), with the
  ``iss`` / ``aud`` of ``FOODMESH_AUTH_ISSUER`` / ``FOODMESH_AUTH_AUDIENCE``.
  With a JWKS URL set, HS256 tokens are still taken (the services' own calls) but
  only when a real secret is set: the public dev secret is refused.

Claims: ``sub`` (the customer, driver, restaurant or service id), ``role``
(``customer``, ``restaurant``, ``driver``, ``ops`` or ``service``), ``iat`` and
``exp`` (seconds since the epoch). :class:`TokenVerifier` picks the check by the
token's header; the gateway and every service use one (``TokenVerifier.from_env``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

__all__ = [
    "DEV_SECRET",
    "ROLES",
    "InvalidToken",
    "JwksCache",
    "Principal",
    "TokenVerifier",
    "UnknownSigningKey",
    "bearer",
    "mint_token",
    "verify_token",
]

#: The secret of a laptop or CI run; deployments set ``FOODMESH_AUTH_SECRET``.
DEV_SECRET = "foodmesh-dev-secret-not-for-production"
ROLES = ("customer", "restaurant", "driver", "ops", "service")
_HEADER = b'{"alg":"HS256","typ":"JWT"}'
#: Clock skew tolerated between the signer and the verifier.
_LEEWAY_S = 30.0


log = logging.getLogger("foodmesh.core.auth")


class InvalidToken(ValueError):
    """The token is malformed, badly signed or expired; the message says which."""


class UnknownSigningKey(InvalidToken):
    """The token names a key (``kid``) the JWKS does not hold (yet)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    subject: str
    role: str

    def is_(self, role: str, subject: str | None = None) -> bool:
        """True when the caller has ``role`` (and is ``subject``, when given)."""
        return self.role == role and (subject is None or self.subject == subject)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _sign(secret: str, signing_input: bytes) -> bytes:
    return hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()


def mint_token(
    secret: str, *, subject: str, role: str, ttl_s: float = 3600.0, now: float | None = None
) -> str:
    """A signed token for ``subject`` in ``role``, valid ``ttl_s`` seconds."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    if not subject:
        raise ValueError("subject must not be empty")
    iat = int(time.time() if now is None else now)
    claims = {"sub": subject, "role": role, "iat": iat, "exp": iat + int(ttl_s)}
    signing_input = _b64(_HEADER) + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    return (signing_input + b"." + _b64(_sign(secret, signing_input))).decode()


def verify_token(secret: str, token: str, *, now: float | None = None) -> Principal:
    """The caller a token names; raises :class:`InvalidToken` saying what is wrong with it."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token: expected three dot-separated parts")
    header_b64, claims_b64, sig_b64 = parts
    try:
        header = json.loads(_unb64(header_b64))
        sig = _unb64(sig_b64)
    except ValueError:
        raise InvalidToken("malformed token: not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidToken("unsupported token: only alg HS256 is accepted")
    expected = _sign(secret, f"{header_b64}.{claims_b64}".encode())
    if not hmac.compare_digest(sig, expected):
        raise InvalidToken("bad signature")
    try:
        claims = json.loads(_unb64(claims_b64))
    except ValueError:
        raise InvalidToken("malformed token: claims are not base64url JSON") from None
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token: claims are not an object")
    sub, role, exp = claims.get("sub"), claims.get("role"), claims.get("exp")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("token has no subject (sub)")
    if role not in ROLES:
        raise InvalidToken(f"token has an unknown role {role!r}")
    if not isinstance(exp, int | float):
        raise InvalidToken("token has no expiry (exp)")
    if exp + _LEEWAY_S < (time.time() if now is None else now):
        raise InvalidToken("token expired")
    return Principal(subject=sub, role=str(role))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents ``token``."""
    return (("authorization", f"Bearer {token}"),)


# ------------------------------------------------------------------ production: JWKS

#: Asymmetric algorithms taken from an OIDC provider.
ASYMMETRIC = frozenset({"RS256", "ES256"})
_MAX_JWKS_BYTES = 1 << 20


def _fetch_url(url: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 — a configured URL
        data: bytes = resp.read(_MAX_JWKS_BYTES + 1)
    if len(data) > _MAX_JWKS_BYTES:
        raise ValueError(f"JWKS larger than {_MAX_JWKS_BYTES} bytes")
    return data


class JwksCache:
    """The public keys an OIDC provider publishes at its JWKS URL, by ``kid``.

    Fetched on first use, again after ``ttl_s`` (in a background thread, the old keys
    serving meanwhile) and at once when a token names a ``kid`` not held, at most once
    every ``min_refresh_s`` (a flood of made-up kids cannot hammer the provider). A
    failed fetch keeps the keys held and is logged.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 600.0,
        min_refresh_s: float = 30.0,
        timeout_s: float = 2.0,
        fetch: Callable[[str, float], bytes] = _fetch_url,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._fetch = fetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0  # last successful fetch (monotonic)
        self._tried_at = -1e18  # last attempt
        self._lock = threading.Lock()
        self._background: threading.Thread | None = None
        self.fetches = 0

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` if held (starts a background refresh when the keys are old)."""
        if self._fetched_at and time.monotonic() - self._fetched_at > self.ttl_s:
            self._refresh_in_background()
        return self._keys.get(kid)

    @property
    def loaded(self) -> bool:
        return self._fetched_at > 0

    def may_refresh(self) -> bool:
        """True when a refresh now would fetch (not throttled)."""
        return time.monotonic() - self._tried_at >= self.min_refresh_s or not self.loaded

    def refresh(self) -> bool:
        """Fetches the keys now unless throttled; True when they were fetched."""
        with self._lock:
            if not self.may_refresh():
                return False
            self._tried_at = time.monotonic()
            try:
                doc = json.loads(self._fetch(self.url, self.timeout_s))
                if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
                    raise ValueError("not a JWK set (no 'keys' list)")
                keys: dict[str, jwt.PyJWK] = {}
                for raw in doc["keys"]:
                    if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                        continue
                    try:
                        k = jwt.PyJWK(raw)
                    except jwt.PyJWTError as exc:
                        log.warning("JWKS %s: key %s skipped: %s", self.url, raw.get("kid"), exc)
                        continue
                    if k.algorithm_name in ASYMMETRIC:
                        keys[str(raw.get("kid", ""))] = k
            except (OSError, ValueError) as exc:
                log.warning("JWKS %s could not be fetched (keeping %d keys): %s",
                            self.url, len(self._keys), exc)  # fmt: skip
                return False
            self._keys = keys
            self._fetched_at = time.monotonic()
            self.fetches += 1
            log.info("JWKS %s: %d signing keys", self.url, len(keys))
            return True

    def _refresh_in_background(self) -> None:
        if not self.may_refresh() or (self._background and self._background.is_alive()):
            return
        self._background = threading.Thread(target=self.refresh, name="jwks-refresh", daemon=True)
        self._background.start()


def _segment_json(segment: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(_unb64(segment))
    except ValueError:
        raise InvalidToken(f"malformed token: {what} is not base64url JSON") from None
    if not isinstance(doc, dict):
        raise InvalidToken(f"malformed token: {what} is not an object")
    return doc


class TokenVerifier:
    """Checks a bearer token of either kind (HS256 with the secret, RS256/ES256 with JWKS)."""

    def __init__(
        self,
        secret: str | None,
        *,
        jwks: JwksCache | None = None,
        issuer: str = "",
        audience: str = "",
        leeway_s: float = _LEEWAY_S,
    ) -> None:
        self.secret = secret
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s

    @classmethod
    def configured(
        cls,
        *,
        secret: str = DEV_SECRET,
        jwks_url: str = "",
        issuer: str = "",
        audience: str = "",
        jwks_ttl_s: float = 600.0,
        jwks_min_refresh_s: float = 30.0,
    ) -> TokenVerifier:
        """HS256 with ``secret`` alone, or JWKS (+ HS256 only with a real secret) given a URL."""
        if not jwks_url:
            return cls(secret)
        return cls(
            None if secret == DEV_SECRET else secret,
            jwks=JwksCache(jwks_url, ttl_s=jwks_ttl_s, min_refresh_s=jwks_min_refresh_s),
            issuer=issuer,
            audience=audience,
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, secret: str | None = None
    ) -> TokenVerifier:
        """The verifier the settings ask for: JWKS when ``FOODMESH_AUTH_JWKS_URL`` is set.

        ``secret`` overrides ``FOODMESH_AUTH_SECRET`` (a service's settings already read it).
        """
        env = os.environ if env is None else env

        def seconds(name: str, default: float) -> float:
            try:
                return float(env.get(name) or default)
            except ValueError:
                raise ValueError(f"{name}: expected a number of seconds") from None

        return cls.configured(
            secret=secret or env.get("FOODMESH_AUTH_SECRET") or DEV_SECRET,
            jwks_url=env.get("FOODMESH_AUTH_JWKS_URL", "").strip(),
            issuer=env.get("FOODMESH_AUTH_ISSUER", "").strip(),
            audience=env.get("FOODMESH_AUTH_AUDIENCE", "").strip(),
            jwks_ttl_s=seconds("FOODMESH_AUTH_JWKS_TTL_S", 600.0),
            jwks_min_refresh_s=seconds("FOODMESH_AUTH_JWKS_MIN_REFRESH_S", 30.0),
        )

    @property
    def mode(self) -> str:
        return "jwks" if self.jwks is not None else "hs256"

    def verify(self, token: str, *, now: float | None = None, fetch: bool = True) -> Principal:
        """The caller a token names; fetches the JWKS in this thread if a kid is new.

        With ``fetch=False`` a new kid raises :class:`UnknownSigningKey` instead, so an
        event loop's caller can fetch off the loop (:meth:`verify_async`) and try again.
        """
        try:
            return self._verify(token, now)
        except UnknownSigningKey:
            if not fetch or self.jwks is None or not self.jwks.refresh():
                raise
        return self._verify(token, now)

    async def verify_async(self, token: str) -> Principal:
        """As :meth:`verify`, with any JWKS fetch in a worker thread (the loop never blocks)."""
        try:
            return self._verify(token, None)
        except UnknownSigningKey:
            if self.jwks is None or not self.jwks.may_refresh():
                raise
            if not await asyncio.to_thread(self.jwks.refresh):
                raise
        return self._verify(token, None)

    def _verify(self, token: str, now: float | None) -> Principal:
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("malformed token: expected three dot-separated parts")
        header = _segment_json(parts[0], "header")
        alg = header.get("alg")
        if alg == "HS256":
            if self.secret is None:
                raise InvalidToken("unsupported token: HS256 is not accepted here (use the "
                                   "identity provider's token)")  # fmt: skip
            return verify_token(self.secret, token, now=now)
        if self.jwks is None or alg not in ASYMMETRIC:
            accepted = "HS256" if self.jwks is None else "HS256, RS256 or ES256"
            raise InvalidToken(f"unsupported token: alg {alg!r} (accepted: {accepted})")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token has no key id (kid)")
        key = self.jwks.key(kid)
        if key is None:
            raise UnknownSigningKey(f"unknown signing key {kid!r}")
        if key.algorithm_name != alg:
            raise InvalidToken(f"key {kid!r} is for {key.algorithm_name}, not {alg}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"token is not for this audience ({self.audience})") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"token is not from the issuer {self.issuer}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token has no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        sub, role = claims.get("sub"), claims.get("role")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("token has no subject (sub)")
        if role not in ROLES:
            raise InvalidToken(f"token has an unknown role {role!r}")
        return Principal(subject=sub, role=str(role))
