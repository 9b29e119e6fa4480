"""Running the HTTP gateway in-process in front of real services, and calling it over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from foodmesh.auth import DEV_SECRET, mint_token
from gateway import Gateway, GatewayConfig, serve


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
async def gateway(targets: Mapping[str, str], **overrides: Any) -> AsyncIterator[Http]:
    """The gateway on a free port, exposing only the services in ``targets``."""
    config = GatewayConfig(
        host="127.0.0.1", port=0, targets=dict(targets), services=frozenset(targets),
        **overrides,
    )  # fmt: skip
    async with serve(config) as (gw, port):
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(base_url=base) as session:
            yield Http(session, gw, base)


def details(body: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """The error body's details of one type (``BadRequest``, ``ErrorInfo``, ``RequestInfo``)."""
    url = f"type.googleapis.com/google.rpc.{kind}"
    return [d for d in body.get("details", []) if d.get("@type") == url]


def violations(body: Mapping[str, Any]) -> dict[str, str]:
    return {v["field"]: v["description"] for d in details(body, "BadRequest")
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


__all__ = ["Http", "auth", "details", "gateway", "sse_events", "violations"]
