"""Bearer tokens: who is calling and in what role.

Two kinds of token, told apart by the JWT header's ``alg``:

- **HS256** (dev mode, and the services' own tokens): a compact JWT signed with
  HMAC-SHA256 and the shared secret ``FOODMESH_AUTH_SECRET``; minted by
  :func:`mint_token` (the simulator, the tests, ``foodmesh token``) and checked by
  :func:`verify_token`, both through PyJWT (``algorithms=["HS256"]`` only); the claims'
  rules (finite ``exp`` not too far away, the ``sub`` pattern, the roles) are ours.
- **RS256 / ES256** (production): issued by an OIDC provider and checked against
  the public keys it publishes at ``FOODMESH_AUTH_JWKS_URL`` (:class:`JwksCache`:
  cached, refetched on a ``kid`` it has not seen and every ``ttl_s``), with the
  ``iss`` / ``aud`` of ``FOODMESH_AUTH_ISSUER`` / ``FOODMESH_AUTH_AUDIENCE``.
  With a JWKS URL set, user tokens come only from that provider: HS256 user tokens
  are refused (the services' own calls carry service tokens, below).

Claims: ``sub`` (the customer, driver, restaurant or service id), ``role``
(``customer``, ``restaurant``, ``driver``, ``ops`` or ``service``), ``iat`` and
``exp`` (seconds since the epoch). :class:`TokenVerifier` picks the check by the
token's header; the gateway and every service use one (``TokenVerifier.from_env``).

**Service tokens** (what the services present to each other) are a separate kind:
HS256 under a separate key (``FOODMESH_SERVICE_SECRET``, by default derived from
``FOODMESH_AUTH_SECRET`` with :func:`service_secret_for`), with header ``kid``
``foodmesh-service`` and ``aud`` ``foodmesh-service``, living at most 15 minutes
(:class:`ServiceCredentials` mints and refreshes them). Only the services' verifiers
hold the service key; the gateway and the dashboard refuse these tokens, and a user
token can never carry the ``service`` role.

**Dev mode** is explicit: :func:`auth_settings` (the one place that decides) refuses a
missing, short or public secret unless ``FOODMESH_DEV=1``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

__all__ = [
    "DEV_SECRET",
    "ROLES",
    "SERVICE_AUDIENCE",
    "AuthConfigError",
    "AuthSettings",
    "InvalidToken",
    "JwksCache",
    "Principal",
    "TokenVerifier",
    "UnknownSigningKey",
    "ServiceCredentials",
    "auth_settings",
    "bearer",
    "dev_mode",
    "mint_service_token",
    "mint_token",
    "service_secret_for",
    "valid_subject",
    "verify_token",
]

#: The secret of a laptop or CI run; deployments set ``FOODMESH_AUTH_SECRET``.
DEV_SECRET = "foodmesh-dev-secret-not-for-production"
ROLES = ("customer", "restaurant", "driver", "ops", "service")
#: Clock skew tolerated between the signer and the verifier.
_LEEWAY_S = 30.0
#: The longest a user token may still be valid for (a far-away ``exp`` is refused).
MAX_USER_TOKEN_S = 31 * 86400.0
#: Service tokens: their key id and audience, their life, and the longest life accepted.
SERVICE_KID = "foodmesh-service"
SERVICE_AUDIENCE = "foodmesh-service"
SERVICE_TOKEN_TTL_S = 600.0
MAX_SERVICE_TOKEN_S = 900.0
#: The roles a service token may carry: a service's own, and Dispatch acting for a driver.
SERVICE_TOKEN_ROLES = ("service", "driver")
#: The smallest secret accepted outside dev mode, in bytes.
MIN_SECRET_BYTES = 32
#: A subject goes into NATS subjects and Redis keys: no ``.``, ``*``, ``>``, no whitespace.
_SUBJECT = re.compile(r"[A-Za-z0-9_\-:@|+=]{1,128}")


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
    #: When the token that named this caller expires (seconds since the epoch).
    expires_at: float = field(default=math.inf, compare=False)

    def is_(self, role: str, subject: str | None = None) -> bool:
        """True when the caller has ``role`` (and is ``subject``, when given)."""
        return self.role == role and (subject is None or self.subject == subject)


def valid_subject(subject: object) -> bool:
    """True for an id fit for NATS subjects and keys: 1-128 of ``A-Za-z0-9_-:@|+=``."""
    return isinstance(subject, str) and _SUBJECT.fullmatch(subject) is not None


def service_secret_for(secret: str) -> str:
    """The service-token key derived from the user-token secret (when none is set apart)."""
    return hmac.new(secret.encode(), b"foodmesh service tokens v1", hashlib.sha256).hexdigest()


def _hs256(claims: dict[str, Any], secret: str, *, kid: str | None = None) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid} if kid else None)


def mint_token(
    secret: str, *, subject: str, role: str, ttl_s: float = 3600.0, now: float | None = None
) -> str:
    """A signed token for ``subject`` in ``role``, valid ``ttl_s`` seconds.

    Role ``service`` gives a service token (at most 15 minutes) under the service key
    derived from ``secret`` (:func:`service_secret_for`): the dev and test shorthand of
    :func:`mint_service_token`.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    if not valid_subject(subject):
        raise ValueError(f"subject {subject!r} is not a valid id")
    if role == "service":
        return mint_service_token(
            service_secret_for(secret), subject=subject, ttl_s=min(ttl_s, MAX_SERVICE_TOKEN_S),
            now=now,
        )  # fmt: skip
    iat = int(time.time() if now is None else now)
    return _hs256({"sub": subject, "role": role, "iat": iat, "exp": iat + int(ttl_s)}, secret)


