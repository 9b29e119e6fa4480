"""Bearer tokens: who is calling and in what role. Pure standard library, no I/O.

A token is a compact JWT signed with HMAC-SHA256 (``alg: HS256``), so any JWT
library or jwt.io can read one. Claims: ``sub`` (the customer, driver,
restaurant or service id), ``role`` (``customer``, ``restaurant``, ``driver``,
``ops`` or ``service``), ``iat`` and ``exp`` (seconds since the epoch). The
gateway and every service verify with the same secret (``FOODMESH_AUTH_SECRET``);
the signer is whoever holds it (the login service of a real deployment; here the
simulator, the tests and ``foodmesh token``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

__all__ = [
    "DEV_SECRET",
    "ROLES",
    "InvalidToken",
    "Principal",
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


class InvalidToken(ValueError):
    """The token is malformed, badly signed or expired; the message says which."""


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
