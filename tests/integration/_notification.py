"""The real Notification service on real PostgreSQL and NATS, with a local SMTP server and a
local Web Push endpoint, and the order and dispatch events it follows published by hand."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import timestamp_pb2
from nats.js import JetStreamContext

from clients import NotificationClient
from foodmesh.core.events import DISPATCH, DISPATCH_EVENTS, ORDER_EVENTS, ORDERS
from foodmesh.core.nats import Subjects, open_nats
from foodmesh.infra import smtp_sink
from foodmesh.infra.push_sink import PushSink
from foodmesh.v1 import common_pb2, dispatch_pb2, order_pb2
from servers import notification
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import RunningService, run_service
from tests.integration._order import token

OS = common_pb2.OrderStatus


def stamp(t: float | None = None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() if t is None else t) * 1e9))
    return ts


def order_event(
    kind: str,
    order_id: str,
    *,
    customer: str = "c-1",
    restaurant: str = "r-1",
    driver: str = "",
    event_id: str | None = None,
) -> order_pb2.OrderEvent:
    status = {"placed": OS.ORDER_STATUS_PLACED, "confirmed": OS.ORDER_STATUS_CONFIRMED,
              "picked_up": OS.ORDER_STATUS_PICKED_UP, "delivered": OS.ORDER_STATUS_DELIVERED,
              "cancelled": OS.ORDER_STATUS_CANCELLED}[kind]  # fmt: skip
    return order_pb2.OrderEvent(
        event_id=event_id or f"{order_id}:{kind}",
        order=order_pb2.Order(
            order_id=order_id, customer_id=customer, restaurant_id=restaurant,
            restaurant_name="Luigi's <Pizza>", driver_id=driver, status=status,
            refunded=common_pb2.Money(amount_minor=1250, currency_code="USD"),
            cancellation_reason="customer changed their mind" if kind == "cancelled" else "",
        ),
        event_time=stamp(),
    )  # fmt: skip


def dispatch_event(
    kind: str, order_id: str, driver: str, *, offer_id: str = "", event_id: str | None = None
) -> dispatch_pb2.DispatchEvent:
    kinds = {"offered": dispatch_pb2.DISPATCH_EVENT_KIND_OFFERED,
             "assigned": dispatch_pb2.DISPATCH_EVENT_KIND_ASSIGNED,
             "unassigned": dispatch_pb2.DISPATCH_EVENT_KIND_UNASSIGNED}  # fmt: skip
    a = dispatch_pb2.Assignment(
        order_id=order_id,
        driver_id="" if kind in ("offered", "unassigned") else driver,
        pickup=dispatch_pb2.Stop(label="Luigi's Pizza"),
        dropoff=dispatch_pb2.Stop(label="456 Mission St"),
    )
    ev = dispatch_pb2.DispatchEvent(
        event_id=event_id or f"dispatch:{order_id}:{kind}:{uuid.uuid4().hex[:8]}",
        kind=kinds[kind], assignment=a, event_time=stamp(),
    )  # fmt: skip
    if kind == "offered":
        ev.offer.CopyFrom(dispatch_pb2.Offer(
            offer_id=offer_id or f"of-{uuid.uuid4().hex[:8]}", order_id=order_id,
            driver_id=driver, distance_miles=2.5,
            expected_earnings=common_pb2.Money(amount_minor=725, currency_code="USD"),
        ))  # fmt: skip
    return ev


@dataclass(slots=True)
class NotifyMesh:
    service: RunningService | None
    settings: Settings
    js: JetStreamContext
    subjects: Subjects
    mail: smtp_sink.Sink
    push: PushSink
    sms_sink: Path

    def client(self, role: str = "service", subject: str = "tests") -> NotificationClient:
        assert self.service is not None
        return NotificationClient(self.service.target, options=token(role, subject))

    async def publish_order(self, ev: order_pb2.OrderEvent, kind: str) -> None:
        await self.js.publish(
            self.subjects.subject(ORDER_EVENTS.subject(kind)), ev.SerializeToString(),
            headers={"Nats-Msg-Id": ev.event_id},
        )  # fmt: skip

    async def publish_dispatch(self, ev: dispatch_pb2.DispatchEvent, kind: str) -> None:
        await self.js.publish(
            self.subjects.subject(DISPATCH_EVENTS.subject(kind)), ev.SerializeToString()
        )


async def eventually(check: Callable[[], bool], *, within_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s}s: {what}")
        await asyncio.sleep(0.05)


def settings(*, pg_url: str, nats_url: str, namespace: str, extra: Mapping[str, str]) -> Settings:
    return Settings(
        service="notification", postgres_url=pg_url, nats_url=nats_url, namespace=namespace,
        metrics_enabled=False, port=0, health_check_interval_s=0.05, shutdown_grace_s=0.5,
        extra=dict(extra),
    )  # fmt: skip


@asynccontextmanager
async def notify_mesh(
    *,
    pg_url: str,
    nats_url: str,
    namespace: str,
    tmp: Path,
    extra: Mapping[str, str] | None = None,
    smtp_port: int = 0,
    start: bool = True,
) -> AsyncIterator[NotifyMesh]:
    """The service (``start``), the SMTP server, the push endpoint, and the two streams."""
    spec = notification.SPEC
    assert spec.migrations is not None
    await migrate(pg_url, service=spec.name, migrations=load_migrations(spec.migrations))
    subjects = Subjects(namespace)
    async with AsyncExitStack() as stack:
        nc = await open_nats(nats_url, name="tests")
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        for stream in (ORDERS, DISPATCH):
            await js.add_stream(stream.config(subjects))
        mail = await smtp_sink.start("127.0.0.1", smtp_port, tmp / "maildir")
        stack.push_async_callback(mail.close)
        push = await PushSink().start()
        stack.push_async_callback(push.close)
        sms = tmp / "sms.jsonl"
        s = settings(pg_url=pg_url, nats_url=nats_url, namespace=namespace, extra={
            "FOODMESH_NOTIFICATION_SMTP_URL": f"smtp://127.0.0.1:{mail.port}",
            "FOODMESH_NOTIFICATION_SMS_SINK": str(sms),
            "FOODMESH_NOTIFICATION_BASE_BACKOFF_S": "0.05",
            "FOODMESH_NOTIFICATION_MAX_BACKOFF_S": "0.2",
            # nobody listens there: the driver's name falls back, the test stays quick
            "FOODMESH_NOTIFICATION_DISPATCH_TARGET": "127.0.0.1:9",
            "FOODMESH_NOTIFICATION_ORDER_TARGET": "127.0.0.1:9",
            **(extra or {}),
        })  # fmt: skip
        running = None
        if start:
            running = await stack.enter_async_context(run_service(spec, s))
        yield NotifyMesh(running, s, js, subjects, mail, push, sms)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
