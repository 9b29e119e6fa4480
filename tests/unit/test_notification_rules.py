"""Who gets what, on which channels, when, in which words: the Notification service's pure
parts (rules, plan, templates) and its input checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from foodmesh.core.errors import InvalidArgument
from foodmesh.v1 import common_pb2, dispatch_pb2, order_pb2
from foodmesh.v1 import notification_pb2 as pb
from servers.notification.plan import Prefs, PushTarget, delivery_id, plan, quiet_until
from servers.notification.rules import EVENT_TYPES, RULES, facts_of, notices_for
from servers.notification.service import check_push_subscription, prefs_from_pb
from servers.notification.templates import render

NOW = dt.datetime(2026, 12, 7, 21, 30, tzinfo=dt.UTC)


def _order(kind: str, driver_id: str = "") -> bytes:
    o = order_pb2.Order(order_id="ord_abc123", customer_id="c1", restaurant_id="r1",
                        restaurant_name="Luigi's", driver_id=driver_id)  # fmt: skip
    return order_pb2.OrderEvent(event_id=f"e-{kind}", order=o).SerializeToString()


def test_each_order_event_reaches_its_people() -> None:
    who = {}
    for kind in ("placed", "confirmed", "picked_up", "delivered", "cancelled"):
        facts = facts_of(f"orders.{kind}", _order(kind, driver_id="d1"))
        assert facts is not None
        who[kind] = sorted(
            (n.recipient, n.event_type) for n in notices_for(f"orders.{kind}", facts)
        )
    assert who["placed"] == [("restaurant:r1", "new_order")]
    assert who["confirmed"] == [("customer:c1", "order_confirmed")]
    assert who["delivered"] == [("customer:c1", "delivered")]
    assert who["cancelled"] == [("customer:c1", "order_cancelled"),
                                ("driver:d1", "order_cancelled"),
                                ("restaurant:r1", "order_cancelled")]  # fmt: skip
    # an event no rule follows, and a payload that does not decode, make nothing
    assert facts_of("orders.preparing", _order("preparing")) is None
    assert facts_of("orders.placed", b"\xff\xff") is None


def test_an_offer_is_one_notice_per_offer_and_urgent() -> None:
    ev = dispatch_pb2.DispatchEvent(
        event_id="x1", kind=dispatch_pb2.DISPATCH_EVENT_KIND_OFFERED,
        assignment=dispatch_pb2.Assignment(order_id="o1"),
        offer=dispatch_pb2.Offer(offer_id="of1", driver_id="d9", distance_miles=3.0,
                                 expected_earnings=common_pb2.Money(amount_minor=850,
                                                                    currency_code="USD")),
    )  # fmt: skip
    again = dispatch_pb2.DispatchEvent()
    again.CopyFrom(ev)
    again.event_id = "x2"  # the same offer announced again
    notices = [n for e in (ev, again)
               for n in notices_for("dispatch.offered",
                                    facts_of("dispatch.offered", e.SerializeToString()))]  # type: ignore[arg-type]  # fmt: skip
    assert {n.recipient for n in notices} == {"driver:d9"}
    assert {n.dedupe_key for n in notices} == {"offer:of1"}  # the store keeps the first
    assert all(n.urgent for n in notices)
    assert "$8.50" in render("new_offer", "en", notices[0].values).text


def test_adding_an_event_type_is_one_rule() -> None:
    assert EVENT_TYPES == {r.event_type for rs in RULES.values() for r in rs}
    for rules in RULES.values():
        for r in rules:
            assert r.role in ("customer", "restaurant", "driver")
            assert render(r.event_type, "en", {}).title  # every event type has words


def test_plan_follows_preferences_subscriptions_and_quiet_hours() -> None:
    facts = facts_of("orders.confirmed", _order("confirmed"))
    assert facts is not None
    (notice,) = notices_for("orders.confirmed", facts)
    subs = [PushTarget("ps1", "https://push.example/a", "k", "s"),
            PushTarget("ps2", "https://push.example/b", "k", "s")]  # fmt: skip
    _, planned = plan(notice, Prefs(email="a@example.com"), subs, now=NOW)
    by = {(p.channel, p.destination): p.state for p in planned}
    assert by == {("in_app", "customer:c1"): "delivered", ("email", "a@example.com"): "queued",
                  ("push", "https://push.example/a"): "queued",
                  ("push", "https://push.example/b"): "queued"}  # fmt: skip
    assert len({p.delivery_id for p in planned}) == 4  # one key per channel and subscription
    assert delivery_id(notice.event_id, notice.recipient, "email") in {
        p.delivery_id for p in planned
    }

    # Muted email, no address for SMS: skipped with a reason; the inbox keeps it.
    prefs = Prefs(events={"order_confirmed": ("in_app", "sms")})
    _, planned = plan(notice, prefs, subs, now=NOW)
    assert [(p.channel, p.state, p.reason) for p in planned] == [
        ("in_app", "delivered", ""), ("sms", "skipped", "no phone number")]  # fmt: skip

    # Quiet hours 21:00-07:00 local (UTC-8 here: 13:30 local, outside; UTC: 21:30, inside).
    assert quiet_until(Prefs(quiet_start_minute=1260, quiet_end_minute=420,
                             utc_offset_minutes=-480), NOW) is None  # fmt: skip
    quiet = Prefs(email="a@example.com", quiet_start_minute=1260, quiet_end_minute=420)
    _, planned = plan(notice, quiet, [], now=NOW)
    email = next(p for p in planned if p.channel == "email")
    assert email.next_at == dt.datetime(2026, 12, 8, 7, 0, tzinfo=dt.UTC)


def test_templates_escape_html_and_fall_back_to_english() -> None:
    words = render("order_confirmed", "fr", {"restaurant": "<b>Bad</b>", "order": "X1"})
    assert words.title == "<b>Bad</b> confirmed your order"
    assert "&lt;b&gt;Bad&lt;/b&gt;" in words.html and "<b>Bad</b>" not in words.html
    assert render("order_confirmed", "es", {"restaurant": "Luigi"}).title.startswith(
        "Luigi confirmó"
    )


def test_bad_subscriptions_and_preferences_name_their_fields() -> None:
    good = pb.RegisterPushSubscriptionRequest(
        endpoint="https://push.example/x",
        p256dh="BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
        auth="tBHItJI5svbpez7KI4CCXg",
    )  # fmt: skip
    check_push_subscription(good, dev=False)
    bad = pb.RegisterPushSubscriptionRequest(endpoint="http://push.example/x", p256dh="AAAA",
                                             auth="short")  # fmt: skip
    with pytest.raises(InvalidArgument) as e:
        check_push_subscription(bad, dev=False)
    assert {v.field for v in e.value.violations} == {"endpoint", "p256dh", "auth"}
    with pytest.raises(InvalidArgument) as e:
        muted = pb.EventChannels(event_type="new_order", channels=[pb.CHANNEL_UNSPECIFIED])
        prefs_from_pb(pb.Preferences(phone="555", locale="xx", quiet_end_minute=1440,
                                     events=[muted]))  # fmt: skip
    assert {v.field for v in e.value.violations} == {
        "preferences.phone", "preferences.locale", "preferences.quiet_end_minute",
        "preferences.events[0].channels"}  # fmt: skip


def test_warnings_delays_escalations_and_arrivals_reach_their_people() -> None:
    warn = facts_of("orders.confirm_due_soon", _order("confirm_due_soon"))
    late = facts_of("orders.delayed", _order("delayed"))
    assert warn is not None and late is not None
    (w,) = notices_for("orders.confirm_due_soon", warn)
    assert (w.recipient, w.event_type, w.urgent) == ("restaurant:r1", "confirm_due_soon", True)
    (d,) = notices_for("orders.delayed", late)
    assert (d.recipient, d.event_type) == ("customer:c1", "delayed")
    for kind, event_type in (("escalated", "no_driver_yet"), ("arriving", "arriving")):
        ev = dispatch_pb2.DispatchEvent(
            event_id=f"x-{kind}", kind=dispatch_pb2.DispatchEventKind.Value(
                f"DISPATCH_EVENT_KIND_{kind.upper()}"),
            assignment=dispatch_pb2.Assignment(order_id="o1", driver_id="d1"), reason="why",
        )  # fmt: skip
        facts = facts_of(f"dispatch.{kind}", ev.SerializeToString())
        assert facts is not None
        assert notices_for(f"dispatch.{kind}", facts) == []  # the customer is looked up
        (n,) = notices_for(f"dispatch.{kind}", replace(facts, customer_id="c1"))
        assert (n.recipient, n.event_type, n.dedupe_key) == ("customer:c1", event_type,
                                                             f"o1:{event_type}")  # fmt: skip
    for event_type in ("confirm_due_soon", "delayed", "no_driver_yet", "arriving"):
        assert event_type in EVENT_TYPES
        for locale in ("en", "es"):
            words = render(event_type, locale, {"order": "ABC123", "reason": "why"})
            assert "ABC123" in words.text or "ABC123" in words.title
