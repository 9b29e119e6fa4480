"""Items priced from the restaurant's menu (never from the caller). Pure.

Each item must be on this restaurant's menu and available, with available
options of that item that respect each group's min/max choices; the unit price
is the item's price plus its options' deltas. Quantities are 1 to 99 and a cart
has at most 100 lines, so no cart can overflow an amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from foodmesh.core.errors import FailedPrecondition, Violations
from foodmesh.v1 import catalog_pb2, pricing_pb2

__all__ = ["MAX_LINES", "MAX_QUANTITY", "MenuIndex", "PricedItem", "check_items", "price_items"]

MAX_LINES = 100
MAX_QUANTITY = 99


@dataclass(frozen=True, slots=True)
class PricedItem:
    item_id: str
    name: str
    quantity: int
    unit_minor: int

    @property
    def total_minor(self) -> int:
        return self.unit_minor * self.quantity


def check_items(v: Violations, items: Sequence[pricing_pb2.QuoteItem]) -> None:
    """Shape checks that need no menu: count, ids, quantities."""
    if not v.check(len(items) > 0, "items", "at least one item is required"):
        return
    if not v.check(len(items) <= MAX_LINES, "items", f"at most {MAX_LINES} lines"):
        return
    for i, it in enumerate(items):  # messages are formatted only for a line that fails
        if not (it.item_id and len(it.item_id) <= 64):
            v.add(f"items[{i}].item_id", "is required (at most 64 characters)")
        if not 1 <= it.quantity <= MAX_QUANTITY:
            v.add(f"items[{i}].quantity", f"must be 1 to {MAX_QUANTITY} (got {it.quantity})")
        if len(it.customizations) > 50:
            v.add(f"items[{i}].customizations", "at most 50 options")


@dataclass(frozen=True, slots=True)
class _Group:
    group_id: str
    name: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class _Option:
    name: str
    group_id: str
    available: bool
    delta_minor: int


@dataclass(frozen=True, slots=True)
class _Item:
    item_id: str
    name: str
    available: bool
    price_minor: int
    options: dict[str, _Option]
    groups: tuple[_Group, ...]
    #: The groups that need a choice even when none is made (min_choices > 0).
    required: tuple[_Group, ...]


class MenuIndex:
    """A menu made ready for pricing: items and their options by id, in plain data.

    Built once per menu the Catalog sends (it is cached for seconds, and priced
    for every quote of that restaurant), so a quote does not walk the menu.
    """

    __slots__ = ("items",)

    def __init__(self, menu: catalog_pb2.Menu) -> None:
        items: dict[str, _Item] = {}
        for category in menu.categories:
            for it in category.items:
                groups: list[_Group] = []
                options: dict[str, _Option] = {}
                for g in it.customizations:
                    groups.append(
                        _Group(
                            g.group_id,
                            g.name,
                            g.min_choices,
                            g.max_choices if g.max_choices > 0 else len(g.options),
                        )
                    )
                    for o in g.options:
                        options[o.option_id] = _Option(o.name, g.group_id, o.available,
                                                       o.price_delta.amount_minor)  # fmt: skip
                items[it.item_id] = _Item(
                    it.item_id, it.name, it.available, it.price.amount_minor, options,
                    tuple(groups), tuple(g for g in groups if g.lo > 0),
                )  # fmt: skip
        self.items = items


def price_items(
    items: Sequence[pricing_pb2.QuoteItem], menu: catalog_pb2.Menu | MenuIndex
) -> list[PricedItem]:
    """The priced items; raises InvalidArgument or FailedPrecondition naming the item."""
    by_id = (menu if isinstance(menu, MenuIndex) else MenuIndex(menu)).items
    v = Violations()
    out: list[PricedItem] = []
    for i, given in enumerate(items):
        item = by_id.get(given.item_id)
        if item is None:
            v.add(f"items[{i}].item_id", f"no item {given.item_id!r} on this restaurant's menu")
            continue
        if not item.available:
            raise FailedPrecondition(
                f"items[{i}]: {item.name!r} is not available now", reason="ITEM_UNAVAILABLE"
            )
        unit = item.price_minor
        chosen_ids = given.customizations
        if not chosen_ids:
            for g in item.required:  # nothing chosen: only a group with a minimum can fail
                v.add(f"items[{i}].customizations",
                      f"choose {g.lo} to {g.hi} of {g.name!r} (0 chosen)")  # fmt: skip
            out.append(PricedItem(item.item_id, item.name, given.quantity, max(0, unit)))
            continue
        chosen: dict[str, int] = {}
        seen: set[str] = set()
        for j, opt_id in enumerate(chosen_ids):
            option = item.options.get(opt_id)
            if option is None:
                v.add(f"items[{i}].customizations[{j}]", f"{item.name!r} has no option {opt_id!r}")
                continue
            if opt_id in seen:
                v.add(f"items[{i}].customizations[{j}]", f"option {opt_id!r} is chosen twice")
                continue
            seen.add(opt_id)
            if not option.available:
                v.add(f"items[{i}].customizations[{j}]",
                      f"option {option.name!r} is not available now")  # fmt: skip
                continue
            chosen[option.group_id] = chosen.get(option.group_id, 0) + 1
            unit += option.delta_minor
        for g in item.groups:
            n = chosen.get(g.group_id, 0)
            if not g.lo <= n <= g.hi:
                v.add(f"items[{i}].customizations",
                      f"choose {g.lo} to {g.hi} of {g.name!r} ({n} chosen)")  # fmt: skip
        out.append(PricedItem(item.item_id, item.name, given.quantity, max(0, unit)))
    v.raise_if_any()
    return out
