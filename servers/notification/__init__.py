"""The Notification service: in-app inbox and live feed, email, Web Push and SMS, each once.

``SPEC`` is what ``foodmesh serve notification`` runs. ``rules`` (who gets what),
``templates`` and ``plan`` (channels, quiet hours, idempotency keys) are pure; ``feed``
follows the order and dispatch events into ``store`` (schema ``notify``); ``sender``
sends what is queued on the ``channels``; ``live`` hands new notifications to open streams.

Settings (``FOODMESH_NOTIFICATION_*``, beside ``FOODMESH_SMTP_URL``):

- ``SMTP_URL`` (else ``FOODMESH_SMTP_URL``): the SMTP relay, ``smtp://[user:pass@]host:port``
  (``smtps://`` or ``?starttls=1`` for TLS); without one, email is not configured and its
  deliveries fail with that reason;
- ``MAIL_FROM``: the sender address (``foodmesh <no-reply@foodmesh.test>``);
- ``VAPID_PRIVATE_KEY``: the Web Push signing key (PEM; production: from a Secret); without
  it the first replica makes one and keeps it in PostgreSQL;
- ``VAPID_SUBJECT``: the contact the push services see (``mailto:ops@foodmesh.test``);
- ``SMS_URL``, ``SMS_TOKEN``: the HTTP SMS provider; without them messages are recorded as
  JSON lines in ``SMS_SINK`` (default ``$FOODMESH_STATE_DIR/sms-sink.jsonl``);
- ``DEFAULT_EMAIL_DOMAIN``: recipients without preferences get ``<id>@<role>.<domain>``
  (development's default ``foodmesh.test``; empty outside it: no email until they set one);
- ``LINK_BASE``: prefix of the order link a push opens (``/app/#order=``);
- ``CATCH_UP_S``: how far back a new consumer starts (300: events of the minutes before
  the service's first start are notified; older ones are stale);
- ``ACK_WAIT_S``: how long an event taken by a process that died waits to be redelivered
  (30);
- ``MAX_ATTEMPTS`` (6), ``BASE_BACKOFF_S`` (1), ``MAX_BACKOFF_S`` (300), ``LEASE_S`` (30):
  retries, and how long a sender holds a delivery before it is taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from clients import ClientOptions, DispatchClient, OrderClient
from foodmesh.core.auth import ServiceCredentials, dev_mode
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import dispatch_pb2, notification_pb2_grpc, order_pb2
from servers.runtime.serve import Dependency, Resources, ServiceSpec

__all__ = ["SPEC", "build"]

_log = logging.getLogger("foodmesh.notification")


class _People:
    """An order's customer and a driver's name, from the Order and Dispatch services."""

    def __init__(self, orders: OrderClient, dispatch: DispatchClient) -> None:
        self.orders = orders
        self.dispatch = dispatch

    async def customer_of(self, order_id: str) -> str:
        try:
            r = await self.orders.get_order(order_pb2.GetOrderRequest(order_id=order_id),
                                            deadline_s=2.0)  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            _log.info("customer of %s unknown (%s)", order_id, exc.code().name)
            return ""
        return r.order.customer_id

    async def driver(self, driver_id: str) -> tuple[str, str]:
        try:
            r = await self.dispatch.get_driver(
                dispatch_pb2.GetDriverRequest(driver_id=driver_id), deadline_s=2.0
            )
        except grpc.aio.AioRpcError:
            return "Your driver", "their vehicle"
        d = r.driver
        return d.name or "Your driver", d.vehicle or "their vehicle"


async def build(server: grpc.aio.Server, resources: Resources) -> Callable[[], Awaitable[None]]:
    """Wires the service's parts and starts the event feed, the sender and the live feed."""
    from servers.notification.channels import (
        Channel,
        EmailChannel,
        HttpSmsProvider,
        PushChannel,
        SinkSmsProvider,
        SmsChannel,
        SmtpConfig,
        new_vapid_key,
        vapid_public_key,
    )
    from servers.notification.feed import Feed
    from servers.notification.live import LiveInbox
    from servers.notification.metrics import DEAD_LETTERS, QUEUED
    from servers.notification.plan import Prefs
    from servers.notification.sender import Sender
    from servers.notification.service import NotificationServicer
    from servers.notification.store import NotificationStore

    s = resources.settings
    x = s.extra
    dev = dev_mode()

    def num(name: str, default: float) -> float:
        return float(x.get(f"FOODMESH_NOTIFICATION_{name}", default))

    credentials = ServiceCredentials(s.service_key, subject="notification")
    options = ClientOptions(credentials=credentials.metadata)
    orders = OrderClient(resources.target("order"), options=options)
    dispatch = DispatchClient(resources.target("dispatch"), options=options)
    store = NotificationStore(resources.pg)

    vapid: dict[str, str] = {}
    configured_key = x.get("FOODMESH_NOTIFICATION_VAPID_PRIVATE_KEY", "")

    async def load_vapid() -> str:
        if configured_key:
            return configured_key
        while True:  # PostgreSQL may not answer (or be migrated) yet
            try:
                return await store.key("vapid_private_pem", new_vapid_key())
            except Exception as exc:
                _log.debug("VAPID key not read yet: %s", exc)
                await asyncio.sleep(0.5)

    channels: dict[str, Channel] = {}
    smtp_url = x.get("FOODMESH_NOTIFICATION_SMTP_URL") or os.environ.get("FOODMESH_SMTP_URL", "")
    if smtp_url:
        channels["email"] = EmailChannel(SmtpConfig.from_url(
            smtp_url, sender=x.get("FOODMESH_NOTIFICATION_MAIL_FROM", "")
        ))  # fmt: skip
    sms_url = x.get("FOODMESH_NOTIFICATION_SMS_URL", "")
    if sms_url:
        channels["sms"] = SmsChannel(
            HttpSmsProvider(sms_url, token=x.get("FOODMESH_NOTIFICATION_SMS_TOKEN", ""))
        )
    else:
        state = os.environ.get("FOODMESH_STATE_DIR") or tempfile.gettempdir()
        sink = x.get("FOODMESH_NOTIFICATION_SMS_SINK") or str(Path(state) / "sms-sink.jsonl")
        channels["sms"] = SmsChannel(SinkSmsProvider(Path(sink)))

    sender = Sender(
        store,
        channels,
        lease_s=num("LEASE_S", 30),
        max_attempts=int(num("MAX_ATTEMPTS", 6)),
        base_backoff_s=num("BASE_BACKOFF_S", 1),
        max_backoff_s=num("MAX_BACKOFF_S", 300),
    )
    domain = x.get("FOODMESH_NOTIFICATION_DEFAULT_EMAIL_DOMAIN", "foodmesh.test" if dev else "")

    def default_prefs(recipient: str) -> Prefs:
        role, _, ident = recipient.partition(":")
        email = f"{ident}@{role}.{domain}" if domain else ""
        phone = ""
        if dev and role == "driver":  # the SMS sink records offers to drivers in development
            phone = "+1555" + str(int(hashlib.sha256(ident.encode()).hexdigest(), 16))[:7]
        return Prefs(email=email, phone=phone)

    link_base = x.get("FOODMESH_NOTIFICATION_LINK_BASE", "/app/#order=")
    feed = Feed(
        lambda: resources.js,
        lambda: resources.nats,
        resources.subjects,
        store,
        _People(orders, dispatch),
        on_queued=sender.wake,
        default_prefs=default_prefs,
        link=lambda order_id: f"{link_base}{order_id}" if order_id else "",
        catch_up_s=num("CATCH_UP_S", 300),
        ack_wait_s=num("ACK_WAIT_S", 30),
    )
    live = LiveInbox(lambda: resources.nats, resources.subjects)
    servicer = NotificationServicer(
        store=store, live=live, vapid_public_key=lambda: vapid.get("public", ""), dev=dev
    )
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server)

    async def start_push() -> None:
        pem = await load_vapid()
        vapid["public"] = vapid_public_key(pem)
        channels["push"] = PushChannel(
            pem,
            subject=x.get("FOODMESH_NOTIFICATION_VAPID_SUBJECT", "mailto:ops@foodmesh.test"),
            on_gone=store.push_gone,
        )
        sender.start()  # after the push channel exists: no push fails for want of it

    async def gauges() -> None:
        while True:
            with contextlib.suppress(Exception):
                for (channel, st), n in (await store.counts()).items():
                    QUEUED.labels(channel, st).set(n)
                _, dead = await store.dead_letters(0)
                DEAD_LETTERS.set(dead)
            await asyncio.sleep(15)

    tasks = [
        asyncio.create_task(start_push(), name="notification-push-key"),
        asyncio.create_task(gauges(), name="notification-gauges"),
    ]
    feed.start()
    live.start()

    async def stop() -> None:
        await stop_tasks(tasks)
        await feed.stop()
        await live.stop()
        await sender.stop(grace_s=min(5.0, s.shutdown_grace_s))
        for client in (orders, dispatch):
            with contextlib.suppress(Exception):
                await client.close()

    return stop


SPEC = ServiceSpec(
    name="notification",
    grpc_services=("foodmesh.v1.NotificationService",),
    register=build,
    needs=frozenset({Dependency.POSTGRES, Dependency.NATS}),
    migrations=Path(__file__).parent / "migrations",
    calls=("order", "dispatch"),
)
