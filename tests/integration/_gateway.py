"""Running the HTTP gateway in-process in front of real services, and calling it over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

from foodmesh.core.auth import DEV_SECRET, TokenVerifier, mint_token
from foodmesh.core.errors import NotFound
from foodmesh.v1 import common_pb2, order_pb2, order_pb2_grpc
from gateway import Gateway, GatewayConfig, serve
from servers.runtime.auth import current_principal
from servers.runtime.config import Settings
from servers.runtime.serve import Resources, ServiceSpec, run_service

OS = common_pb2.OrderStatus


def auth(role: str, subject: str, **extra: str) -> dict[str, str]:
    """Headers of a caller with a valid bearer token."""
    return {"Authorization": f"Bearer {mint_token(DEV_SECRET, subject=subject, role=role)}",
            **extra}  # fmt: skip


@dataclass(slots=True)
class Http:
    session: aiohttp.ClientSession
    gateway: Gateway
    base: str


@asynccontextmanager
async def gateway(
    targets: Mapping[str, str], *, verifier: TokenVerifier | None = None, **overrides: Any
) -> AsyncIterator[Http]:
    """The gateway on a free port, exposing only the services in ``targets``."""
    config = GatewayConfig(
        host="127.0.0.1", port=0, targets=dict(targets), services=frozenset(targets),
        **overrides,
    )  # fmt: skip
    async with serve(config, verifier=verifier) as (gw, port):
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(base_url=base) as session:
            yield Http(session, gw, base)


def details(body: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """The error body's details of one type (``BadRequest``, ``ErrorInfo``, ``RequestInfo``)."""
    url = f"type.googleapis.com/google.rpc.{kind}"
    return [d for d in body.get("details", []) if d.get("@type") == url]


def violations(body: Mapping[str, Any]) -> dict[str, str]:
    return {v.get("field", ""): v["description"] for d in details(body, "BadRequest")
            for v in d["field_violations"]}  # fmt: skip


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Events of an SSE response: ``{"id", "event", "data", "comment"}`` per blank-line block."""
    event: dict[str, Any] = {}
    while True:
        line = await resp.content.readline()
        if not line:
            return
        text = line.decode().rstrip("\n")
        if text == "":
            if event:
                yield event
            event = {}
        elif text.startswith(":"):
            event["comment"] = text[1:].strip()
        else:
            key, _, value = text.partition(":")
            event[key] = json.loads(value) if key == "data" else value.strip()


class ScriptedOrders(order_pb2_grpc.OrderServiceServicer):
    """An OrderService with one order, ``ord_1`` of ``cus_1``, whose changes the test pushes.

    It runs on a real gRPC server built by the runtime (auth interceptor included), so a
    test sees exactly what the gateway sent and when it cancelled its call.
    """

    def __init__(self) -> None:
        self.timeline = [order_pb2.TimelineEntry(seq=1, status=OS.ORDER_STATUS_PLACED)]
        self.changes: asyncio.Queue[order_pb2.TimelineEntry | None] = asyncio.Queue()
        self.live = 0
        self.cancelled = 0
        self.ended = asyncio.Event()
        self.seen_metadata: dict[str, str] = {}
        self.watch_requests: list[order_pb2.WatchOrderRequest] = []

    def push(self, status: int | None) -> None:
        """Appends a change to the timeline and wakes the watcher (None ends the stream)."""
        if status is None:
            self.changes.put_nowait(None)
            return
        entry = order_pb2.TimelineEntry(seq=len(self.timeline) + 1, status=status)  # type: ignore[arg-type]
        self.timeline.append(entry)
        self.changes.put_nowait(entry)

    def order(self) -> order_pb2.Order:
        return order_pb2.Order(
            order_id="ord_1", customer_id="cus_1", status=self.timeline[-1].status,
            timeline=self.timeline,
        )  # fmt: skip

    @staticmethod
    def _visible(order_id: str) -> None:
        who = current_principal()
        mine = who is not None and (who.role != "customer" or who.subject == "cus_1")
        if order_id != "ord_1" or not mine:  # someone else's order does not exist for them
            raise NotFound(f"order {order_id} not found")

    async def GetOrder(  # noqa: N802
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> order_pb2.GetOrderResponse:
        self.seen_metadata = {k: str(v) for k, v in context.invocation_metadata() or ()}
        if request.order_id == "slow":
            await asyncio.sleep(10)
        self._visible(request.order_id)
        return order_pb2.GetOrderResponse(order=self.order())

    async def WatchOrder(  # noqa: N802
        self, request: order_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]:
        self.watch_requests.append(request)
        self._visible(request.order_id)
        self.live += 1
        self.ended.clear()
        try:
            last = request.after_seq
            if last == 0:
                yield order_pb2.WatchOrderResponse(order=self.order())
                last = self.timeline[-1].seq
            for e in self.timeline:
                if e.seq > last:
                    yield order_pb2.WatchOrderResponse(order=self.order(), change=e)
                    last = e.seq
            while (change := await self.changes.get()) is not None:
                if change.seq > last:
                    yield order_pb2.WatchOrderResponse(order=self.order(), change=change)
                    last = change.seq
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.live -= 1
            self.ended.set()


@asynccontextmanager
async def scripted_orders() -> AsyncIterator[tuple[ScriptedOrders, str]]:
    """A :class:`ScriptedOrders` on a free port; yields it and its target."""
    servicer = ScriptedOrders()  # type: ignore[abstract]  # only the RPCs under test

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)

    spec = ServiceSpec(name="order", grpc_services=("foodmesh.v1.OrderService",),
                       register=register)  # fmt: skip
    async with run_service(spec, Settings(service="order", metrics_enabled=False)) as svc:
        yield servicer, svc.target


__all__ = [
    "Http", "ScriptedOrders", "auth", "details", "gateway", "scripted_orders", "sse_events",
    "violations",
]  # fmt: skip
