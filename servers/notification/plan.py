"""A notice's deliveries: which channels, where to, when, and what is sent (pure).

Each delivery's id is the idempotency key of (event, recipient, channel[, push
subscription]): recorded before anything is sent, the same on every redelivery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servers.notification.rules import EMAIL, IN_APP, PUSH, SMS, Notice
from servers.notification.templates import Rendered, render

__all__ = [
    "Planned",
    "Prefs",
    "PushTarget",
    "delivery_id",
    "plan",
    "quiet_until",
]


@dataclass(frozen=True, slots=True)
class Prefs:
    """A recipient's preferences (the defaults when they stored none)."""

    email: str = ""
    phone: str = ""
    locale: str = "en"
    #: event type -> channels; an event type not here takes its rule's defaults.
    events: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    quiet_start_minute: int = 0
    quiet_end_minute: int = 0
    utc_offset_minutes: int = 0


@dataclass(frozen=True, slots=True)
class PushTarget:
    """A registered Web Push subscription."""

    subscription_id: str
    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True, slots=True)
class Planned:
    """One delivery to record."""

    delivery_id: str
    channel: str
    #: queued, delivered (in-app) or skipped.
    state: str
    destination: str
    message: Mapping[str, Any]
    next_at: dt.datetime
    reason: str = ""


def delivery_id(event_id: str, recipient: str, channel: str) -> str:
    """The idempotency key of one event's message to one recipient on one channel."""
    return "d_" + hashlib.sha256(f"{event_id}|{recipient}|{channel}".encode()).hexdigest()[:28]


def quiet_until(prefs: Prefs, now: dt.datetime) -> dt.datetime | None:
    """When the recipient's quiet hours end if ``now`` is inside them, else None."""
    start, end = prefs.quiet_start_minute, prefs.quiet_end_minute
    if start == end:
        return None
    local = now + dt.timedelta(minutes=prefs.utc_offset_minutes)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    wait = (end - minute) % 1440
    return (now + dt.timedelta(minutes=wait)).replace(second=0, microsecond=0)


def plan(
    notice: Notice,
    prefs: Prefs,
    pushes: Sequence[PushTarget],
    *,
    now: dt.datetime,
    link: str = "",
) -> tuple[Rendered, list[Planned]]:
    """The notice's words and one delivery per chosen channel (per subscription for push)."""
    words = render(notice.event_type, prefs.locale, notice.values)
    channels = prefs.events.get(notice.event_type, notice.channels)
    later = None if notice.urgent else quiet_until(prefs, now)
    out: list[Planned] = []

    def add(channel: str, key: str, dest: str, message: Mapping[str, Any], why_not: str) -> None:
        did = delivery_id(notice.event_id, notice.recipient, key)
        if why_not:
            out.append(Planned(did, channel, "skipped", dest, {}, now, why_not))
        elif channel == IN_APP:
            out.append(Planned(did, channel, "delivered", notice.recipient, {}, now))
        else:
            out.append(Planned(did, channel, "queued", dest, message, later or now))

    # The inbox keeps every notice; the others follow the preferences.
    add(IN_APP, IN_APP, notice.recipient, {}, "")
    if EMAIL in channels:
        add(EMAIL, EMAIL, prefs.email,
            {"to": prefs.email, "subject": words.title, "text": words.text, "html": words.html},
            "" if prefs.email else "no email address")  # fmt: skip
    if SMS in channels:
        add(SMS, SMS, prefs.phone, {"to": prefs.phone, "text": f"{words.title}: {words.text}"},
            "" if prefs.phone else "no phone number")  # fmt: skip
    if PUSH in channels:
        payload = {
            "notification_id": notice.notification_id,
            "event_type": notice.event_type,
            "order_id": notice.order_id,
            "title": words.title,
            "body": words.text,
            "url": link,
        }
        for sub in pushes:
            add(PUSH, f"{PUSH}:{sub.subscription_id}", sub.endpoint,
                {**payload, "subscription_id": sub.subscription_id, "p256dh": sub.p256dh,
                 "auth": sub.auth}, "")  # fmt: skip
        if not pushes:
            add(PUSH, PUSH, "", {}, "no push subscription")
    return words, out
