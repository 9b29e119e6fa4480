"""The customer page's notifications in headless Chromium: "Enable push" registers the
service worker and sends the browser's subscription through the gateway; an order event
then reaches the page's inbox live and the subscription as a real Web Push (VAPID,
aes128gcm, decrypted by the local push endpoint), and the service worker shows a push
once however often it arrives (its tag is the notification id).

Chromium's own push service (Google's) cannot be reached here, so ``PushManager.subscribe``
answers with a subscription whose endpoint is the local push endpoint and whose keys are
a browser key pair made by the test; everything else is the page's own code. The push
the endpoint decrypted is handed to the service worker through the DevTools protocol
(``ServiceWorker.deliverPushMessage``), as the browser's push service would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.e2e._browser import browser_page
from tests.integration._gateway import gateway
from tests.integration._notification import eventually, notify_mesh
from tests.integration._order import HOME, clients, order_mesh, place_request

pytestmark = pytest.mark.timeout(180)

# Stands in for the browser's push service: the subscription the test made.
_SUBSCRIBE = """
(sub) => {
  const bytes = (s) => Uint8Array.from(atob(s.replaceAll('-', '+').replaceAll('_', '/')),
                                       (c) => c.charCodeAt(0)).buffer;
  PushManager.prototype.subscribe = async function (options) {
    window.__subscribedWith = btoa(String.fromCharCode(
      ...new Uint8Array(options.applicationServerKey)));
    return { endpoint: sub.endpoint, expirationTime: null,
             getKey: (name) => bytes(name === 'p256dh' ? sub.p256dh : sub.auth),
             toJSON: () => ({ endpoint: sub.endpoint, keys: { p256dh: sub.p256dh,
                                                              auth: sub.auth } }) };
  };
}
"""


async def test_the_customer_page_subscribes_to_push_and_shows_each_notification_once(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                   namespace=namespace) as mesh,
        notify_mesh(pg_url=pg_url, nats_url=nats_url, namespace=namespace, tmp=tmp_path,
                    extra={"FOODMESH_NOTIFICATION_ORDER_TARGET": mesh.order.target}) as m,
        gateway({"catalog": mesh.catalog.target, "order": mesh.order.target,
                 "notification": m.service.target}) as http,  # type: ignore[union-attr]
        browser_page(width=1200, height=900) as page,
        clients(mesh, ("customer", "cust_1"), ("restaurant", "rest_1")) as (me, kitchen),
    ):  # fmt: skip
        p: Any = page
        errors: list[str] = []
        p.on("pageerror", lambda e: errors.append(str(e)))
        await p.context.grant_permissions(["notifications"], origin=http.base)
        sub = m.push.subscription()
        await p.add_init_script(script=f"({_SUBSCRIBE})({json.dumps(sub)})")
        token = mint_token(DEV_SECRET, subject="cust_1", role="customer")
        await p.goto(f"{http.base}/app/#token={token}&lat={HOME.lat}&lon={HOME.lon}")
        await p.click("#enable-push")
        await p.wait_for_function(
            "() => document.getElementById('push-state').textContent === 'push on'",
            timeout=15_000,
        )
        # The page handed the service's VAPID key to the Push API, and its worker runs.
        async with http.session.get(
            "/api/v1/notifications/push-config", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            vapid = (await r.json())["vapid_public_key"]
        given = await p.evaluate("window.__subscribedWith")
        assert given.rstrip("=").replace("+", "-").replace("/", "_") == vapid.rstrip("=")
        script = await p.evaluate(
            "navigator.serviceWorker.ready.then((r) => r.active && r.active.scriptURL)"
        )
        assert script.endswith("/app/sw.js")

        # An order of this customer's, confirmed by its restaurant: in the page's inbox
        # (live) and pushed to the subscription the page registered.
        order = (await me.place_order(place_request("push-1"))).order
        await kitchen.update_order_status(pb.UpdateOrderStatusRequest(
            order_id=order.order_id, status=common_pb2.ORDER_STATUS_CONFIRMED))  # fmt: skip
        await eventually(lambda: len(m.push.received) >= 1, what="the push at the endpoint")
        pushed = m.push.received[0]
        assert pushed.payload["order_id"] == order.order_id
        assert pushed.payload["title"] == "Luigi's Pizza confirmed your order"
        assert pushed.topic == pushed.payload["notification_id"]
        await p.wait_for_selector('#notices li:has-text("confirmed your order")', timeout=15_000)

        # The push reaches the service worker twice (a resend): one notification, its tag
        # the notification id.
        cdp = await p.context.new_cdp_session(p)
        registered: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_registrations(ev: dict[str, Any]) -> None:
            for reg in ev.get("registrations", []):
                if reg["scopeURL"].startswith(http.base) and not registered.done():
                    registered.set_result(reg["registrationId"])

        cdp.on("ServiceWorker.workerRegistrationUpdated", on_registrations)
        await cdp.send("ServiceWorker.enable")
        registration = await asyncio.wait_for(registered, 10)
        for _ in range(2):
            await cdp.send("ServiceWorker.deliverPushMessage", {
                "origin": http.base, "registrationId": registration,
                "data": json.dumps(pushed.payload)})  # fmt: skip
        shown = "navigator.serviceWorker.ready.then((r) => r.getNotifications())" \
                ".then((ns) => ns.map((n) => [n.tag, n.title]))"  # fmt: skip
        await p.wait_for_function(f"() => {shown}.then((ns) => ns.length > 0)", timeout=10_000)
        await asyncio.sleep(0.5)  # the second delivery, had it made another
        assert await p.evaluate(shown) == [
            [pushed.payload["notification_id"], "Luigi's Pizza confirmed your order"]
        ]
        assert not errors, errors
