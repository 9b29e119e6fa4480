"""The channels' protocols: email over SMTP, Web Push (RFC 8030/8291, VAPID), SMS.

A channel's ``send`` returns the state the message reached (``sent``, or ``delivered``
where the channel says so) or raises: :class:`Permanent` when trying again cannot help
(the address is refused, the subscription is gone), anything else when it may.

Resent messages carry the same identity: an email's ``Message-ID`` and a push payload's
``notification_id`` are derived from the delivery's idempotency key, and the SMS
provider gets it as ``Idempotency-Key``, so a send that was in doubt when its sender
died is recognised downstream if it is sent again. A push also carries the notification
id as its RFC 8030 ``Topic`` (the push service keeps one undelivered message per topic,
the last) and as the service worker's notification ``tag`` (the browser shows one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import aiosmtplib
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from py_vapid import Vapid02

from servers.notification.store import Claimed

__all__ = [
    "Channel",
    "EmailChannel",
    "HttpSmsProvider",
    "Permanent",
    "encrypt_push",
    "PushChannel",
    "SinkSmsProvider",
    "SmsChannel",
    "SmsProvider",
    "SmtpConfig",
    "mime_bytes",
    "new_vapid_key",
    "push_topic",
    "vapid_public_key",
]

_log = logging.getLogger("foodmesh.notification.channels")


class Permanent(Exception):
    """A send that will fail however often it is tried."""


class Channel(Protocol):
    async def send(self, c: Claimed) -> str: ...

    async def close(self) -> None: ...


_DEFAULT_SENDER = "foodmesh <no-reply@foodmesh.test>"

# -- email --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """An SMTP relay: ``smtp://[user:password@]host:port`` (``smtps://`` for implicit TLS,
    ``?starttls=1`` to upgrade)."""

    host: str
    port: int
    username: str = ""
    password: str = ""
    implicit_tls: bool = False
    starttls: bool = False
    sender: str = _DEFAULT_SENDER

    @classmethod
    def from_url(cls, url: str, *, sender: str = "") -> SmtpConfig:
        u = urlsplit(url)
        if u.scheme not in ("smtp", "smtps") or not u.hostname:
            raise ValueError(f"not an SMTP URL: {url!r} (smtp://host:port or smtps://...)")
        return cls(
            host=u.hostname,
            port=u.port or (465 if u.scheme == "smtps" else 25),
            username=unquote(u.username or ""),
            password=unquote(u.password or ""),
            implicit_tls=u.scheme == "smtps",
            starttls="starttls=1" in u.query,
            sender=sender or _DEFAULT_SENDER,
        )


def _header(value: str) -> str:
    """A header value as sent: ASCII as it is, else RFC 2047 words; never a line break
    (no header injection from a template value or an address)."""
    value = " ".join(value.splitlines())
    return value if value.isascii() else Header(value, "utf-8").encode()


def _address(value: str) -> str:
    """An address header's value: a non-ASCII display name in RFC 2047 words, the address
    itself as it is."""
    value = " ".join(value.splitlines())
    return value if value.isascii() else formataddr(parseaddr(value), charset="utf-8")


def _part(content_type: str, body: str) -> bytes:
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + base64.encodebytes(body.encode()).replace(b"\n", b"\r\n")


def mime_bytes(
    *, sender: str, to: str, subject: str, text: str, html: str, message_id: str,
    notification_id: str,
) -> bytes:  # fmt: skip
    """An email as sent: plain text, or text and HTML alternatives; utf-8, base64 bodies.

    Written directly rather than through ``email.mime``: flattening a MIME tree took most
    of the service's CPU per event (~10x this).
    """
    head = (
        f"From: {_address(sender)}\r\nTo: {_address(to)}\r\nSubject: {_header(subject)}\r\n"
        f"Message-ID: {_header(message_id)}\r\n"
        f"X-Foodmesh-Notification: {_header(notification_id)}\r\n"
    ).encode()
    if not html:
        return head + _part("text/plain", text)
    # The message id is unique per delivery, and base64 never contains "=_".
    boundary = f"=_{hashlib.sha256(message_id.encode()).hexdigest()[:32]}"
    return (
        head
        + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        f"MIME-Version: 1.0\r\n\r\n--{boundary}\r\n".encode()
        + _part("text/plain", text)
        + f"\r\n--{boundary}\r\n".encode()
        + _part("text/html", html)
        + f"\r\n--{boundary}--\r\n".encode()
    )


class EmailChannel:
    """Email through one SMTP relay over a few kept-open connections."""

    def __init__(self, config: SmtpConfig, *, connections: int = 8, timeout_s: float = 10.0):
        self.config = config
        self.timeout_s = timeout_s
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(connections)
        self._envelope_from = parseaddr(config.sender)[1] or config.sender

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self.config
        smtp = aiosmtplib.SMTP(
            hostname=c.host, port=c.port, use_tls=c.implicit_tls, start_tls=c.starttls,
            username=c.username or None, password=c.password or None, timeout=self.timeout_s,
        )  # fmt: skip
        await smtp.connect()
        return smtp

    async def send(self, c: Claimed) -> str:
        m = c.message
        raw = mime_bytes(
            sender=self.config.sender, to=m["to"], subject=m["subject"], text=m["text"],
            html=m.get("html") or "", message_id=f"<{c.delivery_id}@foodmesh>",
            notification_id=c.notification_id,
        )  # fmt: skip
        async with self._slots:
            try:
                smtp = self._idle.get_nowait()
            except asyncio.QueueEmpty:
                smtp = await self._connect()
            try:
                errors, _ = await smtp.sendmail(self._envelope_from, [m["to"]], raw)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self._idle.put_nowait(smtp)
                raise Permanent(f"recipient refused: {exc}") from None
            except aiosmtplib.SMTPResponseException as exc:
                with contextlib.suppress(Exception):
                    smtp.close()
                if 500 <= exc.code < 600:
                    raise Permanent(f"SMTP {exc.code} {exc.message}") from None
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    smtp.close()
                raise
            self._idle.put_nowait(smtp)
        if errors:
            raise Permanent(f"recipient refused: {errors}")
        return "sent"

    async def close(self) -> None:
        while not self._idle.empty():
            smtp = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await smtp.quit()


# -- Web Push -----------------------------------------------------------------------------


def new_vapid_key() -> str:
    """A fresh VAPID private key (P-256), PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def vapid_public_key(private_pem: str) -> str:
    """The application server key browsers subscribe with: the raw public point, base64url."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


#: One record (RFC 8188) holds a whole push: push services take at most 4,096 bytes.
_RECORD_SIZE = 4096


def _b64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@functools.lru_cache(maxsize=4096)
def _browser_key(p256dh: str) -> tuple[ec.EllipticCurvePublicKey, bytes]:
    """A subscription's public key, parsed once (a recipient gets many pushes)."""
    raw = _b64(p256dh)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw), raw


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def encrypt_push(data: bytes, p256dh: str, auth: str) -> bytes:
    """A Web Push message body: ``data`` encrypted for the browser (RFC 8291, aes128gcm).

    What ``pywebpush`` does, with the browser's key parsed once per subscription rather
    than per push, and one record (a push fits one).
    """
    if len(data) + 17 > _RECORD_SIZE:  # the delimiter and the tag
        raise Permanent(f"push payload too large ({len(data)} bytes)")
    browser, browser_raw = _browser_key(p256dh)
    secret = _b64(auth)
    ours = ec.generate_private_key(ec.SECP256R1())
    ours_raw = ours.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = ours.exchange(ec.ECDH(), browser)
    ikm = _hkdf(secret, shared, b"WebPush: info\x00" + browser_raw + ours_raw, 32)
    salt = os.urandom(16)
    prk_key = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    sealed = AESGCM(prk_key).encrypt(nonce, data + b"\x02", None)  # \x02: the last record
    header = salt + _RECORD_SIZE.to_bytes(4, "big") + bytes([len(ours_raw)]) + ours_raw
    return header + sealed


