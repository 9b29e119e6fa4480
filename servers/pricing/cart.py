"""Items priced from the restaurant's menu (never from the caller). Pure.

Each item must be on this restaurant's menu and available, with available
options of that item that respect each group's min/max choices; the unit price
is the item's price plus its options' deltas. Quantities are 1 to 99 and a cart
has at most 100 lines, so no cart can overflow an amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from foodmesh.v1 import catalog_pb2, pricing_pb2
from servers.runtime.errors import FailedPrecondition, Violations

__all__ = ["MAX_LINES", "MAX_QUANTITY", "PricedItem", "check_items", "price_items"]

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
    for i, it in enumerate(items):
        v.check(bool(it.item_id) and len(it.item_id) <= 64, f"items[{i}].item_id",
                "is required (at most 64 characters)")  # fmt: skip
        v.check(1 <= it.quantity <= MAX_QUANTITY, f"items[{i}].quantity",
                f"must be 1 to {MAX_QUANTITY} (got {it.quantity})")  # fmt: skip
        v.check(len(it.customizations) <= 50, f"items[{i}].customizations", "at most 50 options")


def price_items(items: Sequence[pricing_pb2.QuoteItem], menu: catalog_pb2.Menu) -> list[PricedItem]:
    """The priced items; raises InvalidArgument or FailedPrecondition naming the item."""
    by_id = {i.item_id: i for c in menu.categories for i in c.items}
    v = Violations()
    out: list[PricedItem] = []
    for i, given in enumerate(items):
        path = f"items[{i}]"
        item = by_id.get(given.item_id)
        if item is None:
            v.add(f"{path}.item_id", f"no item {given.item_id!r} on this restaurant's menu")
            continue
        if not item.available:
            raise FailedPrecondition(
                f"{path}: {item.name!r} is not available now", reason="ITEM_UNAVAILABLE"
            )
        options = {o.option_id: (g, o) for g in item.customizations for o in g.options}
        chosen: dict[str, int] = {}
        seen: set[str] = set()
        unit = item.price.amount_minor
        for j, opt_id in enumerate(given.customizations):
            cpath = f"{path}.customizations[{j}]"
            found = options.get(opt_id)
            if found is None:
                v.add(cpath, f"{item.name!r} has no option {opt_id!r}")
                continue
            if opt_id in seen:
                v.add(cpath, f"option {opt_id!r} is chosen twice")
                continue
            seen.add(opt_id)
            group, option = found
            if not option.available:
                v.add(cpath, f"option {option.name!r} is not available now")
                continue
            chosen[group.group_id] = chosen.get(group.group_id, 0) + 1
            unit += option.price_delta.amount_minor
        for g in item.customizations:
            n = chosen.get(g.group_id, 0)
            hi = g.max_choices if g.max_choices > 0 else len(g.options)
            if not g.min_choices <= n <= hi:
                v.add(f"{path}.customizations",
                      f"choose {g.min_choices} to {hi} of {g.name!r} ({n} chosen)")  # fmt: skip
        out.append(PricedItem(item.item_id, item.name, given.quantity, max(0, unit)))
    v.raise_if_any()
    return out
