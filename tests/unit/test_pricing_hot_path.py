"""The pieces a quote goes through on every call: menu pricing from a prepared menu, and
the Catalog cache answering fresh entries without a wait and fetching only what is missing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foodmesh.core.errors import FailedPrecondition, InvalidArgument
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import common_pb2
from foodmesh.v1 import pricing_pb2 as ppb
from servers.pricing.cart import MenuIndex, PricedItem, price_items
from servers.pricing.catalog import QuoteCatalog
from servers.runtime.cache import TtlCache


def _usd(n: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=n, currency_code="USD")


def _menu() -> cpb.Menu:
    size = cpb.CustomizationGroup(group_id="size", name="Size", min_choices=1, max_choices=1,
        options=[cpb.CustomizationOption(option_id="small", name="Small", price_delta=_usd(-200),
                                         available=True),
                 cpb.CustomizationOption(option_id="large", name="Large", price_delta=_usd(300),
                                         available=True)])  # fmt: skip
    extras = cpb.CustomizationGroup(group_id="extras", name="Extras", min_choices=0,
        max_choices=0, options=[  # 0: as many as there are
            cpb.CustomizationOption(option_id="olives", name="Olives", price_delta=_usd(50),
                                    available=True),
            cpb.CustomizationOption(option_id="truffle", name="Truffle", price_delta=_usd(900),
                                    available=False)])  # fmt: skip
    return cpb.Menu(categories=[
        cpb.MenuCategory(category_id="mains", name="Mains", items=[
            cpb.MenuItem(item_id="pizza", name="Pizza", price=_usd(1499), available=True,
                         customizations=[size, extras]),
            cpb.MenuItem(item_id="calzone", name="Calzone", price=_usd(1299), available=False)]),
        cpb.MenuCategory(category_id="sides", name="Sides", items=[
            cpb.MenuItem(item_id="salad", name="Salad", price=_usd(899), available=True)]),
    ])  # fmt: skip


def _item(item_id: str, quantity: int = 1, *options: str) -> ppb.QuoteItem:
    return ppb.QuoteItem(item_id=item_id, quantity=quantity, customizations=list(options))


def _fields(exc: InvalidArgument) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in exc.violations]


def test_items_are_priced_from_the_menu_with_their_options() -> None:
    index = MenuIndex(_menu())
    got = price_items([_item("pizza", 2, "large", "olives"), _item("salad", 3)], index)
    assert got == [PricedItem("pizza", "Pizza", 2, 1499 + 300 + 50),
                   PricedItem("salad", "Salad", 3, 899)]  # fmt: skip
    assert sum(i.total_minor for i in got) == 2 * 1849 + 3 * 899
    # A raw menu is priced the same as its index.
    assert price_items([_item("pizza", 1, "small")], _menu()) == [
        PricedItem("pizza", "Pizza", 1, 1299)
    ]


def test_every_wrong_choice_is_named_by_its_field_path() -> None:
    index = MenuIndex(_menu())
    cart = [
        _item("salad"),
        _item("burger"),  # not on the menu
        _item("pizza", 1, "large", "large", "anchovies", "truffle"),  # twice, unknown, off
        _item("pizza"),  # a size must be chosen
        _item("pizza", 1, "small", "large"),  # at most one size
    ]
    with pytest.raises(InvalidArgument) as bad:
        price_items(cart, index)
    assert _fields(bad.value) == [
        ("items[1].item_id", "no item 'burger' on this restaurant's menu"),
        ("items[2].customizations[1]", "option 'large' is chosen twice"),
        ("items[2].customizations[2]", "'Pizza' has no option 'anchovies'"),
        ("items[2].customizations[3]", "option 'Truffle' is not available now"),
        ("items[3].customizations", "choose 1 to 1 of 'Size' (0 chosen)"),
        ("items[4].customizations", "choose 1 to 1 of 'Size' (2 chosen)"),
    ]


def test_an_unavailable_item_fails_the_quote_by_name() -> None:
    with pytest.raises(FailedPrecondition) as off:
        price_items([_item("salad"), _item("calzone")], MenuIndex(_menu()))
    assert off.value.reason == "ITEM_UNAVAILABLE" and "items[1]" in off.value.message


def _reference(items: list[ppb.QuoteItem], menu: cpb.Menu) -> list[int] | str:
    """What a cart costs, worked out straight from the menu message, or what is wrong with
    it: an unavailable item ends the quote at once, bad lines are all reported at the end."""
    by_id = {i.item_id: i for c in menu.categories for i in c.items}
    units: list[int] = []
    invalid = False
    for line in items:
        item = by_id.get(line.item_id)
        if item is None:
            invalid = True
            continue
        if not item.available:
            return "unavailable"
        options = {o.option_id: (g, o) for g in item.customizations for o in g.options}
        unit, counts, seen = item.price.amount_minor, dict[str, int](), set[str]()
        for opt in line.customizations:
            if opt not in options or opt in seen or not options[opt][1].available:
                invalid = True
                seen.add(opt)
                continue
            seen.add(opt)
            g, o = options[opt]
            counts[g.group_id] = counts.get(g.group_id, 0) + 1
            unit += o.price_delta.amount_minor
        for g in item.customizations:
            hi = g.max_choices if g.max_choices > 0 else len(g.options)
            if not g.min_choices <= counts.get(g.group_id, 0) <= hi:
                invalid = True
        units.append(max(0, unit) * line.quantity)
    return "invalid" if invalid else units


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["pizza", "salad", "calzone", "burger"]),
            st.integers(1, 5),
            st.lists(st.sampled_from(["small", "large", "olives", "truffle", "x"]), max_size=3),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_index_prices_any_cart_as_the_menu_says(
    cart: list[tuple[str, int, list[str]]],
) -> None:
    menu = _menu()
    items = [_item(i, q, *opts) for i, q, opts in cart]
    want = _reference(items, menu)
    try:
        got: list[int] | str = [p.total_minor for p in price_items(items, MenuIndex(menu))]
    except InvalidArgument:
        got = "invalid"
    except FailedPrecondition:
        got = "unavailable"
    assert got == want


class FakeCatalog:
    """The Catalog port, counting what it is asked (a unit test of the cache's logic)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.gate: asyncio.Event | None = None

    async def _answer(self, what: str) -> None:
        self.calls.append(what)
        if self.gate is not None:
            await self.gate.wait()
        if what in self.fail:
            raise RuntimeError(f"catalog away ({what})")

    async def get_restaurant(
        self, request: cpb.GetRestaurantRequest, *, deadline_s: float | None = None
    ) -> cpb.GetRestaurantResponse:
        await self._answer("restaurant")
        return cpb.GetRestaurantResponse(restaurant=cpb.Restaurant(restaurant_id="r1"))

    async def get_menu(
        self, request: cpb.GetMenuRequest, *, deadline_s: float | None = None
    ) -> cpb.GetMenuResponse:
        await self._answer("menu")
        return cpb.GetMenuResponse(menu=_menu())

    async def check_delivery(
        self, request: cpb.CheckDeliveryRequest, *, deadline_s: float | None = None
    ) -> cpb.CheckDeliveryResponse:
        await self._answer(f"delivery {request.location.lat:g}")
        return cpb.CheckDeliveryResponse(deliverable=True, distance_miles=request.location.lat)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_fresh_inputs_are_answered_from_memory_and_only_misses_are_fetched() -> None:
    inner, clock = FakeCatalog(), Clock()
    cache = QuoteCatalog(inner, cache=TtlCache(ttl_s=2.0, clock=clock))
    got, menu, where = await cache.quote_inputs("r1", 1.0, 2.0)
    assert got.restaurant.restaurant_id == "r1" and where.distance_miles == 1.0
    assert isinstance(menu, MenuIndex) and set(menu.items) == {"pizza", "calzone", "salad"}
    assert sorted(inner.calls) == ["delivery 1", "menu", "restaurant"]
    again = await cache.quote_inputs("r1", 1.0, 2.0)
    assert again[1] is menu  # the menu is indexed once per fetch, not once per quote
    assert len(inner.calls) == 3
    # Another address: only its delivery check is asked.
    _, menu2, where2 = await cache.quote_inputs("r1", 3.0, 2.0)
    assert menu2 is menu and where2.distance_miles == 3.0
    assert inner.calls[3:] == ["delivery 3"]
    # Past the time to live everything is asked again, and a new menu is indexed.
    clock.now += 2.5
    _, menu3, _ = await cache.quote_inputs("r1", 1.0, 2.0)
    assert menu3 is not menu and sorted(inner.calls[4:]) == ["delivery 1", "menu", "restaurant"]


async def test_concurrent_misses_share_one_call_and_failures_are_not_kept() -> None:
    inner = FakeCatalog()
    cache = QuoteCatalog(inner, cache=TtlCache(ttl_s=60.0))
    inner.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(cache.quote_inputs("r1", 1.0, 2.0)) for _ in range(5)]
    await asyncio.sleep(0.01)
    inner.gate.set()
    results = await asyncio.gather(*waiting)
    assert sorted(inner.calls) == ["delivery 1", "menu", "restaurant"]
    assert all(r[1] is results[0][1] for r in results)
    inner.gate = None
    inner.fail = {"delivery 5"}
    with pytest.raises(RuntimeError, match="delivery 5"):
        await cache.quote_inputs("r1", 5.0, 2.0)
    inner.fail = set()
    _, _, where = await cache.quote_inputs("r1", 5.0, 2.0)  # asked again, not the failure
    assert where.distance_miles == 5.0
    assert inner.calls[3:] == ["delivery 5", "delivery 5"]


async def test_without_a_time_to_live_every_quote_asks_the_catalog() -> None:
    inner = FakeCatalog()
    cache = QuoteCatalog(inner, cache=TtlCache(ttl_s=0))
    await cache.quote_inputs("r1", 1.0, 2.0)
    await cache.quote_inputs("r1", 1.0, 2.0)
    assert len(inner.calls) == 6