def mint_service_token(
    service_secret: str,
    *,
    subject: str,
    role: str = "service",
    ttl_s: float = SERVICE_TOKEN_TTL_S,
    now: float | None = None,
) -> str:
    """A service token (``kid``/``aud`` ``foodmesh-service``) signed with the service key.

    Role ``driver`` is Dispatch moving an order as its driver (the one delegation there
    is): only services accept it, never the gateway; no other user role can be minted.
    """
    if role not in SERVICE_TOKEN_ROLES:
        raise ValueError(f"a service token carries role {' or '.join(SERVICE_TOKEN_ROLES)}, "
                         f"not {role!r}")  # fmt: skip
    if not valid_subject(subject):
        raise ValueError(f"subject {subject!r} is not a valid id")
    if not 0 < ttl_s <= MAX_SERVICE_TOKEN_S:
        raise ValueError(f"a service token lives 0-{MAX_SERVICE_TOKEN_S:g} s, not {ttl_s:g}")
    iat = int(time.time() if now is None else now)
    claims = {"sub": subject, "role": role, "aud": SERVICE_AUDIENCE, "iat": iat,
              "exp": iat + int(ttl_s)}  # fmt: skip
    return _hs256(claims, service_secret, kid=SERVICE_KID)


def _check_claims(
    claims: Mapping[str, Any], now: float | None, *, leeway_s: float, max_life_s: float
) -> Principal:
    """The principal of verified claims: a valid subject, a known role, a sane ``exp``."""
    sub, role, exp = claims.get("sub"), claims.get("role"), claims.get("exp")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("token has no subject (sub)")
    if not valid_subject(sub):
        raise InvalidToken("token subject (sub) is not a valid id: 1-128 of A-Za-z0-9_-:@|+=")
    if role not in ROLES:
        raise InvalidToken(f"token has an unknown role {role!r}")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidToken("token has no expiry (exp)")
    try:
        finite = math.isfinite(exp)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise InvalidToken("token expiry (exp) is not a finite number")
    t = time.time() if now is None else now
    nbf = claims.get("nbf")
    if nbf is not None:
        if isinstance(nbf, bool) or not isinstance(nbf, int | float):
            raise InvalidToken("token not-before (nbf) is not a number")
        try:
            if nbf - leeway_s > t:
                raise InvalidToken("token is not valid yet (nbf)")
        except OverflowError:
            raise InvalidToken("token not-before (nbf) is not a finite number") from None
    if exp + leeway_s < t:
        raise InvalidToken("token expired")
    if exp > t + max_life_s + leeway_s:
        raise InvalidToken(f"token expiry (exp) is more than {max_life_s:g} s away")
    return Principal(subject=sub, role=str(role), expires_at=float(exp))


