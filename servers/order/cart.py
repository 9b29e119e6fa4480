"""An order's lines priced from the restaurant's menu, never from the client. Pure.

Each line must name an item of this restaurant's menu that is available, with
customization options of that item that are available and respect each group's
min/max choices. The unit price is the item's price plus its options' deltas.
A client may send the price it showed (the design's body); if it differs from the
menu's, the order is refused (FAILED_PRECONDITION, ``PRICE_CHANGED``, naming the
line) so a customer never pays a price they did not see.
"""

from __future__ import annotations

from collections.abc import Sequence

from foodmesh.core.errors import FailedPrecondition, NotFound, Violations
from foodmesh.v1 import catalog_pb2, order_pb2
from servers.order.model import Line

__all__ = ["price_lines"]


def _menu_items(menu: catalog_pb2.Menu) -> dict[str, catalog_pb2.MenuItem]:
    return {i.item_id: i for c in menu.categories for i in c.items}


def price_lines(
    inputs: Sequence[order_pb2.OrderItemInput], menu: catalog_pb2.Menu, currency: str
) -> list[Line]:
    """The priced lines; raises NotFound, InvalidArgument or FailedPrecondition naming the line."""
    items = _menu_items(menu)
    v = Violations()
    lines: list[Line] = []
    for i, given in enumerate(inputs):
        path = f"items[{i}]"
        item = items.get(given.item_id)
        if item is None:
            raise NotFound(
                f"{path}.item_id: no item {given.item_id!r} on restaurant "
                f"{menu.restaurant_id!r}'s menu",
                reason="ITEM_NOT_FOUND",
            )
        if not item.available:
            raise FailedPrecondition(
                f"{path}: {item.name!r} is not available now", reason="ITEM_UNAVAILABLE"
            )
        options = {o.option_id: (g, o) for g in item.customizations for o in g.options}
        # The design's body names options ("extra cheese"): a name, folded, is as good as
        # the option's id when no id is spelled so.
        by_name = {o.name.casefold(): (g, o) for g in item.customizations for o in g.options}
        chosen: dict[str, int] = {}
        unit = item.price.amount_minor
        seen: set[str] = set()
        resolved: list[str] = []
        for j, opt_id in enumerate(given.customizations):
            found = options.get(opt_id) or by_name.get(opt_id.strip().casefold())
            cpath = f"{path}.customizations[{j}]"
            if found is None:
                v.add(cpath, f"{item.name!r} has no option {opt_id!r}")
                continue
            group, option = found
            opt_id = option.option_id
            if opt_id in seen:
                v.add(cpath, f"option {opt_id!r} is chosen twice")
                continue
            seen.add(opt_id)
            resolved.append(opt_id)
            if not option.available:
                v.add(cpath, f"option {option.name!r} is not available now")
                continue
            chosen[group.group_id] = chosen.get(group.group_id, 0) + 1
            unit += option.price_delta.amount_minor
        for g in item.customizations:
            n = chosen.get(g.group_id, 0)
            hi = g.max_choices if g.max_choices > 0 else len(g.options)
            if not g.min_choices <= n <= hi:
                v.add(
                    f"{path}.customizations",
                    f"choose {g.min_choices} to {hi} of {g.name!r} ({n} chosen)",
                )
        unit = max(0, unit)
        if given.HasField("price") and not v:
            shown = given.price
            if shown.amount_minor != unit or (shown.currency_code or currency) != currency:
                raise FailedPrecondition(
                    f"{path}.price: {item.name!r} costs {unit} {currency} minor units now, "
                    f"not the {shown.amount_minor} shown",
                    reason="PRICE_CHANGED",
                )
        lines.append(
            Line(
                item_id=item.item_id,
                name=item.name,
                quantity=given.quantity,
                unit_price_minor=unit,
                line_total_minor=unit * given.quantity,
                customizations=tuple(resolved),
                special_instructions=given.special_instructions,
            )
        )
    v.raise_if_any()
    return lines
