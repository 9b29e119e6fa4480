"""NotificationServicer: who is asking, for whose notifications; then the store.

A customer, restaurant or driver reads and changes only their own recipient
(``<role>:<subject>``); ops and services name the recipient.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from foodmesh.core.auth import Principal, valid_subject
from foodmesh.core.errors import InvalidArgument, NotFound, PermissionDenied, Violations
from foodmesh.v1 import notification_pb2 as pb
from foodmesh.v1 import notification_pb2_grpc as pb_grpc
from servers.notification.convert import (
    CHANNEL_FROM_PB,
    delivery_to_pb,
    notification_to_pb,
    prefs_to_pb,
)
from servers.notification.live import LiveInbox
from servers.notification.plan import Prefs
from servers.notification.rules import EVENT_TYPES, ROLES, parse_recipient
from servers.notification.store import NotificationStore
from servers.notification.templates import LOCALES
from servers.runtime.auth import require

__all__ = ["NotificationServicer", "check_push_subscription", "recipient_for"]

_log = logging.getLogger("foodmesh.notification")
Ctx = grpc.aio.ServicerContext[Any, Any]
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


def recipient_for(p: Principal, asked: str, *, field: str = "recipient") -> str:
    """The recipient a call is about: the caller's own, or (ops, services) the one named."""
    if p.role in ROLES:
        own = f"{p.role}:{p.subject}"
        if asked and asked != own:
            raise PermissionDenied("you may see and change only your own notifications")
        return own
    if not asked:
        raise InvalidArgument.field(field, "required for ops and services: <role>:<id>")
    parsed = parse_recipient(asked)
    if parsed is None or not valid_subject(parsed[1]):
        raise InvalidArgument.field(
            field, f"unknown recipient {asked[:80]!r}: expected <role>:<id> with role one of "
            + ", ".join(ROLES)
        )  # fmt: skip
    return asked


def _b64url(value: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def check_push_subscription(req: pb.RegisterPushSubscriptionRequest, *, dev: bool) -> None:
    """A subscription a push can be encrypted for and sent to; else 400 naming each field."""
    v = Violations()
    u = urlsplit(req.endpoint) if len(req.endpoint) <= 2048 else None
    schemes = ("https", "http") if dev else ("https",)
    v.check(u is not None and u.scheme in schemes and bool(u.hostname), "endpoint",
            "must be the push service's https URL (at most 2048 characters)")  # fmt: skip
    key = _b64url(req.p256dh) if len(req.p256dh) <= 128 else None
    ok = key is not None and len(key) == 65 and key[0] == 4
    if ok:
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)  # type: ignore[arg-type]
        except ValueError:
            ok = False
    v.check(ok, "p256dh", "must be an uncompressed P-256 public key, base64url (65 bytes)")
    secret = _b64url(req.auth) if len(req.auth) <= 64 else None
    v.check(secret is not None and len(secret) == 16, "auth",
            "must be the 16-byte authentication secret, base64url")  # fmt: skip
    v.raise_if_any()


def prefs_from_pb(p: pb.Preferences, field: str = "preferences") -> Prefs:
    """Checked preferences; 400 naming every bad field."""
    v = Violations()
    v.check(not p.email or bool(_EMAIL.match(p.email)), f"{field}.email",
            "must be an email address")  # fmt: skip
    v.check(not p.phone or bool(_PHONE.match(p.phone)), f"{field}.phone",
            "must be a phone number in E.164 (+14155550123)")  # fmt: skip
    v.check(not p.locale or p.locale in LOCALES, f"{field}.locale",
            f"must be one of {', '.join(LOCALES)}")  # fmt: skip
    events: dict[str, tuple[str, ...]] = {}
    for i, e in enumerate(p.events):
        f = f"{field}.events[{i}]"
        if v.check(e.event_type in EVENT_TYPES, f"{f}.event_type",
                   f"unknown event type: one of {', '.join(sorted(EVENT_TYPES))}"):  # fmt: skip
            v.check(e.event_type not in events, f"{f}.event_type", "listed twice")
        chans = [CHANNEL_FROM_PB.get(c) for c in e.channels]
        v.check(None not in chans, f"{f}.channels", "must be channels (not unspecified)")
        events[e.event_type] = tuple(dict.fromkeys(c for c in chans if c))
    v.check(0 <= p.quiet_start_minute < 1440, f"{field}.quiet_start_minute", "must be 0 to 1439")
    v.check(0 <= p.quiet_end_minute < 1440, f"{field}.quiet_end_minute", "must be 0 to 1439")
    v.check(-840 <= p.utc_offset_minutes <= 840, f"{field}.utc_offset_minutes",
            "must be -840 to 840")  # fmt: skip
    v.raise_if_any()
    return Prefs(
        email=p.email, phone=p.phone, locale=p.locale or "en", events=events,
        quiet_start_minute=p.quiet_start_minute, quiet_end_minute=p.quiet_end_minute,
        utc_offset_minutes=p.utc_offset_minutes,
    )  # fmt: skip


def _cursor(row_time: dt.datetime, nid: str) -> str:
    return base64.urlsafe_b64encode(f"{row_time.isoformat()}|{nid}".encode()).decode()


def _uncursor(token: str) -> tuple[str, str]:
    raw = _b64url(token)
    try:
        when, nid = (raw or b"").decode().split("|", 1)
        dt.datetime.fromisoformat(when)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.field("page_token", "not a token this service gave") from None
    return when, nid


