"""Each score component has the design's shape; the weights are checked and configurable."""

from __future__ import annotations

import math

import numpy as np
import pytest

from foodmesh.core.errors import ConfigError
from servers.dispatch import scoring
from servers.dispatch.scoring import Weights


def a(*xs: float) -> np.ndarray:
    return np.asarray(xs, dtype=np.float64)


def test_distance_score_is_one_at_the_restaurant_and_decays_by_exp_minus_miles_over_two() -> None:
    got = scoring.distance_score(a(0, 2, 5, -1))
    assert got[0] == 1.0
    assert got[1] == pytest.approx(math.exp(-1))
    assert got[2] == pytest.approx(0.082, abs=1e-3)
    assert got[3] == 1.0  # a negative distance is clamped, never above 1
    assert np.all(np.diff(scoring.distance_score(a(0, 1, 2, 3, 10))) < 0)


def test_eta_fit_is_best_when_arriving_as_the_food_is_ready_early_or_late_both_cost() -> None:
    on_time, early, late = scoring.eta_fit_score(a(12, 2, 22), a(12, 12, 12))
    assert on_time == 1.0
    assert early == pytest.approx(math.exp(-1)) and late == pytest.approx(math.exp(-1))
    # Food already ready: the sooner the better.
    assert scoring.eta_fit_score(a(0), a(-5))[0] == 1.0
    assert scoring.eta_fit_score(a(5), a(-5))[0] < 1.0


def test_quality_weighs_rating_above_experience_and_stays_in_unit_range() -> None:
    best = scoring.quality_score(a(5.0), a(5000))[0]
    assert best == pytest.approx(1.0)
    assert scoring.quality_score(a(3.0), a(0))[0] == 0.0
    assert scoring.quality_score(a(1.0), a(0))[0] == 0.0  # below 3 is clamped
    assert scoring.quality_score(a(5.0), a(0))[0] == pytest.approx(0.7)
    assert scoring.quality_score(a(3.0), a(1000))[0] == pytest.approx(0.3)
    assert scoring.quality_score(a(4.0), a(500))[0] == pytest.approx(0.35 + 0.15)


def test_acceptance_score_is_the_rate_clipped() -> None:
    assert list(scoring.acceptance_score(a(0.85, 1.5, -0.2))) == [0.85, 1.0, 0.0]


def test_opportunity_saturates_with_demand_at_the_dropoff() -> None:
    got = scoring.opportunity_score(a(0, 3, 30, 3000))
    assert got[0] == 0.0 and got[1] == pytest.approx(0.5)
    assert got[2] == pytest.approx(30 / 33)
    assert 0.99 < got[3] < 1.0


def test_match_score_is_the_weighted_sum_and_a_perfect_pair_scores_one() -> None:
    w = Weights()
    perfect = scoring.match_score(
        w,
        miles=a(0),
        eta_min=a(10),
        ready_in_min=a(10),
        rating=a(5),
        deliveries=a(1000),
        acceptance=a(1),
        demand=a(1e9),
    )
    assert perfect[0] == pytest.approx(1.0, abs=1e-6)
    only_distance = Weights(distance=1.0, eta=0, quality=0, acceptance=0, opportunity=0)
    s = scoring.match_score(
        only_distance,
        miles=a(2),
        eta_min=a(0),
        ready_in_min=a(50),
        rating=a(3),
        deliveries=a(0),
        acceptance=a(0),
        demand=a(0),
    )
    assert s[0] == pytest.approx(math.exp(-1))


def test_weights_must_sum_to_one_and_parse_from_settings() -> None:
    assert Weights.parse("") == Weights()
    w = Weights.parse("distance=0.45, opportunity=0.0")
    assert w.distance == 0.45 and w.opportunity == 0.0
    with pytest.raises(ConfigError, match="sum to 1"):
        Weights.parse("distance=0.9")
    with pytest.raises(ConfigError, match="unknown"):
        Weights.parse("speed=0.1")
    with pytest.raises(ConfigError, match="not a number"):
        Weights.parse("eta=fast")


def test_distance_matrix_is_within_a_thousandth_of_great_circle_in_a_city() -> None:
    from foodmesh.core.geo import haversine_m

    m = scoring.distance_matrix_m(a(37.77, 37.80), a(-122.41, -122.27), a(37.78), a(-122.42))
    assert m.shape == (2, 1)
    assert m[1, 0] == pytest.approx(haversine_m(37.80, -122.27, 37.78, -122.42), rel=1e-3)
    assert m[0, 0] == pytest.approx(haversine_m(37.77, -122.41, 37.78, -122.42), rel=1e-3)
    assert scoring.heuristic_travel_s(a(1000), 5.0)[0] == pytest.approx(1000 * 1.35 / 5)