#: What a missing required claim of an HS256 token is called in the refusal.
_MISSING = {
    "sub": "token has no subject (sub)",
    "exp": "token has no expiry (exp)",
    "aud": f"service token is not for {SERVICE_AUDIENCE}",
}


def _hs256_claims(secret: str, token: str, *, audience: str | None = None) -> dict[str, Any]:
    """The claims of an HS256 token signed with ``secret``; raises :class:`InvalidToken`.

    PyJWT checks the form, the algorithm, the signature, the required claims and (given
    ``audience``) ``aud``; the times are :func:`_check_claims`'s, against the caller's
    ``now`` and leeway, so PyJWT's own clock checks are off (tokens carry no ``nbf``).
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience,
            options={
                "require": ["sub", "exp", *(["aud"] if audience else [])],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": audience is not None,
                "strict_aud": True,
                "verify_sub": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad signature") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken("unsupported token: only alg HS256 is accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(_MISSING.get(exc.claim, f"token has no {exc.claim} claim")) from None
    except jwt.InvalidAudienceError:
        raise InvalidToken(_MISSING["aud"]) from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"malformed token: {exc}") from None
    return claims


def verify_token(
    secret: str, token: str, *, now: float | None = None, leeway_s: float = _LEEWAY_S
) -> Principal:
    """The caller a user token names; raises :class:`InvalidToken` saying what is wrong."""
    claims = _hs256_claims(secret, token)
    if claims.get("role") == "service":
        raise InvalidToken("role 'service' is only carried by service tokens")
    return _check_claims(claims, now, leeway_s=leeway_s, max_life_s=MAX_USER_TOKEN_S)


def verify_service_token(
    service_secret: str, token: str, *, now: float | None = None, leeway_s: float = _LEEWAY_S
) -> Principal:
    """The caller a service token names (signed with the service key, ``aud`` checked)."""
    claims = _hs256_claims(service_secret, token, audience=SERVICE_AUDIENCE)
    if claims.get("role") not in SERVICE_TOKEN_ROLES:
        raise InvalidToken(f"a service token may not carry role {claims.get('role')!r}")
    return _check_claims(claims, now, leeway_s=leeway_s, max_life_s=MAX_SERVICE_TOKEN_S)


class ServiceCredentials:
    """A service's own short-lived token, minted again before it expires.

    ``metadata()`` is called per call (``ClientOptions(credentials=...)``), so a long-lived
    client always presents a token with at least a third of its life left.
    """

    def __init__(
        self,
        service_secret: str,
        *,
        subject: str,
        ttl_s: float = SERVICE_TOKEN_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = service_secret
        self.subject = subject
        self.ttl_s = ttl_s
        self._clock = clock
        self._token = ""
        self._renew_at = -math.inf
        self.minted = 0

    def token(self) -> str:
        now = self._clock()
        if now >= self._renew_at:
            self._token = mint_service_token(self._secret, subject=self.subject,
                                             ttl_s=self.ttl_s, now=now)  # fmt: skip
            self._renew_at = now + self.ttl_s * 2 / 3
            self.minted += 1
        return self._token

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token())


# ------------------------------------------------------------------ the secrets' decision

_TRUE = frozenset({"1", "true", "yes", "on"})


class AuthConfigError(ValueError):
    """The process may not start with these auth settings; the message names the variable."""


def dev_mode(env: Mapping[str, str] | None = None) -> bool:
    """True when ``FOODMESH_DEV`` says this is a development run."""
    env = os.environ if env is None else env
    return env.get("FOODMESH_DEV", "").strip().lower() in _TRUE


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """The keys and identity-provider settings a process runs with."""

    #: HMAC key of user tokens (HS256 mode; in JWKS mode it only roots the service key).
    secret: str
    #: HMAC key of service tokens.
    service_secret: str
    dev: bool = False
    jwks_url: str = ""
    issuer: str = ""
    audience: str = ""


_warned_dev = False


def _secret_problem(name: str, value: str) -> str | None:
    if not value:
        return (f"{name} is not set: set a random secret of at least {MIN_SECRET_BYTES} bytes "
                "(or FOODMESH_DEV=1 for a development run)")  # fmt: skip
    if value == DEV_SECRET:
        return (f"{name} is the public development secret: set a random secret of at least "
                f"{MIN_SECRET_BYTES} bytes (or FOODMESH_DEV=1 for a development run)")  # fmt: skip
    if len(value.encode()) < MIN_SECRET_BYTES:
        return (f"{name} is {len(value.encode())} bytes: at least {MIN_SECRET_BYTES} are needed "
                "(or FOODMESH_DEV=1 for a development run)")  # fmt: skip
    return None


def auth_settings(
    env: Mapping[str, str] | None = None, *, process: str = "", service: bool = False
) -> AuthSettings:
    """The one decision on secrets every process makes at start.

    Outside dev mode ``FOODMESH_AUTH_SECRET`` must be at least 32 bytes and not the
    public dev secret, ``FOODMESH_SERVICE_SECRET`` too (required of a ``service`` process,
    one that signs service tokens: derived from the user secret it would be a key the
    gateway and the dashboard hold as well), and JWKS mode needs ``FOODMESH_AUTH_ISSUER``
    and ``FOODMESH_AUTH_AUDIENCE``; raises :class:`AuthConfigError` naming the variable.
    With ``FOODMESH_DEV=1`` the dev secret stands in, and a WARNING says so (once).
    """
    global _warned_dev
    env = os.environ if env is None else env
    dev = dev_mode(env)
    secret = env.get("FOODMESH_AUTH_SECRET", "")
    service_key = env.get("FOODMESH_SERVICE_SECRET", "")
    jwks_url = env.get("FOODMESH_AUTH_JWKS_URL", "").strip()
    issuer = env.get("FOODMESH_AUTH_ISSUER", "").strip()
    audience = env.get("FOODMESH_AUTH_AUDIENCE", "").strip()
    if not dev:
        if (problem := _secret_problem("FOODMESH_AUTH_SECRET", secret)) is not None:
            raise AuthConfigError(problem)
        if (service or service_key) and (
            problem := _secret_problem("FOODMESH_SERVICE_SECRET", service_key)
        ):
            raise AuthConfigError(
                problem + " (services sign their own tokens with a key the gateway and the"
                " dashboard do not hold)"
            )
        if service_key and service_key == secret:
            raise AuthConfigError("FOODMESH_SERVICE_SECRET must differ from FOODMESH_AUTH_SECRET")
        if jwks_url and not issuer:
            raise AuthConfigError(
                "FOODMESH_AUTH_ISSUER is not set: JWKS mode (FOODMESH_AUTH_JWKS_URL) "
                "takes tokens of one issuer only"
            )
        if jwks_url and not audience:
            raise AuthConfigError(
                "FOODMESH_AUTH_AUDIENCE is not set: JWKS mode (FOODMESH_AUTH_JWKS_URL) takes "
                "tokens issued for this API only, not for the provider's other clients"
            )
    elif not _warned_dev:
        _warned_dev = True
        log.warning("FOODMESH_DEV=1: DEVELOPMENT MODE%s: tokens signed with %s are accepted; "
                    "never run a deployment like this", f" ({process})" if process else "",
                    "the public dev secret" if not secret else "FOODMESH_AUTH_SECRET")  # fmt: skip
    secret = secret or DEV_SECRET
    return AuthSettings(
        secret=secret,
        service_secret=service_key or service_secret_for(secret),
        dev=dev,
        jwks_url=jwks_url,
        issuer=issuer,
        audience=audience,
    )


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


class TokenVerifier:
    """Checks a bearer token of any kind: a user token (HS256 with the secret, or RS256/ES256
    from the identity provider's JWKS) and, given the service key, a service token."""

    def __init__(
        self,
        secret: str | None,
        *,
        jwks: JwksCache | None = None,
        issuer: str = "",
        audience: str = "",
        leeway_s: float = _LEEWAY_S,
        service_secret: str | None = None,
    ) -> None:
        self.secret = secret
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.service_secret = service_secret

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
        service_secret: str | None = None,
    ) -> TokenVerifier:
        """HS256 user tokens with ``secret``, or (given a URL) only the JWKS's.

        ``service_secret``: service tokens are taken too (services; never the gateway).
        """
        if not jwks_url:
            return cls(secret, service_secret=service_secret)
        return cls(
            None,
            jwks=JwksCache(jwks_url, ttl_s=jwks_ttl_s, min_refresh_s=jwks_min_refresh_s),
            issuer=issuer,
            audience=audience,
            service_secret=service_secret,
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        secret: str | None = None,
        service_secret: str | None = None,
        services: bool = False,
    ) -> TokenVerifier:
        """The verifier the settings ask for: JWKS when ``FOODMESH_AUTH_JWKS_URL`` is set.

        ``secret`` overrides ``FOODMESH_AUTH_SECRET`` (a service's settings already read it);
        ``services``: take service tokens (with ``service_secret`` or the derived key).
        """
        env = os.environ if env is None else env

        def seconds(name: str, default: float) -> float:
            try:
                return float(env.get(name) or default)
            except ValueError:
                raise ValueError(f"{name}: expected a number of seconds") from None

        secret = secret or env.get("FOODMESH_AUTH_SECRET") or DEV_SECRET
        if services and not service_secret:
            service_secret = env.get("FOODMESH_SERVICE_SECRET") or service_secret_for(secret)
        return cls.configured(
            secret=secret,
            jwks_url=env.get("FOODMESH_AUTH_JWKS_URL", "").strip(),
            issuer=env.get("FOODMESH_AUTH_ISSUER", "").strip(),
            audience=env.get("FOODMESH_AUTH_AUDIENCE", "").strip(),
            jwks_ttl_s=seconds("FOODMESH_AUTH_JWKS_TTL_S", 600.0),
            jwks_min_refresh_s=seconds("FOODMESH_AUTH_JWKS_MIN_REFRESH_S", 30.0),
            service_secret=service_secret if services else None,
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
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg == "HS256" and header.get("kid") == SERVICE_KID:
            if self.service_secret is None:
                raise InvalidToken("service tokens are not accepted here")
            return verify_service_token(self.service_secret, token, now=now, leeway_s=self.leeway_s)
        if alg == "HS256":
            if self.secret is None:
                raise InvalidToken("unsupported token: HS256 is not accepted here (use the "
                                   "identity provider's token)")  # fmt: skip
            return verify_token(self.secret, token, now=now, leeway_s=self.leeway_s)
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
                options={
                    "require": [
                        "exp",
                        "sub",
                        *(["iss"] if self.issuer else []),
                        *(["aud"] if self.audience else []),
                    ],
                    "verify_aud": bool(self.audience),
                },
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
        except (OverflowError, TypeError):  # an ``exp`` of Infinity, a list, ...
            raise InvalidToken("token expiry (exp) is not a finite number") from None
        if claims.get("role") == "service":
            raise InvalidToken("role 'service' is only carried by service tokens")
        return _check_claims(claims, now, leeway_s=self.leeway_s, max_life_s=MAX_USER_TOKEN_S)