def push_topic(notification_id: str) -> str:
    """The RFC 8030 ``Topic`` of a notification's pushes: at most 32 characters of the URL-safe
    base64 alphabet; the id itself when it fits (ours do: ``n_`` and 24 hex digits)."""
    if 0 < len(notification_id) <= 32 and all(c.isascii() and (c.isalnum() or c in "-_")
                                              for c in notification_id):  # fmt: skip
        return notification_id
    digest = hashlib.sha256(notification_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:32]


class PushChannel:
    """Web Push: the payload encrypted for the browser (aes128gcm), signed with VAPID."""

    def __init__(
        self,
        private_pem: str,
        *,
        subject: str = "mailto:ops@foodmesh.test",
        ttl_s: int = 600,
        timeout_s: float = 10.0,
        on_gone: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.vapid = Vapid02.from_pem(private_pem.encode())
        self.subject = subject
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.on_gone = on_gone
        self._session: aiohttp.ClientSession | None = None
        # A VAPID JWT per push service origin, reused until near its expiry.
        self._jwt: dict[str, tuple[float, dict[str, str]]] = {}

    def _auth(self, endpoint: str) -> dict[str, str]:
        u = urlsplit(endpoint)
        aud = f"{u.scheme}://{u.netloc}"
        now = time.time()
        hit = self._jwt.get(aud)
        if hit is None or hit[0] < now + 600:
            exp = int(now) + 12 * 3600
            headers = self.vapid.sign({"aud": aud, "sub": self.subject, "exp": exp})
            hit = (float(exp), {k: str(v) for k, v in headers.items()})
            self._jwt[aud] = hit
        return hit[1]

    async def send(self, c: Claimed) -> str:
        m: dict[str, Any] = c.message
        data = json.dumps({k: v for k, v in m.items() if k not in ("p256dh", "auth")})
        try:
            body = encrypt_push(data.encode(), m["p256dh"], m["auth"])
        except Exception as exc:  # keys that do not make a key agreement
            raise Permanent(f"subscription keys unusable: {exc}") from None
        headers = {
            **self._auth(c.destination),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.ttl_s),
            "Urgency": "high" if m.get("event_type") == "new_offer" else "normal",
        }
        if nid := str(m.get("notification_id", "")):
            # A resend after a crash (in doubt) replaces the first if it is still queued.
            headers["Topic"] = push_topic(nid)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        async with self._session.post(c.destination, data=body, headers=headers) as r:
            detail = (await r.text())[:200]
            if r.status in (200, 201, 202):
                return "sent"
            if r.status in (404, 410):
                if self.on_gone is not None:
                    await self.on_gone(str(m.get("subscription_id", "")))
                raise Permanent(f"subscription gone ({r.status})")
            if r.status in (400, 401, 403, 413):
                raise Permanent(f"push service refused it: {r.status} {detail}")
            raise RuntimeError(f"push service answered {r.status} {detail}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- SMS ----------------------------------------------------------------------------------


class SmsProvider(Protocol):
    """Sends one text message; raises :class:`Permanent` for a number it will never reach."""

    async def send(self, to: str, text: str, *, key: str) -> None: ...

    async def close(self) -> None: ...


class HttpSmsProvider:
    """A JSON-over-HTTP SMS gateway: ``POST url {"to", "from", "text"}`` with a bearer token
    and ``Idempotency-Key``; 2xx sent, 4xx refused for good, else tried again."""

    def __init__(
        self, url: str, *, token: str = "", sender: str = "foodmesh", timeout_s: float = 10.0
    ):
        self.url = url
        self.token = token
        self.sender = sender
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def send(self, to: str, text: str, *, key: str) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        headers = {"Idempotency-Key": key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = {"to": to, "from": self.sender, "text": text}
        async with self._session.post(self.url, json=body, headers=headers) as r:
            detail = (await r.text())[:200]
            if 200 <= r.status < 300:
                return
            if 400 <= r.status < 500 and r.status not in (408, 429):
                raise Permanent(f"SMS provider refused it: {r.status} {detail}")
            raise RuntimeError(f"SMS provider answered {r.status} {detail}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SinkSmsProvider:
    """Development: records each message as a JSON line instead of sending it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: list[dict[str, str]] = []

    async def send(self, to: str, text: str, *, key: str) -> None:
        line = {"to": to, "text": text, "key": key, "at": f"{time.time():.3f}"}
        self.sent.append(line)
        await asyncio.to_thread(self._append, json.dumps(line))

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(line + "\n")

    async def close(self) -> None:
        return None


class SmsChannel:
    def __init__(self, provider: SmsProvider) -> None:
        self.provider = provider

    async def send(self, c: Claimed) -> str:
        await self.provider.send(c.message["to"], c.message["text"], key=c.delivery_id)
        return "sent"

    async def close(self) -> None:
        await self.provider.close()
