"""The order side of the mesh behind the real gateway, for the security tests of orders."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration._dispatch import DispatchMesh, dispatch_mesh
from tests.integration._gateway import Http, auth, gateway
from tests.integration._pricing import PricingMesh, pricing_mesh

PLACE: dict[str, Any] = {
    "restaurant_id": "rest_1",
    "items": [{"item_id": "margherita", "quantity": 1, "customizations": ["large"]},
              {"item_id": "salad", "quantity": 1}],
    "delivery_address": {"street": "456 Mission St", "city": "San Francisco",
                         "lat": 37.7749, "lon": -122.4194},
    "payment_method_id": "pm_card_visa",
}  # fmt: skip


@dataclass(slots=True)
class Live:
    """Catalog, Order, Location and Dispatch (or Pricing), and the gateway in front of them."""

    mesh: DispatchMesh | PricingMesh
    http: Http

    @property
    def dispatch(self) -> DispatchMesh:
        assert isinstance(self.mesh, DispatchMesh)
        return self.mesh

    @property
    def pricing(self) -> PricingMesh:
        assert isinstance(self.mesh, PricingMesh)
        return self.mesh

    async def call(
        self, method: str, path: str, role: str, subject: str, **kw: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = {**auth(role, subject), **kw.pop("headers", {})}
        async with self.http.session.request(method, path, headers=headers, **kw) as resp:
            return resp.status, await resp.json()

    async def place(self, customer: str, key: str, **changes: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", "/api/v1/orders", "customer", customer,
                               json={**PLACE, **changes},
                               headers={"Idempotency-Key": key})  # fmt: skip


@contextlib.asynccontextmanager
async def live(
    *, pg_url: str, redis_url: str, nats_url: str, namespace: str, state_dir: Path
) -> AsyncIterator[Live]:
    async with dispatch_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                             namespace=namespace, state_dir=state_dir) as mesh:  # fmt: skip
        targets = {"catalog": mesh.orders.catalog.target, "order": mesh.orders.order.target,
                   "dispatch": mesh.dispatch.target}  # fmt: skip
        async with gateway(targets) as http:
            yield Live(mesh, http)


@contextlib.asynccontextmanager
async def priced(
    *, pg_url: str, redis_url: str, nats_url: str, namespace: str, state_dir: Path
) -> AsyncIterator[Live]:
    """Catalog, Location, Pricing and Order (promo codes, quotes) behind the gateway."""
    async with pricing_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                            namespace=namespace, state_dir=state_dir) as mesh:  # fmt: skip
        assert mesh.catalog is not None and mesh.order is not None
        targets = {"catalog": mesh.catalog.target, "order": mesh.order.target,
                   "pricing": mesh.pricing.target}  # fmt: skip
        async with gateway(targets) as http:
            yield Live(mesh, http)


__all__ = ["PLACE", "Live", "live", "priced"]
