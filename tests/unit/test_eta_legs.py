"""ETA's batch legs answer what its single routes answer, on the tricky junctions too."""

from __future__ import annotations

import datetime as dt

import pytest

from servers.eta.routing import Router
from tests.unit._roads import CD_MID, A, B, C, D, P, junction_graph

WHEN = dt.datetime(2026, 11, 24, 18, 0)  # a Tuesday, rush hour
POINTS = [P, B, C, D, A, CD_MID, (37.7710, -122.4200), (37.7720, -122.4185)]


@pytest.mark.parametrize("one", POINTS)
def test_batch_legs_agree_with_routes_at_a_node_snap_and_on_parallel_edges(
    one: tuple[float, float],
) -> None:
    router = Router(junction_graph())
    others = [p for p in POINTS if p != one]
    # One origin to many destinations (a search from the origin), and many origins to
    # one destination (a search from the destination).
    for origins, dests in (([one] * len(others), others), (others, [one] * len(others))):
        legs = router.legs(origins, dests, depart_at=WHEN)
        for o, d, leg in zip(origins, dests, legs, strict=True):
            r = router.route(o, d, depart_at=WHEN)
            assert not leg.straight_line and not r.straight_line
            assert leg.duration_s == pytest.approx(r.duration_s, rel=1e-9), (o, d)
            assert leg.distance_m == pytest.approx(r.distance_m, rel=1e-9), (o, d)
            assert leg.free_flow_s == pytest.approx(r.free_flow_s, rel=1e-9), (o, d)
