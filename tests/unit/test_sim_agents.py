"""The agents' pure parts: acceptance, movement, shifts, kitchen times, settings, progress."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import statistics

import pytest

from foodmesh.sim.agents import HttpResult, SimConfig, Stats
from foodmesh.sim.city import build_city
from foodmesh.sim.demand import distance_m
from foodmesh.sim.drivers import (
    Leg,
    Router,
    acceptance_probability,
    shift_windows,
    traffic_multiplier,
)
from foodmesh.sim.kitchens import plan_kitchen
from foodmesh.sim.run import format_progress
from foodmesh.v1 import common_pb2

LA = dt.timezone(dt.timedelta(hours=-8))


def test_drivers_take_near_well_paid_offers_more_often() -> None:
    fair = acceptance_probability(0.9, 2.0, 440)
    assert fair == pytest.approx(0.9, abs=0.01)
    assert acceptance_probability(0.9, 2.0, 200) < fair
    assert acceptance_probability(0.9, 9.0, 1280) < fair  # fairly paid, but far
    assert acceptance_probability(0.6, 2.0, 440) < fair
    for d, pay in ((0.0, 0), (50.0, 10**6), (float("nan"), -5)):
        assert 0.02 <= acceptance_probability(0.9, d, pay) <= 0.99


def test_a_leg_moves_steadily_along_its_path() -> None:
    leg = Leg.of([(37.77, -122.42), (37.78, -122.42), (37.78, -122.41)], 100.0)
    assert leg.at(0)[:2] == pytest.approx((37.77, -122.42))
    assert leg.at(100)[:2] == leg.at(1000)[:2] == pytest.approx((37.78, -122.41))
    first = distance_m((37.77, -122.42), (37.78, -122.42))
    half = leg.at(100 * first / 2 / leg.distance_m)
    assert half[:2] == pytest.approx((37.775, -122.42), abs=1e-6)
    assert half[2] == pytest.approx(0.0, abs=0.5)  # heading north
    assert leg.at(99.9)[2] == pytest.approx(90.0, abs=1.0)  # then east
    assert Leg.of([(1.0, 2.0)], 0).at(5)[:2] == (1.0, 2.0)


async def test_straight_drives_are_slower_in_rush_hour_and_on_a_bicycle() -> None:
    router = await Router.create(use_roads=False, travel_scale=1.0)
    a, b = (37.7749, -122.4194), (37.7849, -122.4094)
    rush = dt.datetime(2026, 11, 25, 18, tzinfo=LA)
    night = dt.datetime(2026, 11, 25, 23, tzinfo=LA)
    car = common_pb2.VEHICLE_TYPE_CAR
    assert traffic_multiplier(rush) == 1.5 and traffic_multiplier(night) == 1.0
    slow = router.leg(a, b, when=rush, vehicle=car).duration_s
    fast = router.leg(a, b, when=night, vehicle=car).duration_s
    assert slow == pytest.approx(1.5 * fast)
    assert router.leg(a, b, when=night, vehicle=common_pb2.VEHICLE_TYPE_BICYCLE).duration_s > fast
    scaled = await Router.create(use_roads=False, travel_scale=0.1)
    assert scaled.leg(a, b, when=night, vehicle=car).duration_s == pytest.approx(fast * 0.1)
    assert router.kind == "straight"


def test_shifts_start_on_the_hour_or_trickle_in_when_under_way() -> None:
    spec = dataclasses.replace(build_city(seed=7, restaurants=1, drivers=1, customers=1).drivers[0],
                               shift_start_h=11.0, shift_hours=4.0)  # fmt: skip
    rng = random.Random(1)
    at_10 = dt.datetime(2026, 11, 25, 10, tzinfo=LA)
    assert shift_windows(spec, start=at_10, horizon_s=86400, shifts=True, ramp_s=30,
                         rng=rng)[0] == (3600.0, 3600.0 + 4 * 3600)  # fmt: skip
    at_12 = dt.datetime(2026, 11, 25, 12, tzinfo=LA)
    (on, off), *_ = shift_windows(spec, start=at_12, horizon_s=600, shifts=True, ramp_s=30,
                                  rng=rng)  # fmt: skip
    assert 0 <= on <= 30 and off == 600
    assert shift_windows(spec, start=at_10.replace(hour=16), horizon_s=600, shifts=True,
                         ramp_s=30, rng=rng) == []  # fmt: skip
    ((on, off),) = shift_windows(spec, start=at_10, horizon_s=600, shifts=False, ramp_s=30, rng=rng)
    assert 0 <= on <= 30 and off == 600


def test_kitchen_times_follow_the_restaurants_profile() -> None:
    rng = random.Random(2)
    spec = build_city(seed=7, restaurants=1, drivers=0, customers=1).restaurants[0]
    one = [plan_kitchen(rng, spec, items=1).ready_s / 60 for _ in range(3000)]
    # One item, an idle kitchen, off-peak: 78 % of the mean, a 10 % log-normal spread.
    assert statistics.fmean(one) == pytest.approx(0.78 * spec.prep_mean_min, rel=0.03)
    assert statistics.stdev(one) == pytest.approx(0.1 * 0.78 * spec.prep_mean_min, rel=0.15)
    # Bigger orders, a busy kitchen and the rush each take longer.
    big = statistics.fmean(plan_kitchen(rng, spec, items=5).ready_s for _ in range(500))
    busy = statistics.fmean(plan_kitchen(rng, spec, items=1, load=4).ready_s for _ in range(500))
    rush = statistics.fmean(plan_kitchen(rng, spec, items=1, peak=True).ready_s
                            for _ in range(500))  # fmt: skip
    assert min(big, busy, rush) / 60 > 1.08 * statistics.fmean(one)
    plan = plan_kitchen(rng, spec, scale=0.01)
    assert 0 < plan.confirm_s <= plan.start_s < plan.ready_s < 60


def test_settings_out_of_range_are_named() -> None:
    assert SimConfig().problems() == []
    bad = SimConfig(gateway="localhost:8080", drivers=-1, orders_per_hour=float("nan"),
                    prep_scale=0, bad_share=1.5, duration_s=-1)  # fmt: skip
    assert {f for f, _ in bad.problems()} == {"gateway", "drivers", "orders_per_hour",
                                               "prep_scale", "bad_share", "duration_s"}  # fmt: skip


def test_the_progress_line_shows_stages_rates_errors_and_bad_actors() -> None:
    stats = Stats()
    stats.inc("placed", 12)
    stats.inc("delivered", 3)
    stats.inc("fixes_sent", 500)
    stats.error("http_503")
    stats.defended["double_tap"] += 2
    stats.drivers_online = 7
    line = format_progress(stats)
    for part in ("placed 12", "delivered 3", "drivers 7 on", "fixes 500", "http_503 1",
                 "2 refused, 0 breached"):  # fmt: skip
        assert part in line, line


def test_http_results_read_field_violations() -> None:
    body = {"details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                         "field_violations": [{"field": "items[0].quantity",
                                               "description": "1 to 99"}]}]}  # fmt: skip
    r = HttpResult(400, body)
    assert not r.ok and r.violations() == {"items[0].quantity": "1 to 99"}
    assert HttpResult(201, {}).ok and HttpResult(0, {}, "timeout").violations() == {}


def test_a_share_of_drivers_work_around_the_clock() -> None:
    city = build_city(seed=7, restaurants=1, drivers=400, customers=1)
    at_3am = dt.datetime(2026, 11, 25, 3, tzinfo=LA)
    rng = random.Random(4)

    def on(share: float) -> int:
        windows = [
            shift_windows(d, start=at_3am, horizon_s=600, shifts=True, ramp_s=30, rng=rng,
                          always_on_share=share)
            for d in city.drivers
        ]  # fmt: skip
        return sum(bool(w) for w in windows)

    assert on(0.0) == 0  # nobody's shift starts before 7 am
    assert on(0.1) == pytest.approx(40, abs=15)
    assert on(0.1) == on(0.1)  # the same drivers every time


def test_the_sim_command_names_a_bad_setting_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from foodmesh.cli import main

    assert main(["sim", "--prep-scale", "0", "--wait", "0", "--dispatch-target", "none"]) == 1
    assert "prep_scale: must be within (0, 100]" in capsys.readouterr().err
    assert main(["sim", "run", "--bad-share", "2", "--wait", "0"]) == 1
    assert "bad_share" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["sim", "run", "--help"])
    assert done.value.code == 0
    assert "--orders-per-hour" in capsys.readouterr().out


def test_a_kitchen_cooks_an_order_confirmed_while_its_tablet_was_away() -> None:
    """An auto-confirmed order placed before the feed connected (or in a gap of it) arrives
    as CONFIRMED, never as placed: it is still the kitchen's to cook, once."""
    from typing import Any

    from foodmesh.sim.kitchens import Kitchens

    spec = build_city(seed=3, restaurants=1, drivers=1, customers=1).restaurants[0]
    stats = Stats()
    k = Kitchens(config=SimConfig(), gateway=None, stats=stats, recorder=None,  # type: ignore[arg-type]
                 clock=lambda: 0.0, rng=random.Random(1))  # fmt: skip
    spawned: list[Any] = []

    def spawn(coro: Any) -> None:
        spawned.append(coro)
        coro.close()

    def order(oid: str, status: str, event: str = "", **fields: Any) -> dict[str, Any]:
        o = {"order_id": oid, "status": f"ORDER_STATUS_{status}", **fields}
        return {"order": o, "event": event} if event else {"order": o}

    k._heard(order("o1", "CONFIRMED"), spec, spawn)  # the snapshot when the tablet connects
    k._heard(order("o1", "CONFIRMED", event="confirmed"), spec, spawn)  # heard again: once
    k._heard(order("o2", "CONFIRMED", event="confirmed"), spec, spawn)  # its placement missed
    k._heard(order("o3", "PLACED", event="placed"), spec, spawn)
    k._heard(order("o3", "CONFIRMED", event="confirmed"), spec, spawn)  # cooking already
    k._heard(order("o4", "READY_FOR_PICKUP"), spec, spawn)  # cooked: the driver's now
    k._heard(order("o5", "PLACED", delivery_option="DELIVERY_OPTION_SCHEDULED"), spec, spawn)
    assert len(spawned) == 3
    assert stats.counts["kitchen_caught_up"] == 2


