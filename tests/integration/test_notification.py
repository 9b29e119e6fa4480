"""The Notification service end to end: events in, real mail (SMTP), real Web Push (VAPID,
aes128gcm, decrypted by a local endpoint), SMS to the development sink, the in-app inbox
over gRPC and the gateway (JSON and SSE); each notice once; retries and dead letters."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from foodmesh.infra import smtp_sink
from foodmesh.infra.push_sink import PushSink
from foodmesh.v1 import notification_pb2 as pb
from servers.notification.channels import PushChannel, new_vapid_key, push_topic
from servers.notification.rules import notification_id
from servers.notification.store import Claimed
from tests.integration._gateway import auth, gateway, sse_events, violations
from tests.integration._notification import (
    dispatch_event,
    eventually,
    notify_mesh,
    order_event,
)
from tests.integration._order import violations as grpc_violations

pytestmark = pytest.mark.integration


def _sms(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_events_reach_each_recipient_once_on_every_channel(
    pg_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with notify_mesh(pg_url=pg_url, nats_url=nats_url, namespace=namespace,
                           tmp=tmp_path) as m:  # fmt: skip
        c1 = m.client("customer", "c-1")
        browser = m.push.subscription()
        await c1.register_push_subscription(pb.RegisterPushSubscriptionRequest(**browser))
        await c1.set_preferences(pb.SetPreferencesRequest(preferences=pb.Preferences(
            email="ana@example.com", locale="es",
        )))  # fmt: skip

        # The same event twice (a redelivery), and a second confirmation of the same order
        # under another id (status flapping): one notice.
        ev = order_event("confirmed", "o-1")
        await m.publish_order(ev, "confirmed")
        await m.publish_order(ev, "confirmed")
        await m.publish_order(order_event("confirmed", "o-1", event_id="o-1:again"), "confirmed")
        await eventually(lambda: m.mail.count() >= 1 and len(m.push.received) >= 1,
                         what="the confirmation by mail and push")  # fmt: skip

        mail = m.mail.messages()
        assert len(mail) == 1
        assert mail[0]["to"] == "ana@example.com"
        assert mail[0]["subject"] == "Luigi's <Pizza> confirmó tu pedido"  # the locale's
        raw = (m.mail.box.root / "new" / mail[0]["name"]).read_bytes()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        html = parsed.get_body(preferencelist=("html",))
        assert html is not None
        assert "Luigi&#x27;s &lt;Pizza&gt;" in html.get_content()  # escaped in the HTML part
        pushed = m.push.received[0].payload
        assert pushed["title"] == "Luigi's <Pizza> confirmó tu pedido"
        assert pushed["order_id"] == "o-1"
        # The notification id is the push's Topic and the browser's tag: one shown.
        assert m.push.received[0].topic == pushed["notification_id"]
        assert m.push.shown_per_tag() == {pushed["notification_id"]: 1}

        page = await c1.list_notifications(pb.ListNotificationsRequest())
        assert [n.event_type for n in page.notifications] == ["order_confirmed"]
        assert page.unread_count == 1
        nid = page.notifications[0].notification_id
        status = await c1.get_delivery_status(pb.GetDeliveryStatusRequest(notification_id=nid))
        states = {pb.Channel.Name(d.channel): pb.DeliveryState.Name(d.state)
                  for d in status.deliveries}  # fmt: skip
        assert states == {"CHANNEL_IN_APP": "DELIVERY_STATE_DELIVERED",
                          "CHANNEL_EMAIL": "DELIVERY_STATE_SENT",
                          "CHANNEL_PUSH": "DELIVERY_STATE_SENT"}  # fmt: skip

        # Another customer sees none of it, and may not ask for it.
        c2 = m.client("customer", "c-2")
        assert not (await c2.list_notifications(pb.ListNotificationsRequest())).notifications
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await c2.list_notifications(pb.ListNotificationsRequest(recipient="customer:c-1"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await c2.get_delivery_status(pb.GetDeliveryStatusRequest(notification_id=nid))
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

        # A driver: one offer notice per offer, by SMS (the sink) and in-app.
        offer = dispatch_event("offered", "o-2", "d-7", offer_id="of-1")
        await m.publish_dispatch(offer, "offered")
        await m.publish_dispatch(dispatch_event("offered", "o-2", "d-7", offer_id="of-1"),
                                 "offered")  # fmt: skip
        await eventually(lambda: len(_sms(m.sms_sink)) >= 1, what="the offer by SMS")
        d7 = m.client("driver", "d-7")
        offers = await d7.list_notifications(pb.ListNotificationsRequest())
        assert [n.event_type for n in offers.notifications] == ["new_offer"]
        assert "$7.25" in offers.notifications[0].body

        # The restaurant of a new order, over the gateway: the inbox, mark read, the live feed.
        async with gateway({"notification": m.service.target}) as http:  # type: ignore[union-attr]
            r1 = auth("restaurant", "r-1")
            sse = {**r1, "Accept": "text/event-stream"}
            async with http.session.get("/api/v1/notifications/stream", headers=sse) as stream:
                assert stream.status == 200
                events = sse_events(stream)
                hello = await asyncio.wait_for(_next_data(events), 20)
                assert hello["data"] == {"unread_count": 0}
                await m.publish_order(order_event("placed", "o-3"), "placed")
                first = await asyncio.wait_for(_next_data(events), 20)
                data = first["data"]
                assert data["notification"]["event_type"] == "new_order"
                assert data["unread_count"] == 1
            async with http.session.get("/api/v1/notifications", headers=r1) as resp:
                body = await resp.json()
            assert resp.status == 200, body
            assert [n["event_type"] for n in body["notifications"]] == ["new_order"]
            assert body["unread_count"] == 1
            async with http.session.post("/api/v1/notifications:markRead", headers=r1,
                                         json={"all": True}) as resp:  # fmt: skip
                assert (await resp.json()) == {"marked": 1, "unread_count": 0}
            # Bad input: 400 naming the field.
            bad = {**m.push.subscription(), "p256dh": "not-a-key"}
            async with http.session.post("/api/v1/notifications/push-subscriptions",
                                         headers=r1, json=bad) as resp:  # fmt: skip
                assert resp.status == 400
                assert set(violations(await resp.json())) == {"p256dh"}
            async with http.session.get("/api/v1/notifications?recipient=alien:x",
                                        headers=auth("ops", "o")) as resp:  # fmt: skip
                assert resp.status == 400
                assert set(violations(await resp.json())) == {"recipient"}

        with pytest.raises(grpc.aio.AioRpcError) as bad_prefs:
            await c1.set_preferences(pb.SetPreferencesRequest(preferences=pb.Preferences(
                email="nope", events=[pb.EventChannels(event_type="weather")],
            )))  # fmt: skip
        assert set(grpc_violations(bad_prefs.value)) == {
            "preferences.email", "preferences.events[0].event_type"}  # fmt: skip
        # Ana's confirmation, and the restaurant's new order (its default address in
        # development): each once. The email goes out beside the inbox entry, so it may
        # land a moment after the feed showed the notification.
        want = ["ana@example.com", "r-1@restaurant.foodmesh.test"]
        async with asyncio.timeout(20):
            while True:
                if sorted(x["to"] for x in m.mail.messages()) == want:
                    break
                await asyncio.sleep(0.05)
        assert m.mail.box.duplicates() == 0


async def test_a_channel_that_fails_is_retried_then_dead_lettered(
    pg_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    # The SMTP server is down when the event comes; it comes up later: one mail, not lost.
    async with notify_mesh(pg_url=pg_url, nats_url=nats_url, namespace=namespace, tmp=tmp_path,
                           extra={"FOODMESH_NOTIFICATION_MAX_ATTEMPTS": "20"}) as m:  # fmt: skip
        port = m.mail.port
        await m.mail.close()
        c1 = m.client("customer", "c-1")
        await c1.register_push_subscription(
            pb.RegisterPushSubscriptionRequest(**m.push.subscription())
        )
        m.push.status = 503  # the push service fails every attempt
        await m.publish_order(order_event("delivered", "o-9"), "delivered")
        page = None

        async def has_notice() -> bool:
            nonlocal page
            page = await c1.list_notifications(pb.ListNotificationsRequest())
            return bool(page.notifications)

        for _ in range(600):  # 30 s at most: far more than it needs, on a loaded machine too
            if await has_notice():
                break
            await asyncio.sleep(0.05)
        assert page is not None and page.notifications
        await asyncio.sleep(0.5)  # a few failed attempts
        mail = await smtp_sink.start("127.0.0.1", port, tmp_path / "maildir2")
        try:
            await eventually(lambda: mail.count() == 1, what="the mail once SMTP is up")
        finally:
            await mail.close()

        # The push failed every attempt: a dead letter with its reason, for ops.
        ops = m.client("ops", "ops-1")

        async def dead() -> pb.ListDeadLettersResponse:
            return await ops.list_dead_letters(pb.ListDeadLettersRequest())

        for _ in range(2400):  # 20 attempts, backoff to 0.2 s: seconds, more on a loaded machine
            letters = await dead()
            if letters.dead_letter_count:
                break
            await asyncio.sleep(0.05)
        status = await ops.get_delivery_status(
            pb.GetDeliveryStatusRequest(notification_id=page.notifications[0].notification_id)
        )
        assert letters.dead_letter_count == 1, status
        d = letters.deliveries[0]
        assert d.channel == pb.CHANNEL_PUSH and d.state == pb.DELIVERY_STATE_FAILED
        assert d.attempts == 20 and "503" in d.reason
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c1.list_dead_letters(pb.ListDeadLettersRequest())
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _next_data(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The next SSE event that carries data (a slow moment brings keep-alive comments)."""
    async for event in events:
        if "data" in event:
            return event
    raise AssertionError("the stream ended")


