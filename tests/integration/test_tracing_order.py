"""One order is one trace: from the gateway through every service, and across NATS.

Issue 9: "OpenTelemetry traces across every hop (gateway → Order → Pricing/Catalog/
ETA; NATS publish → consumer continues the trace through message headers)". A
customer's app places an order and the restaurant confirms it, both requests
carrying the app's ``traceparent``. The real gateway, Order, Catalog, Pricing, ETA,
Location and Dispatch run in this process, with spans kept in memory. The order's
events go through Order's outbox to JetStream; Dispatch's consumer of
``orders.v1.confirmed`` continues the trace from the message's headers, and
Pricing's demand feed links its batch to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from foodmesh.core.telemetry import memory_exporter, setup_tracing
from servers import dispatch
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import run_service
from tests.integration._dispatch import dispatch_settings
from tests.integration._fleet import eventually
from tests.integration._gateway import auth, gateway
from tests.integration._order import place_request
from tests.integration._pricing import pricing_mesh
from tests.integration.test_dispatch_routes import eta_service

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"


def _in_trace(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and f"{s.context.trace_id:032x}" == TRACE_ID]


async def test_an_order_is_one_trace_from_the_gateway_through_nats_to_dispatch(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    setup_tracing("tests", exporter="memory")
    exporter = memory_exporter()
    assert exporter is not None
    assert dispatch.SPEC.migrations is not None
    await migrate(pg_url, service="dispatch", migrations=load_migrations(dispatch.SPEC.migrations))
    common = dict(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace)
    async with (
        eta_service(redis_url=redis_url, namespace=namespace, model_dir=tmp_path / "m") as eta,
        pricing_mesh(state_dir=tmp_path, order_extra={"FOODMESH_ORDER_ETA_TARGET": eta},
                     **common) as mesh,  # type: ignore[arg-type]
    ):  # fmt: skip
        assert mesh.order is not None and mesh.location is not None
        settings = dispatch_settings(
            pg_url=pg_url, nats_url=nats_url, namespace=namespace,
            location=mesh.location.target, order=mesh.order.target,
        )  # fmt: skip
        async with (
            run_service(dispatch.SPEC, settings),
            gateway({"order": mesh.order.target}) as http,
        ):
            exporter.clear()
            app = {"traceparent": f"00-{TRACE_ID}-{APP_SPAN}-01"}
            body = json_format.MessageToDict(place_request("traced"),
                                             preserving_proto_field_name=True)  # fmt: skip
            customer, restaurant = auth("customer", "cust_1"), auth("restaurant", "rest_1")
            async with http.session.post("/api/v1/orders", json=body,
                                         headers={**customer, **app}) as resp:  # fmt: skip
                assert resp.status == 201, await resp.text()
                oid = (await resp.json())["order"]["order_id"]
            async with http.session.post(f"/api/v1/orders/{oid}/status",
                                         json={"status": "ORDER_STATUS_CONFIRMED"},
                                         headers={**restaurant, **app}) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()

            def names() -> Counter[str]:
                return Counter(s.name for s in _in_trace(exporter.get_finished_spans()))

            def linked() -> list[ReadableSpan]:
                """Pricing's demand feed: a batch span linked to the events it counted."""
                return [
                    s
                    for s in exporter.get_finished_spans()
                    if s.name == "pricing-orders process"
                    and TRACE_ID in {f"{k.context.trace_id:032x}" for k in s.links}
                ]

            async def consumed() -> bool:  # Dispatch: the placed event, then the confirmed
                return names()["dispatch-orders process"] >= 2 and bool(linked())

            await eventually(consumed, 15, "Dispatch's and Pricing's consumer spans",
                             lambda: _async(names()))  # fmt: skip
            assert linked()[0].kind == SpanKind.CONSUMER

    spans = _in_trace(exporter.get_finished_spans())
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    # Every span but the gateway's first ones has its parent in this trace: no hop broke it.
    for s in spans:
        assert s.parent is not None, s.name
        if s.parent.span_id != int(APP_SPAN, 16):
            assert s.parent.span_id in by_id, f"{s.name}: parent not in the trace"
    servers = Counter(s.name for s in spans if s.kind == SpanKind.SERVER)
    # gateway → Order → Catalog, Pricing (→ Catalog, Location), ETA: a server span each.
    assert servers["POST /api/v1/orders"] == 1
    assert servers["foodmesh.v1.OrderService/PlaceOrder"] == 1
    assert servers["foodmesh.v1.OrderService/UpdateOrderStatus"] == 1
    assert servers["foodmesh.v1.PricingService/QuoteOrder"] >= 1
    assert servers["foodmesh.v1.EtaService/EstimateDelivery"] >= 1
    assert any(n.startswith("foodmesh.v1.CatalogService/") for n in servers)
    # NATS: the confirmed event's handling in Dispatch continues the confirm request's span.
    consumed = [s for s in spans if s.name == "dispatch-orders process"]
    assert [s.kind for s in consumed] == [SpanKind.CONSUMER] * len(consumed)
    parents = {
        str((s.attributes or {}).get("messaging.destination.name", "")).rsplit(".", 1)[-1]:
        by_id[s.parent.span_id].name  # type: ignore[union-attr]
        for s in consumed
    }  # fmt: skip
    assert parents == {"placed": "foodmesh.v1.OrderService/PlaceOrder",
                       "confirmed": "foodmesh.v1.OrderService/UpdateOrderStatus"}  # fmt: skip
    hops = sum(1 for s in spans if s.kind in (SpanKind.SERVER, SpanKind.CONSUMER))
    exporter.clear()
    with capsys.disabled():
        print(f"\none traced order (place + confirm): {len(spans)} spans, {hops} hops"
              f" (server and consumer spans): {dict(sorted(servers.items()))}")  # fmt: skip


async def _async(value: object) -> object:
    return value
