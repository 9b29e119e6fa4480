"""Templates per event type and locale: a title, plain text, and HTML for email (pure).

Values come from :class:`servers.notification.rules.Facts` (and enrichment: the driver's
name and vehicle); a value a template names but the event lacks renders empty. HTML
escapes every value.
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LOCALES", "Rendered", "render"]

LOCALES = ("en", "es")


@dataclass(frozen=True, slots=True)
class Rendered:
    """One notice in words."""

    title: str
    text: str
    html: str


# (event type, locale) -> (title, text). The HTML is the text in a small frame.
_T: Mapping[tuple[str, str], tuple[str, str]] = {
    ("new_order", "en"): (
        "New order {order}",
        "Order {order}: {items} item(s), {total}. Confirm it now.",
    ),
    ("new_order", "es"): (
        "Nuevo pedido {order}",
        "Pedido {order}: {items} artículo(s), {total}. Confírmalo ahora.",
    ),
    ("order_confirmed", "en"): (
        "{restaurant} confirmed your order",
        "Order {order} is confirmed and being prepared.",
    ),
    ("order_confirmed", "es"): (
        "{restaurant} confirmó tu pedido",
        "El pedido {order} está confirmado y en preparación.",
    ),
    ("driver_assigned", "en"): (
        "{driver} is on the way",
        "{driver} ({vehicle}) will bring order {order}. Expected at {eta}.",
    ),
    ("driver_assigned", "es"): (
        "{driver} va en camino",
        "{driver} ({vehicle}) llevará el pedido {order}. Llegada prevista {eta}.",
    ),
    ("picked_up", "en"): (
        "Your order is on its way",
        "Order {order} left {restaurant}.",
    ),
    ("picked_up", "es"): (
        "Tu pedido va en camino",
        "El pedido {order} salió de {restaurant}.",
    ),
    ("delivered", "en"): (
        "Delivered",
        "Order {order} was delivered (proof: {proof}). Enjoy!",
    ),
    ("delivered", "es"): (
        "Entregado",
        "El pedido {order} fue entregado (prueba: {proof}). ¡Buen provecho!",
    ),
    ("order_cancelled", "en"): (
        "Order {order} cancelled",
        "Order {order} was cancelled ({reason}). Refund: {refund}.",
    ),
    ("order_cancelled", "es"): (
        "Pedido {order} cancelado",
        "El pedido {order} fue cancelado ({reason}). Reembolso: {refund}.",
    ),
    ("new_offer", "en"): (
        "New delivery offer",
        "Pick up at {pickup}, {miles} mi, earn {earnings}. Open the app to accept.",
    ),
    ("new_offer", "es"): (
        "Nueva oferta de entrega",
        "Recoge en {pickup}, {miles} mi, gana {earnings}. Abre la app para aceptar.",
    ),
    ("order_reassigned", "en"): (
        "Order {order} reassigned",
        "Order {order} went to another driver ({reason}).",
    ),
    ("order_reassigned", "es"): (
        "Pedido {order} reasignado",
        "El pedido {order} pasó a otro repartidor ({reason}).",
    ),
    ("confirm_due_soon", "en"): (
        "Order {order} waits for you",
        "Order {order} is not confirmed yet: {reason}.",
    ),
    ("confirm_due_soon", "es"): (
        "El pedido {order} te espera",
        "El pedido {order} aún no está confirmado: confírmalo pronto o se cancelará.",
    ),
    ("no_driver_yet", "en"): (
        "Still looking for a driver",
        "No driver has taken order {order} yet: we are looking further, with a bonus.",
    ),
    ("no_driver_yet", "es"): (
        "Seguimos buscando repartidor",
        "Ningún repartidor ha tomado el pedido {order}: buscamos más lejos, con un bono.",
    ),
    ("arriving", "en"): (
        "Your driver is arriving",
        "Order {order}: {reason}. Meet them at {dropoff}.",
    ),
    ("arriving", "es"): (
        "Tu repartidor está llegando",
        "El pedido {order} llega en unos minutos. Prepárate en {dropoff}.",
    ),
    ("delayed", "en"): (
        "Order {order} is running late",
        "Sorry: order {order} is {reason}.",
    ),
    ("delayed", "es"): (
        "El pedido {order} se retrasa",
        "Lo sentimos: el pedido {order} llegará a las {eta}, más tarde de lo prometido.",
    ),
}

_HTML = (
    '<!doctype html><html><body style="font-family:sans-serif">'
    '<h2 style="color:#e0541c">{title}</h2><p>{text}</p>'
    '<p style="color:#888;font-size:12px">foodmesh</p></body></html>'
)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _fill(template: str, values: Mapping[str, str]) -> str:
    return string.Formatter().vformat(template, (), _Blank(values))


def render(event_type: str, locale: str, values: Mapping[str, str]) -> Rendered:
    """The notice in ``locale`` (English where the locale has no template)."""
    pair = _T.get((event_type, locale)) or _T.get((event_type, "en"))
    if pair is None:  # an event type without a template still says something
        pair = (event_type.replace("_", " ").capitalize(), "Order {order}")
    title, text = (_fill(p, values) for p in pair)
    safe = {k: html.escape(v) for k, v in values.items()}
    body = _HTML.format(title=_fill(html.escape(pair[0]), safe),
                        text=_fill(html.escape(pair[1]), safe))  # fmt: skip
    return Rendered(title=title, text=text, html=body)
