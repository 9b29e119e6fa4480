"""A local Web Push endpoint that stands in for a browser's push service, for tests and
benchmarks: it checks each push's VAPID signature and decrypts its payload.

:meth:`PushSink.subscription` makes a browser's side of a subscription (a P-256 key pair
and an auth secret, as ``PushManager.subscribe`` does) whose endpoint is this server;
a push to it must carry ``Authorization: vapid t=<JWT>, k=<key>`` with a JWT signed by
that key for this origin (RFC 8292), and an ``aes128gcm`` body (RFC 8188/8291) that
decrypts with the subscription's keys. What decrypts is recorded; anything else is
refused with 400/401, as a push service would.

Like a real push service it honours RFC 8030 ``Topic`` (at most 32 URL-safe base64
characters, else 400): while a browser is away (:meth:`PushSink.go_offline`) its pushes
are queued, and a push whose topic matches a queued one replaces it (``replaced``);
:meth:`PushSink.go_online` delivers the queue. Two views are kept: ``received``, every
push that reached the browser (raw receipts), and ``shown``, what the browser ends up
showing when its service worker shows each push with ``tag`` = the payload's
``notification_id`` (``gateway/static/app/sw.js``): a push whose tag is already shown
replaces that notification (``collapsed``) rather than adding one.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["PushSink", "Received"]

#: RFC 8030 section 5.4: a topic is at most 32 characters of the URL-safe base64 alphabet.
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@dataclass(frozen=True, slots=True)
class Received:
    """One push that decrypted."""

    subscription: str
    payload: dict[str, Any]
    at: float
    headers: dict[str, str] = field(default_factory=dict)
    #: The push's RFC 8030 ``Topic`` ("" when it had none).
    topic: str = ""


@dataclass(slots=True)
class _Browser:
    key: ec.EllipticCurvePrivateKey
    auth: bytes


class PushSink:
    """The push service of any number of simulated browsers, on one local HTTP port."""

    def __init__(self, *, status: int = 201) -> None:
        #: What pushes are answered with (tests turn it to 500 or 410).
        self.status = status
        #: Every push that reached a browser (raw receipts, resends included).
        self.received: list[Received] = []
        #: What the browsers show: one notification per (subscription, tag).
        self.shown: dict[tuple[str, str], Received] = {}
        #: Pushes that replaced a notification already shown with their tag.
        self.collapsed = 0
        #: Queued pushes replaced by a newer one with the same topic (never delivered).
        self.replaced = 0
        self.refused: list[str] = []
        self._offline: set[str] = set()
        self._queued: dict[str, dict[str, Received]] = {}
        self._browsers: dict[str, _Browser] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> PushSink:
        app = web.Application()
        app.router.add_post("/push/{sub}", self._push)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def subscription(self) -> dict[str, str]:
        """A new browser's subscription: ``endpoint``, ``p256dh``, ``auth`` (base64url)."""
        sub = _b64(os.urandom(12))
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        self._browsers[sub] = _Browser(key, auth)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": f"{self.origin}/push/{sub}", "p256dh": _b64(public), "auth": _b64(auth)}

    def go_offline(self, endpoint: str) -> None:
        """The browser of ``endpoint`` is away: its pushes wait here (one per topic)."""
        self._offline.add(endpoint.rsplit("/", 1)[-1])

    def go_online(self, endpoint: str) -> None:
        """The browser is back: what waited for it is delivered, oldest first."""
        sub = endpoint.rsplit("/", 1)[-1]
        self._offline.discard(sub)
        for r in self._queued.pop(sub, {}).values():
            self._deliver(r)

    def queued(self, endpoint: str) -> list[Received]:
        """The pushes waiting for the browser of ``endpoint``."""
        return list(self._queued.get(endpoint.rsplit("/", 1)[-1], {}).values())

    def _deliver(self, r: Received) -> None:
        self.received.append(r)
        tag = str(r.payload.get("notification_id", "")) if isinstance(r.payload, dict) else ""
        key = (r.subscription, tag or f"#{len(self.received)}")  # no tag: a new notification
        if key in self.shown:
            self.collapsed += 1
        self.shown[key] = r

    def shown_per_tag(self) -> dict[str, int]:
        """Per ``notification_id``, how many notifications the browsers show for it (across
        subscriptions: one per subscription when each is shown once)."""
        out: dict[str, int] = {}
        for r in self.shown.values():
            nid = str(r.payload.get("notification_id", ""))
            out[nid] = out.get(nid, 0) + 1
        return out

    def _check_vapid(self, header: str) -> str:
        parts = dict(
            p.strip().split("=", 1) for p in header.removeprefix("vapid ").split(",") if "=" in p
        )
        token, k = parts.get("t", ""), parts.get("k", "")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(k))
        claims = jwt.decode(token, public, algorithms=["ES256"], audience=self.origin)
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            raise ValueError("the VAPID subject is not a contact")
        return k

    async def _push(self, request: web.Request) -> web.Response:
        sub = request.match_info["sub"]
        browser = self._browsers.get(sub)
        if browser is None:
            return web.Response(status=410, text="no such subscription")
        try:
            self._check_vapid(request.headers.get("Authorization", ""))
        except Exception as exc:
            self.refused.append(f"vapid: {exc}")
            return web.Response(status=401, text=f"VAPID: {exc}")
        topic = request.headers.get("Topic", "")
        if topic and not _TOPIC.fullmatch(topic):
            self.refused.append("topic")
            return web.Response(status=400, text="Topic: at most 32 URL-safe base64 characters")
        if request.headers.get("Content-Encoding") != "aes128gcm":
            self.refused.append("encoding")
            return web.Response(status=400, text="Content-Encoding must be aes128gcm")
        body = await request.read()
        try:
            plain = http_ece.decrypt(
                body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
            )
            payload = json.loads(plain)
        except Exception as exc:
            self.refused.append(f"decrypt: {exc}")
            return web.Response(status=400, text=f"cannot decrypt: {exc}")
        if self.status >= 300:
            return web.Response(status=self.status)
        r = Received(sub, payload, time.time(), dict(request.headers), topic)
        if sub in self._offline:
            queue = self._queued.setdefault(sub, {})
            key = topic or f"#{len(queue)}:{time.monotonic_ns()}"
            if key in queue:
                self.replaced += 1
                del queue[key]  # the newer one takes the end of the queue
            queue[key] = r
        else:
            self._deliver(r)
        return web.Response(status=self.status)