class NotificationServicer(pb_grpc.NotificationServiceServicer):
    def __init__(
        self,
        *,
        store: NotificationStore,
        live: LiveInbox,
        vapid_public_key: Callable[[], str],
        dev: bool,
    ) -> None:
        self.store = store
        self.live = live
        self.vapid_public_key = vapid_public_key
        self.dev = dev

    async def ListNotifications(  # noqa: N802
        self, request: pb.ListNotificationsRequest, context: Ctx
    ) -> pb.ListNotificationsResponse:
        who = recipient_for(require(), request.recipient)
        if not 0 <= request.page_size <= 100:
            raise InvalidArgument.field("page_size", "must be 0 (20) to 100")
        size = request.page_size or 20
        before = _uncursor(request.page_token) if request.page_token else None
        rows, unread = await self.store.inbox(
            who, unread_only=request.unread_only, limit=size + 1, before=before
        )
        token = _cursor(rows[size - 1].created_at, rows[size - 1].notification_id) if (
            len(rows) > size) else ""  # fmt: skip
        return pb.ListNotificationsResponse(
            notifications=[notification_to_pb(r) for r in rows[:size]],
            next_page_token=token,
            unread_count=unread,
        )

    async def MarkNotificationsRead(  # noqa: N802
        self, request: pb.MarkNotificationsReadRequest, context: Ctx
    ) -> pb.MarkNotificationsReadResponse:
        who = recipient_for(require(), request.recipient)
        if not request.all and not request.notification_ids:
            raise InvalidArgument.field("notification_ids", "name some, or set all")
        for i, nid in enumerate(request.notification_ids):
            if not valid_subject(nid):
                raise InvalidArgument.field(f"notification_ids[{i}]", "not a notification id")
        marked = await self.store.mark_read(who, request.notification_ids, every=request.all)
        _, unread = await self.store.inbox(who, unread_only=True, limit=0, before=None)
        return pb.MarkNotificationsReadResponse(marked=marked, unread_count=unread)

    async def WatchNotifications(  # noqa: N802
        self, request: pb.WatchNotificationsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchNotificationsResponse]:
        who = recipient_for(require(), request.recipient)
        with self.live.watch(who) as queue:
            _, unread = await self.store.inbox(who, unread_only=True, limit=0, before=None)
            yield pb.WatchNotificationsResponse(unread_count=unread)
            while True:
                n = await queue.get()
                _, unread = await self.store.inbox(who, unread_only=True, limit=0, before=None)
                yield pb.WatchNotificationsResponse(notification=n, unread_count=unread)

    async def GetPreferences(  # noqa: N802
        self, request: pb.GetPreferencesRequest, context: Ctx
    ) -> pb.GetPreferencesResponse:
        who = recipient_for(require(), request.recipient)
        stored = (await self.store.prefs([who])).get(who, Prefs())
        return pb.GetPreferencesResponse(preferences=prefs_to_pb(stored))

    async def SetPreferences(  # noqa: N802
        self, request: pb.SetPreferencesRequest, context: Ctx
    ) -> pb.SetPreferencesResponse:
        who = recipient_for(require(), request.recipient)
        if not request.HasField("preferences"):
            raise InvalidArgument.field("preferences", "required")
        prefs = prefs_from_pb(request.preferences)
        await self.store.set_prefs(who, prefs)
        return pb.SetPreferencesResponse(preferences=prefs_to_pb(prefs))

    async def GetPushConfig(  # noqa: N802
        self, request: pb.GetPushConfigRequest, context: Ctx
    ) -> pb.GetPushConfigResponse:
        require()
        return pb.GetPushConfigResponse(vapid_public_key=self.vapid_public_key())

    async def RegisterPushSubscription(  # noqa: N802
        self, request: pb.RegisterPushSubscriptionRequest, context: Ctx
    ) -> pb.RegisterPushSubscriptionResponse:
        who = recipient_for(require(), request.recipient)
        check_push_subscription(request, dev=self.dev)
        sid = await self.store.add_push(who, request.endpoint, request.p256dh, request.auth)
        return pb.RegisterPushSubscriptionResponse(subscription_id=sid)

    async def GetDeliveryStatus(  # noqa: N802
        self, request: pb.GetDeliveryStatusRequest, context: Ctx
    ) -> pb.GetDeliveryStatusResponse:
        p = require()
        if not valid_subject(request.notification_id):
            raise InvalidArgument.field("notification_id", "not a notification id")
        owner = await self.store.owner_of(request.notification_id)
        if owner is None or (p.role in ROLES and owner != f"{p.role}:{p.subject}"):
            raise NotFound(f"no notification {request.notification_id}")
        rows = await self.store.deliveries_of(request.notification_id)
        return pb.GetDeliveryStatusResponse(deliveries=[delivery_to_pb(r) for r in rows])

    async def ListDeadLetters(  # noqa: N802
        self, request: pb.ListDeadLettersRequest, context: Ctx
    ) -> pb.ListDeadLettersResponse:
        require()
        if not 0 <= request.page_size <= 500:
            raise InvalidArgument.field("page_size", "must be 0 (50) to 500")
        rows, total = await self.store.dead_letters(request.page_size or 50)
        return pb.ListDeadLettersResponse(deliveries=[delivery_to_pb(r) for r in rows],
                                          dead_letter_count=total)  # fmt: skip
