"""``foodmesh up``'s city: Dispatch stacks orders and times offers to the kitchen, unless told."""

from __future__ import annotations

import pytest

from foodmesh.commands.up import city_dispatch
from servers.dispatch.engine import EngineConfig


def test_the_city_stacks_two_and_times_offers_to_the_kitchen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FOODMESH_DISPATCH_MAX_ORDERS", raising=False)
    monkeypatch.delenv("FOODMESH_DISPATCH_KITCHEN_RELEASE_S", raising=False)
    monkeypatch.delenv("FOODMESH_DISPATCH_KITCHEN_RELEASE_SPREAD", raising=False)
    cfg = EngineConfig.from_extra(city_dispatch())
    assert (cfg.max_orders, cfg.release_margin_s, cfg.release_spread) == (2, 30.0, 0.2)
    assert cfg.trip_config().release_spread == 0.2
    # The environment wins: instant offers, one order a driver.
    monkeypatch.setenv("FOODMESH_DISPATCH_MAX_ORDERS", "1")
    monkeypatch.setenv("FOODMESH_DISPATCH_KITCHEN_RELEASE_S", "")
    cfg = EngineConfig.from_extra(city_dispatch())
    assert (cfg.max_orders, cfg.release_margin_s) == (1, None)
    # The service itself offers at once, one order a driver.
    plain = EngineConfig.from_extra({})
    assert (plain.max_orders, plain.release_margin_s, plain.release_spread) == (1, None, 0.0)