async def test_a_driver_tries_the_pickup_again_when_dispatch_says_try_again_shortly() -> None:
    """Dispatch answers UNAVAILABLE while its database restarts: the app tries again, as for
    every step. Giving up left the order at the counter, held by this driver (the 30-minute
    soak's one stuck order, at its PostgreSQL restart)."""
    import types

    from foodmesh.sim.drivers import DriverAgent
    from foodmesh.v1 import dispatch_pb2

    def rejected(code: str) -> dispatch_pb2.DriverSessionResponse:
        return dispatch_pb2.DriverSessionResponse(
            action_rejected=dispatch_pb2.ActionRejected(code=code, message="try again shortly")
        )

    answers = [rejected("UNAVAILABLE"), rejected("UNAVAILABLE"),
               dispatch_pb2.DriverSessionResponse(state=dispatch_pb2.SessionState())]  # fmt: skip
    sent: list[str] = []

    class Session:
        async def act(self, **action: dispatch_pb2.OrderProgress) -> object:
            sent.extend(p.order_id for p in action.values())
            return answers.pop(0)

        def rejected(self, ev: object, what: str) -> bool:
            raise AssertionError(f"{what} counted as refused")

    async def wait(s: object, seconds: float, order_id: str) -> None:
        return None

    stats = Stats()
    agent = types.SimpleNamespace(
        fleet=types.SimpleNamespace(stats=stats, food_ready=lambda oid: None),
        rng=random.Random(1), _wait=wait,
    )  # fmt: skip
    agent._try_again_shortly = lambda s, oid: DriverAgent._try_again_shortly(agent, s, oid)  # type: ignore[arg-type]
    a = dispatch_pb2.Assignment(order_id="ord_1")
    await DriverAgent._pick_up(agent, Session(), a, handover_s=0.0)  # type: ignore[arg-type]
    assert sent == ["ord_1"] * 3
    assert stats.counts["picked"] == 1 and stats.counts["steps_retried"] == 2
