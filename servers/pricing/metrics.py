"""The Pricing service's own Prometheus metrics (the RPC metrics come from the runtime)."""

from __future__ import annotations

from prometheus_client import Gauge

__all__ = ["SURGE"]

#: Cells are geohash-5 (~5 km): a city has a few hundred, so the label stays bounded.
SURGE = Gauge(
    "foodmesh_pricing_surge_multiplier",
    "The surge multiplier this replica serves in a cell (geohash-5), set when it is "
    "computed or taken from the shared cache; 1.0 while the inputs are unavailable.",
    ("cell",),
)
