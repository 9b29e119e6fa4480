"""The order state machine, exhaustively: every (from, to) pair, every kind of caller."""

from __future__ import annotations

import itertools

import pytest

from servers.order.transitions import (
    CANCELLABLE,
    FINAL,
    Actor,
    IllegalTransition,
    NotAllowed,
    Status,
    cancel_refund,
    check_cancel,
    check_step,
    next_status,
)

S = Status
HAPPY = [S.PLACED, S.CONFIRMED, S.PREPARING, S.READY_FOR_PICKUP, S.PICKED_UP, S.IN_TRANSIT,
         S.DELIVERED]  # fmt: skip
LEGAL = set(itertools.pairwise(HAPPY))
OPS = Actor("ops", "ops_1")
SERVICE = Actor("service", "dispatch")
OWN_RESTAURANT = Actor("restaurant", "rest_1")
OTHER_RESTAURANT = Actor("restaurant", "rest_2")
OWN_DRIVER = Actor("driver", "drv_1")
OTHER_DRIVER = Actor("driver", "drv_2")
CUSTOMER = Actor("customer", "cus_1")
KITCHEN = {S.CONFIRMED, S.PREPARING, S.READY_FOR_PICKUP}


def step(current: Status, to: Status, actor: Actor, driver_id: str = "drv_1") -> None:
    check_step(current, to, actor, restaurant_id="rest_1", driver_id=driver_id)


@pytest.mark.parametrize(("current", "to"), list(itertools.product(Status, Status)))
def test_only_the_next_status_of_the_chain_may_follow(current: Status, to: Status) -> None:
    if (current, to) in LEGAL:
        step(current, to, OPS)
        step(current, to, SERVICE)
    else:
        with pytest.raises(IllegalTransition) as err:
            step(current, to, OPS)
        # The message names both states.
        assert current.value in str(err.value) and to.value in str(err.value)


@pytest.mark.parametrize(("current", "to"), sorted(LEGAL))
def test_each_step_belongs_to_its_side(current: Status, to: Status) -> None:
    # The road's steps are the driver's, made for them by Dispatch (a service) from their
    # DriverSession with the proof of delivery: a driver's own token cannot make them here.
    mine = OWN_RESTAURANT if to in KITCHEN else SERVICE
    step(current, to, mine)
    for other in (OTHER_RESTAURANT, OTHER_DRIVER, CUSTOMER, OWN_DRIVER,
                  *([] if to in KITCHEN else [OWN_RESTAURANT])):  # fmt: skip
        with pytest.raises(NotAllowed):
            step(current, to, other)


def test_a_driver_cannot_move_an_order_no_driver_is_assigned_to() -> None:
    with pytest.raises(NotAllowed):
        step(S.READY_FOR_PICKUP, S.PICKED_UP, OWN_DRIVER, driver_id="")
    step(S.READY_FOR_PICKUP, S.PICKED_UP, OPS, driver_id="")


@pytest.mark.parametrize("current", list(Status))
def test_cancellation_is_possible_only_before_pickup(current: Status) -> None:
    args = {"customer_id": "cus_1", "restaurant_id": "rest_1"}
    if current in CANCELLABLE:
        for who in (OPS, SERVICE, CUSTOMER, OWN_RESTAURANT):
            check_cancel(current, who, **args)
        for who in (Actor("customer", "cus_2"), OTHER_RESTAURANT, OWN_DRIVER):
            with pytest.raises(NotAllowed):
                check_cancel(current, who, **args)
    else:
        with pytest.raises(IllegalTransition):
            check_cancel(current, OPS, **args)
    with pytest.raises(IllegalTransition):  # never through check_step
        step(current, S.CANCELLED, OPS)


def test_next_status_walks_the_chain_and_stops_at_the_end() -> None:
    assert [next_status(s) for s in HAPPY] == [*HAPPY[1:], None]
    assert next_status(S.CANCELLED) is None
    assert FINAL == {S.DELIVERED, S.CANCELLED}


# total 3000 = subtotal 2398 + tax 210 + fees/tip 392
MONEY = {"total_minor": 3000, "subtotal_minor": 2398, "tax_minor": 210}


@pytest.mark.parametrize(
    ("stage", "role", "refund"),
    [
        (S.PLACED, "customer", 3000),
        (S.CONFIRMED, "customer", 3000),
        (S.PREPARING, "customer", 3000 - 1304),  # half of 2608, rounded up, kept
        (S.READY_FOR_PICKUP, "customer", 3000 - 2608),  # food and its tax kept
        (S.PREPARING, "restaurant", 3000),
        (S.READY_FOR_PICKUP, "ops", 3000),
    ],
)
def test_refund_depends_on_stage_and_canceller(stage: Status, role: str, refund: int) -> None:
    r = cancel_refund(stage, role, **MONEY)
    assert r.refund_minor == refund
    assert r.refund_minor + r.kept_minor == 3000
    assert r.why


@pytest.mark.parametrize("stage", [S.PICKED_UP, S.IN_TRANSIT, S.DELIVERED, S.CANCELLED])
def test_no_refund_policy_after_pickup(stage: Status) -> None:
    with pytest.raises(IllegalTransition):
        cancel_refund(stage, "ops", **MONEY)


def test_refund_never_exceeds_the_charge() -> None:
    r = cancel_refund(S.READY_FOR_PICKUP, "customer", total_minor=500, subtotal_minor=2398,
                      tax_minor=210)  # fmt: skip
    assert (r.refund_minor, r.kept_minor) == (0, 500)
