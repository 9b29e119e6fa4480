"""Notification killed (SIGKILL) in the middle of a burst of events, then started again:
every event's mail and push arrive, and none is kept twice.

The service runs as ``foodmesh serve notification`` in a process of the test's own. Each
event is recorded (keyed) before anything is sent and acknowledged after, so the
restarted process neither loses an event nor records one twice. A send under way at
the kill is in doubt: it is sent again with the same identity (Message-ID, the push's
notification id as its ``Topic`` and the service worker's ``tag``), which the SMTP server,
the push service and the browser recognise: the mailbox holds exactly one message per
event and the browser shows one notification per event. The browser is away across the
kill and the restart, so the push service queues its pushes, and a resend whose first copy
still waits replaces it (``Topic``). The test counts the raw receipts too and bounds them by
what can be under way at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foodmesh.v1 import notification_pb2 as pb
from tests.chaos._servers import free_port
from tests.integration._notification import eventually, notify_mesh, order_event

pytestmark = pytest.mark.integration

EVENTS = 300
#: Sends a sender may have under way at once (servers/notification/sender.py).
IN_FLIGHT = 64


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "foodmesh", "serve", "notification"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def test_killed_mid_burst_every_notice_arrives_once(
    pg_url: str, nats_url: str, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    async with notify_mesh(pg_url=pg_url, nats_url=nats_url, namespace=namespace,
                           tmp=tmp_path, start=False) as m:  # fmt: skip
        port = free_port()
        env = {
            **os.environ,
            "FOODMESH_DEV": "1",
            "FOODMESH_POSTGRES_URL": pg_url,
            "FOODMESH_NATS_URL": nats_url,
            "FOODMESH_REDIS_URL": redis_url,  # the CLI asks for all three; it uses none
            "FOODMESH_NAMESPACE": namespace,
            "FOODMESH_NOTIFICATION_PORT": str(port),
            "FOODMESH_METRICS": "0",
            "FOODMESH_SHUTDOWN_GRACE_S": "0.5",
            # a lease that lapses soon after the kill: in-doubt sends are taken again quickly
            "FOODMESH_NOTIFICATION_LEASE_S": "2",
            "FOODMESH_NOTIFICATION_ACK_WAIT_S": "2",
            **{k: v for k, v in m.settings.extra.items()},
        }
        log = tmp_path / "notification.log"
        proc = _spawn(env, log)
        try:
            from clients import NotificationClient
            from tests.integration._order import token

            client = NotificationClient(f"127.0.0.1:{port}", options=token("customer", "c-1"))
            deadline = time.monotonic() + 30
            browser = m.push.subscription()
            while True:  # up, migrated schema in place, preferences stored
                try:
                    await client.register_push_subscription(
                        pb.RegisterPushSubscriptionRequest(**browser), deadline_s=1.0
                    )
                    prefs = pb.Preferences(email="c1@example.com")
                    await client.set_preferences(
                        pb.SetPreferencesRequest(preferences=prefs), deadline_s=1.0
                    )
                    break
                except Exception:
                    assert proc.poll() is None, log.read_text()[-2000:]
                    assert time.monotonic() < deadline, log.read_text()[-2000:]
                    await asyncio.sleep(0.2)

            async def burst() -> None:
                for i in range(EVENTS):
                    await m.publish_order(order_event("confirmed", f"o-{i}"), "confirmed")
                    await asyncio.sleep(1 / 200)

            publishing = asyncio.create_task(burst())
            await eventually(lambda: len(m.push.received) >= 40, what="sending under way")
            m.push.go_offline(browser["endpoint"])  # the push service keeps what comes now
            os.kill(proc.pid, signal.SIGKILL)  # mid-burst, sends in flight
            proc.wait()
            kill_seen = len(m.push.received)
            await asyncio.sleep(0.3)
            proc = _spawn(env, log)
            await publishing

            def pushed() -> set[str]:
                return {
                    r.payload["notification_id"]
                    for r in [*m.push.received, *m.push.queued(browser["endpoint"])]
                }

            await eventually(lambda: len(pushed()) >= EVENTS and m.mail.count() >= EVENTS,
                             within_s=60, what="every event's push and mail")  # fmt: skip
            await asyncio.sleep(3.0)  # in-doubt sends are resent once their 2 s lease lapses
            m.push.go_online(browser["endpoint"])

            mails = m.mail.messages()
            ids = [x["message_id"] for x in mails]
            assert len(mails) == EVENTS and len(set(ids)) == EVENTS  # one each, none lost
            orders = {r.payload["order_id"] for r in m.push.received}
            assert orders == {f"o-{i}" for i in range(EVENTS)}
            assert all(r.topic == r.payload["notification_id"] for r in m.push.received)
            # What the browser ends up showing: one notification per event.
            shown = m.push.shown_per_tag()
            assert len(shown) == EVENTS and set(shown.values()) == {1}
            # Resends are only what was under way at the kill, recognised downstream: by
            # the push service (a queued one replaced) or the browser (the tag).
            assert m.mail.box.duplicates() <= IN_FLIGHT
            assert len(m.push.received) - EVENTS == m.push.collapsed <= IN_FLIGHT
            assert m.push.replaced <= IN_FLIGHT
            assert kill_seen < EVENTS  # the kill did land mid-burst
            page = await client.list_notifications(pb.ListNotificationsRequest(page_size=1))
            assert page.unread_count == EVENTS  # one inbox notice per event
            ops = NotificationClient(f"127.0.0.1:{port}", options=token("ops", "ops-1"))
            assert (await ops.list_dead_letters(pb.ListDeadLettersRequest())).dead_letter_count == 0
            await client.close()
            await ops.close()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
