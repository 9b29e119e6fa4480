"""What ``foodmesh up`` shows of Notification: the development SMTP server ``up`` starts
(aiosmtpd, its own process, through ``foodmesh infra``), wired to the service and to the
dashboard exactly as ``up`` wires them (``foodmesh.commands.up._mail``), receives a real
mail for an order placed through the real Order service, and the dashboard's ``/mail``
lists it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from dashboard import DashboardConfig, serve
from foodmesh import infra
from foodmesh.commands.up import _mail
from foodmesh.core.auth import DEV_SECRET, mint_token
from tests.integration._notification import notify_mesh
from tests.integration._order import clients, order_mesh, place_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_up_wires_a_real_smtp_server_whose_mail_the_dashboard_lists(
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The test's servers stand in for infra's own three: ``up`` starts only the SMTP server.
    for var, url in (("postgres", pg_url), ("redis", redis_url), ("nats", nats_url)):
        monkeypatch.setenv(infra.ENV_VARS[var], url)
    monkeypatch.delenv(infra.SMTP_URL_VAR, raising=False)
    state = tmp_path / "state"
    wiring = await _mail(state)
    try:
        smtp = wiring["notification"]["FOODMESH_NOTIFICATION_SMTP_URL"]
        assert smtp.startswith("smtp://127.0.0.1:")
        inbox_url = wiring["dashboard"]["FOODMESH_DASHBOARD_SMTP_INBOX_URL"]
        config = DashboardConfig.from_env({
            "FOODMESH_DEV": "1", "FOODMESH_NATS_URL": nats_url, "FOODMESH_NAMESPACE": namespace,
            "FOODMESH_DASHBOARD_ROADS": "none", "FOODMESH_DASHBOARD_PORT": "8090",
            **wiring["dashboard"],
        })  # fmt: skip
        assert config.smtp_inbox_url == inbox_url
        config = DashboardConfig(port=0, nats_url=nats_url, namespace=namespace, roads="none",
                                 targets={}, smtp_inbox_url=config.smtp_inbox_url)  # fmt: skip
        ops = {"Authorization": f"Bearer {mint_token(DEV_SECRET, subject='ops_1', role='ops')}"}
        async with (
            order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                       namespace=namespace) as mesh,
            notify_mesh(pg_url=pg_url, nats_url=nats_url, namespace=namespace, tmp=tmp_path,
                        extra={**wiring["notification"],
                               "FOODMESH_NOTIFICATION_ORDER_TARGET": mesh.order.target}) as m,
            clients(mesh, ("customer", "cust_1")) as (me,),
            serve(config) as (_, port),
            aiohttp.ClientSession(headers=ops) as http,
        ):  # fmt: skip
            order = (await me.place_order(place_request("mail-1"))).order
            short = order.order_id[-6:].upper()
            base = f"http://127.0.0.1:{port}"
            listed: dict[str, object] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                async with http.get(f"{base}/api/mail", params={"limit": "20"}) as r:
                    assert r.status == 200, await r.text()
                    listed = await r.json()
                if listed.get("messages"):
                    break
                await asyncio.sleep(0.2)
            messages = listed.get("messages")
            assert isinstance(messages, list) and len(messages) == 1, listed
            mail = messages[0]
            assert mail["to"] == "rest_1@restaurant.foodmesh.test"
            assert mail["subject"] == f"New order {short}"
            assert listed["duplicates"] == 0
            assert m.mail.count() == 0  # the test's own SMTP server got nothing: up's did
            async with http.get(f"{base}/mail") as r:
                assert r.status == 200 and "Mail kept by the development SMTP server" in (
                    await r.text())  # fmt: skip
    finally:
        assert await asyncio.to_thread(infra.stop_smtp, state)
