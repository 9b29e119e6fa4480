"""The Catalog's plain data: restaurants, zones, menus, reviews. No I/O, no protobuf."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from servers.catalog.hours import Span
from servers.catalog.zones import Polygon

__all__ = [
    "Address",
    "Category",
    "Closure",
    "CustomizationGroup",
    "Item",
    "Menu",
    "Option",
    "Restaurant",
    "Review",
    "Zone",
]


@dataclass(frozen=True, slots=True)
class Address:
    lat: float
    lon: float
    street: str = ""
    unit: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""
    country: str = ""
    instructions: str = ""


@dataclass(frozen=True, slots=True)
class Closure:
    date: str  # local YYYY-MM-DD
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Zone:
    zone_id: str
    polygon: Polygon
    delivery_fee_minor: int
    minimum_order_minor: int


@dataclass(frozen=True, slots=True)
class Restaurant:
    """A restaurant as stored; money in minor units of ``currency``."""

    restaurant_id: str
    name: str
    cuisines: tuple[str, ...]
    address: Address
    time_zone: str
    hours: tuple[Span, ...]
    closures: tuple[Closure, ...]
    price_level: int
    currency: str
    minimum_order_minor: int
    avg_prep_time_min: int
    image_url: str
    paused: bool
    zones: tuple[Zone, ...]
    max_delivery_miles: float
    owner_id: str
    rating_sum: int = 0
    review_count: int = 0
    #: Food quality, rated apart from the restaurant: sum and count of the food ratings.
    food_rating_sum: int = 0
    food_rating_count: int = 0
    order_count: int = 0
    #: Bumped by every write of the row, in commit order: orders writes to the search index.
    version: int = 0
    update_time: dt.datetime | None = None
    #: The menu's orderable dishes, (name, description), for text search.
    dishes: tuple[tuple[str, str], ...] = ()
    #: Recent orders, decayed (``popularity.py``; log space, only comparisons mean anything).
    popularity: float = 0.0

    @property
    def rating(self) -> float:
        """Mean of the reviews' ratings; 0 without reviews."""
        return self.rating_sum / self.review_count if self.review_count else 0.0

    @property
    def food_rating(self) -> float:
        """Mean of the food ratings; 0 while nobody rated the food."""
        return self.food_rating_sum / self.food_rating_count if self.food_rating_count else 0.0


@dataclass(frozen=True, slots=True)
class Option:
    option_id: str
    name: str
    price_delta_minor: int
    available: bool


@dataclass(frozen=True, slots=True)
class CustomizationGroup:
    group_id: str
    name: str
    min_choices: int
    max_choices: int
    options: tuple[Option, ...]


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    name: str
    description: str
    price_minor: int
    available: bool
    image_url: str
    customizations: tuple[CustomizationGroup, ...] = ()


@dataclass(frozen=True, slots=True)
class Category:
    category_id: str
    name: str
    items: tuple[Item, ...] = ()


@dataclass(frozen=True, slots=True)
class Menu:
    restaurant_id: str
    currency: str
    categories: tuple[Category, ...] = field(default_factory=tuple)
    update_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Review:
    order_id: str
    restaurant_id: str
    customer_id: str
    rating: int
    text: str
    create_time: dt.datetime
    #: Food quality, 1 to 5; 0: not rated.
    food_rating: int = 0
