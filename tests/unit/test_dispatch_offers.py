"""An assignment's steps and what a failed offer does (``offers.py``)."""

from __future__ import annotations

import pytest

from foodmesh.core.errors import FailedPrecondition
from servers.dispatch.offers import Action, AssignmentStatus, OfferRules, step


def test_steps_of_a_delivery_must_come_in_order_and_retries_are_no_ops() -> None:
    S = AssignmentStatus
    assert step(S.ASSIGNED, Action.ARRIVED_AT_RESTAURANT) is S.AT_RESTAURANT
    assert step(S.ASSIGNED, Action.PICKED_UP) is S.PICKED_UP
    assert step(S.PICKED_UP, Action.PICKED_UP) is None
    assert step(S.AT_CUSTOMER, Action.DELIVERED) is S.DELIVERED
    with pytest.raises(FailedPrecondition, match="delivered"):
        step(S.ASSIGNED, Action.DELIVERED)
    with pytest.raises(FailedPrecondition):
        step(S.DELIVERED, Action.PICKED_UP)


def test_third_failure_escalates_with_wider_radius_and_higher_pay() -> None:
    rules = OfferRules()
    S = AssignmentStatus
    kw = dict(radius_miles=5.0, wide=10.0, escalated_radius=15.0)
    assert rules.after_failure(offers_made=1, status=S.PENDING, **kw).status is S.PENDING
    third = rules.after_failure(offers_made=3, status=S.PENDING, **kw)
    assert third.status is S.ESCALATED and third.escalated_now and third.radius_miles == 15.0
    again = rules.after_failure(offers_made=4, status=S.ESCALATED, **kw)
    assert again.status is S.ESCALATED and not again.escalated_now
    assert rules.earnings_minor(2.0, escalated=True) > rules.earnings_minor(2.0, escalated=False)
    assert rules.earnings_minor(2.0, escalated=False) == 300 + 300
