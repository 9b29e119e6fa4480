"""Who confirms a new order and by when (servers/order/confirm.py), and when Dispatch
escalates an order nobody took (servers/dispatch/escalation.py): pure rules."""

from __future__ import annotations

import datetime as dt

from servers.dispatch.escalation import EscalationRules, waited_too_long
from servers.order.confirm import (
    MAX_TIMEOUT_S,
    ConfirmSettings,
    auto_confirm_at,
    plan_confirm,
    timeout_reason,
)
from servers.order.notices import delay_minutes, slipped

LA = "America/Los_Angeles"
# 12:30 in Los Angeles (PST, UTC-8), a lunchtime.
NOON = dt.datetime(2026, 12, 7, 20, 30, tzinfo=dt.UTC)
MEALS = ((11 * 60, 14 * 60), (17 * 60, 22 * 60))


def test_auto_confirm_applies_all_day_or_only_in_its_local_windows() -> None:
    assert not auto_confirm_at(ConfirmSettings("r"), NOON, LA)
    assert auto_confirm_at(ConfirmSettings("r", auto_confirm=True), NOON, LA)
    meals = ConfirmSettings("r", auto_confirm=True, hours=MEALS)
    assert auto_confirm_at(meals, NOON, LA)
    assert not auto_confirm_at(meals, NOON + dt.timedelta(hours=3), LA)  # 15:30 local
    assert auto_confirm_at(meals, NOON + dt.timedelta(hours=6), LA)  # 18:30 local
    # The same instant is 05:30 in Tokyo: outside both windows there.
    assert not auto_confirm_at(meals, NOON, "Asia/Tokyo")
    assert auto_confirm_at(meals, NOON, "Not/AZone") is True  # read as UTC: 20:30


def test_the_deadline_is_now_for_auto_confirm_else_the_timeout_after_the_kitchen_gets_it() -> None:
    auto = plan_confirm(ConfirmSettings("r", auto_confirm=True), now=NOON, time_zone=LA,
                        release_at=None, default_timeout_s=300)  # fmt: skip
    assert (auto.due_at, auto.auto, auto.timeout_s) == (NOON, True, 300)
    manual = plan_confirm(ConfirmSettings("r"), now=NOON, time_zone=LA, release_at=None,
                          default_timeout_s=300)  # fmt: skip
    assert (manual.due_at, manual.auto) == (NOON + dt.timedelta(seconds=300), False)
    own = plan_confirm(ConfirmSettings("r", timeout_s=90), now=NOON, time_zone=LA,
                       release_at=None, default_timeout_s=300)  # fmt: skip
    assert own.due_at == NOON + dt.timedelta(seconds=90)
    # A scheduled order reaches the kitchen at its release: the clock starts there, and
    # auto-confirm is judged at that hour (21:30 local is a dinner hour).
    later = NOON + dt.timedelta(hours=9)
    sched = plan_confirm(ConfirmSettings("r", auto_confirm=True, hours=MEALS), now=NOON,
                         time_zone=LA, release_at=later, default_timeout_s=300)  # fmt: skip
    assert (sched.due_at, sched.auto) == (later, True)
    capped = plan_confirm(ConfirmSettings("r"), now=NOON, time_zone=LA, release_at=None,
                          default_timeout_s=10**9)  # fmt: skip
    assert capped.timeout_s == MAX_TIMEOUT_S


def test_the_customer_is_told_the_wait_in_words() -> None:
    assert timeout_reason(300) == "the restaurant did not confirm the order within 5 min"
    assert timeout_reason(2) == "the restaurant did not confirm the order within 2 s"


def test_an_order_is_escalated_after_the_limit_without_a_driver() -> None:
    rules = EscalationRules(no_driver_after_s=30)
    since = NOON
    assert not waited_too_long(since, since + dt.timedelta(seconds=29.9), rules)
    assert waited_too_long(since, since + dt.timedelta(seconds=30), rules)
    assert EscalationRules.from_extra({"FOODMESH_DISPATCH_NO_DRIVER_AFTER_S": "2"}) == (
        EscalationRules(no_driver_after_s=2.0)
    )


def test_a_customer_is_told_of_a_delay_once_when_the_estimate_first_slips_past_ten_minutes() -> (
    None
):
    promised = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    m = dt.timedelta(minutes=1)
    assert not slipped(promised, None, promised + 10 * m)  # 10 min is not more than 10
    assert slipped(promised, None, promised + 11 * m)
    assert slipped(promised, promised + 5 * m, promised + 11 * m)
    assert not slipped(promised, promised + 12 * m, promised + 20 * m)  # already said
    assert not slipped(promised, promised, promised - 3 * m)  # early is not late
    assert not slipped(None, None, promised + 60 * m)  # no promise known
    assert delay_minutes(promised, promised + 14 * m + dt.timedelta(seconds=20)) == 14
    assert delay_minutes(promised, promised + dt.timedelta(seconds=5)) == 1