async def test_a_push_sent_again_is_one_notification_at_the_push_service_and_browser(
    tmp_path: Path,
) -> None:
    # What a sender killed mid-send does: the same delivery sent twice (in doubt). Real
    # HTTP, VAPID and aes128gcm to the local push service, which honours Topic.
    push = await PushSink().start()
    channel = PushChannel(new_vapid_key())
    try:
        away, here = push.subscription(), push.subscription()
        nid = notification_id("o-5:picked_up", "customer:c-1")

        def delivery(sub: dict[str, str], attempt: int) -> Claimed:
            return Claimed(f"d-{sub['endpoint'][-8:]}", nid, "customer:c-1", "push",
                           sub["endpoint"], {"notification_id": nid, "title": "On its way",
                           "body": "Order O-5", "p256dh": sub["p256dh"], "auth": sub["auth"]},
                           attempt, attempt > 1)  # fmt: skip

        # The browser is away: the resend replaces the queued push (same Topic), and the
        # browser gets one when it is back.
        push.go_offline(away["endpoint"])
        assert await channel.send(delivery(away, 1)) == "sent"
        assert await channel.send(delivery(away, 2)) == "sent"
        assert [r.topic for r in push.queued(away["endpoint"])] == [nid]
        assert push.replaced == 1 and not push.received
        push.go_online(away["endpoint"])
        assert len(push.received) == 1 and push.received[0].payload["notification_id"] == nid

        # The browser is there: both reach it (raw receipts), the tag shows one.
        assert await channel.send(delivery(here, 1)) == "sent"
        assert await channel.send(delivery(here, 2)) == "sent"
        assert len(push.received) == 3  # honest: the resend did arrive
        assert push.collapsed == 1
        assert push.shown_per_tag() == {nid: 2}  # one per browser (two subscriptions)

        # A topic the RFC does not allow is refused, as a push service does.
        async with aiohttp.ClientSession() as http:
            async with http.post(here["endpoint"], data=b"x", headers={
                **channel._auth(here["endpoint"]), "Content-Encoding": "aes128gcm",
                "Topic": "not a topic!"}) as resp:  # fmt: skip
                assert resp.status == 400
        assert push_topic("n_" + "a" * 24) == "n_" + "a" * 24
        assert len(push_topic("x" * 40)) == 32
    finally:
        await channel.close()
        await push.close()
