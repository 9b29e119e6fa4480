"""The planner's live terms have their shape; the distance matrix is the great circle's."""

from __future__ import annotations

import numpy as np
import pytest

from servers.dispatch import scoring


def a(*xs: float) -> np.ndarray:
    return np.asarray(xs, dtype=np.float64)


def test_quality_weighs_rating_above_experience_and_stays_in_unit_range() -> None:
    best = scoring.quality_score(a(5.0), a(5000))[0]
    assert best == pytest.approx(1.0)
    assert scoring.quality_score(a(3.0), a(0))[0] == 0.0
    assert scoring.quality_score(a(1.0), a(0))[0] == 0.0  # below 3 is clamped
    assert scoring.quality_score(a(5.0), a(0))[0] == pytest.approx(0.7)
    assert scoring.quality_score(a(3.0), a(1000))[0] == pytest.approx(0.3)
    assert scoring.quality_score(a(4.0), a(500))[0] == pytest.approx(0.35 + 0.15)


def test_opportunity_saturates_with_demand_at_the_dropoff() -> None:
    got = scoring.opportunity_score(a(0, 3, 30, 3000))
    assert got[0] == 0.0 and got[1] == pytest.approx(0.5)
    assert got[2] == pytest.approx(30 / 33)
    assert 0.99 < got[3] < 1.0


def test_distance_matrix_is_within_a_thousandth_of_great_circle_in_a_city() -> None:
    from foodmesh.core.geo import haversine_m

    m = scoring.distance_matrix_m(a(37.77, 37.80), a(-122.41, -122.27), a(37.78), a(-122.42))
    assert m.shape == (2, 1)
    assert m[1, 0] == pytest.approx(haversine_m(37.80, -122.27, 37.78, -122.42), rel=1e-3)
    assert m[0, 0] == pytest.approx(haversine_m(37.77, -122.41, 37.78, -122.42), rel=1e-3)
    assert scoring.heuristic_travel_s(a(1000), 5.0)[0] == pytest.approx(1000 * 1.35 / 5)
