"""A deterministic city around the design's example point: restaurants, menus, drivers, customers.

``build_city(seed=…)`` is pure: the same arguments give the same city, byte for
byte, so ``foodmesh seed`` can run twice and change nothing, and the simulator,
the ETA history generator and the tests all meet the same restaurants.

Restaurants cluster in neighbourhoods (a mixture of Gaussians around centres
within ~6 km of 37.7749, −122.4194), the way real ones gather on commercial
streets; a few always sit within half a mile of the design's point, so its example
search and order work as written, at any hour: those few, and about one in twelve
of the rest, are open around the clock (a city's 24-hour diners). Each has a
cuisine's menu with realistic items and prices, weekly hours (lunch-and-dinner,
all-day, late-night or breakfast profiles, in America/Los_Angeles), a prep-time
profile (mean and spread, which the history generator and the simulated kitchens
sample), and two delivery zones (octagons: the near one cheaper, the far one
dearer with a minimum order).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from foodmesh.v1 import catalog_pb2, common_pb2, dispatch_pb2

__all__ = [
    "CENTER",
    "CUISINES",
    "City",
    "CustomerSpec",
    "DriverSpec",
    "SHIFT_HOURS",
    "SHIFT_STARTS_H",
    "RestaurantSpec",
    "build_city",
]

CENTER = (37.7749, -122.4194)
TIME_ZONE = "America/Los_Angeles"
METERS_PER_DEG_LAT = 111_195.0
METERS_PER_MILE = 1609.344
#: Drivers' shifts: a start (local hour) and a length, each drawn evenly from these.
SHIFT_STARTS_H = (7.0, 10.0, 11.0, 16.0, 17.0)
SHIFT_HOURS = (4.0, 6.0, 8.0)

# cuisine -> (item name, price in cents) by category; prices are 2026 San Francisco's.
_MENUS: dict[str, dict[str, list[tuple[str, int]]]] = {
    "italian": {
        "Antipasti": [("Burrata", 1600), ("Arancini", 1200), ("Caesar Salad", 1400)],
        "Pizza": [("Margherita Pizza", 1899), ("Pepperoni Pizza", 2099), ("Funghi Pizza", 2199)],
        "Pasta": [
            ("Spaghetti Carbonara", 2299),
            ("Rigatoni Bolognese", 2399),
            ("Cacio e Pepe", 2099),
        ],
        "Dolci": [("Tiramisu", 999), ("Cannoli", 799)],
    },
    "mexican": {
        "Tacos": [("Al Pastor Taco", 499), ("Carnitas Taco", 499), ("Fish Taco", 599)],
        "Burritos": [
            ("Super Burrito", 1499),
            ("Veggie Burrito", 1299),
            ("California Burrito", 1599),
        ],
        "Sides": [("Chips and Guacamole", 899), ("Elote", 699)],
        "Drinks": [("Horchata", 499), ("Jarritos", 399)],
    },
    "chinese": {
        "Dim Sum": [("Har Gow", 899), ("Siu Mai", 849), ("Char Siu Bao", 799)],
        "Mains": [("Kung Pao Chicken", 1699), ("Mapo Tofu", 1499), ("Beef Chow Fun", 1799)],
        "Rice and Noodles": [("Yangzhou Fried Rice", 1399), ("Dan Dan Noodles", 1499)],
    },
    "japanese": {
        "Sushi": [("Salmon Nigiri", 899), ("Spicy Tuna Roll", 1199), ("Rainbow Roll", 1799)],
        "Ramen": [("Tonkotsu Ramen", 1899), ("Shoyu Ramen", 1799), ("Miso Ramen", 1799)],
        "Small Plates": [("Gyoza", 899), ("Edamame", 599), ("Karaage", 1099)],
    },
    "thai": {
        "Curries": [("Green Curry", 1699), ("Panang Curry", 1699), ("Massaman Curry", 1799)],
        "Noodles": [("Pad Thai", 1599), ("Pad See Ew", 1599), ("Drunken Noodles", 1649)],
        "Starters": [("Fresh Rolls", 899), ("Tom Yum Soup", 1099)],
    },
    "indian": {
        "Curries": [
            ("Chicken Tikka Masala", 1899),
            ("Palak Paneer", 1699),
            ("Lamb Vindaloo", 2099),
        ],
        "Breads": [("Garlic Naan", 499), ("Onion Kulcha", 599)],
        "Rice": [("Chicken Biryani", 1899), ("Jeera Rice", 599)],
        "Starters": [("Samosa", 699), ("Pakora", 799)],
    },
    "american": {
        "Burgers": [("Cheeseburger", 1499), ("Bacon Burger", 1699), ("Veggie Burger", 1399)],
        "Sides": [("Fries", 599), ("Onion Rings", 699), ("Mac and Cheese", 899)],
        "Shakes": [("Chocolate Shake", 799), ("Vanilla Shake", 799)],
    },
    "mediterranean": {
        "Plates": [
            ("Chicken Shawarma Plate", 1799),
            ("Falafel Plate", 1499),
            ("Lamb Kofta Plate", 1999),
        ],
        "Wraps": [("Chicken Shawarma Wrap", 1399), ("Falafel Wrap", 1199)],
        "Mezze": [("Hummus", 799), ("Baba Ghanoush", 799), ("Tabbouleh", 899)],
    },
    "vietnamese": {
        "Pho": [("Pho Tai", 1599), ("Pho Ga", 1499), ("Vegetable Pho", 1399)],
        "Banh Mi": [("Grilled Pork Banh Mi", 1199), ("Tofu Banh Mi", 1099)],
        "Bun": [("Lemongrass Chicken Bun", 1599), ("Imperial Roll Bun", 1499)],
    },
    "korean": {
        "Mains": [("Bibimbap", 1799), ("Bulgogi", 2199), ("Kimchi Jjigae", 1699)],
        "Chicken": [("Yangnyeom Chicken", 2299), ("Soy Garlic Chicken", 2299)],
        "Sides": [("Japchae", 1199), ("Tteokbokki", 1299)],
    },
    "breakfast": {
        "Breakfast": [
            ("Avocado Toast", 1399),
            ("Eggs Benedict", 1799),
            ("Buttermilk Pancakes", 1399),
        ],
        "Bowls": [("Acai Bowl", 1299), ("Breakfast Burrito", 1399)],
        "Coffee": [("Latte", 599), ("Cold Brew", 549), ("Drip Coffee", 399)],
    },
    "pizza": {
        "Pizza": [
            ("New York Cheese Slice", 499),
            ("Large Cheese Pizza", 2499),
            ("Large Supreme Pizza", 3299),
        ],
        "Sides": [("Garlic Knots", 699), ("Buffalo Wings", 1399), ("Side Salad", 799)],
    },
}
CUISINES: tuple[str, ...] = tuple(sorted(_MENUS))

_NAME_PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "italian": (
        ("Luigi's", "Nonna's", "Trattoria", "Osteria", "Bella"),
        ("Pizza", "Kitchen", "Cucina", "Pasta House", "Roma"),
    ),
    "mexican": (
        ("El", "La", "Taqueria", "Casa", "Los"),
        ("Farolito", "Palmera", "Sol", "Mission", "Cantina"),
    ),
    "chinese": (
        ("Golden", "Jade", "Lucky", "Dragon", "Red Lantern"),
        ("Palace", "Garden", "Dumpling House", "Kitchen", "Wok"),
    ),
    "japanese": (
        ("Sakura", "Ramen", "Izakaya", "Umi", "Kaze"),
        ("Sushi", "Bar", "Tei", "House", "Ya"),
    ),
    "thai": (
        ("Bangkok", "Thai", "Lotus", "Siam", "Basil"),
        ("Kitchen", "Garden", "Orchid", "Street Food", "House"),
    ),
    "indian": (
        ("Taj", "Curry", "Spice", "Bombay", "Delhi"),
        ("Palace", "Kitchen", "House", "Express", "Junction"),
    ),
    "american": (
        ("Mission", "Golden Gate", "Sunset", "Hayes", "Castro"),
        ("Burger", "Diner", "Grill", "Kitchen", "Shack"),
    ),
    "mediterranean": (
        ("Olive", "Aegean", "Byblos", "Cedar", "Zaytoon"),
        ("Grill", "Kitchen", "Table", "House", "Mezze"),
    ),
    "vietnamese": (
        ("Pho", "Saigon", "Hanoi", "Little", "Lotus"),
        ("Noodle House", "Kitchen", "Corner", "Bistro", "Express"),
    ),
    "korean": (
        ("Seoul", "Kimchi", "Bulgogi", "Gangnam", "Han"),
        ("Kitchen", "BBQ", "House", "Table", "Pocha"),
    ),
    "breakfast": (
        ("Sunny", "Early Bird", "Morning", "Golden", "Corner"),
        ("Cafe", "Griddle", "Kitchen", "Bakery", "Table"),
    ),
    "pizza": (
        ("Slice", "Golden Boy", "North Beach", "Mission", "Brick Oven"),
        ("Pizza", "Pizzeria", "Pie Co.", "Slice House", "Pizza Bar"),
    ),
}

_STREETS = ("Market St", "Mission St", "Valencia St", "Geary Blvd", "Irving St", "Castro St",
            "Haight St", "Divisadero St", "Fillmore St", "Polk St", "Columbus Ave",
            "Clement St", "Folsom St", "Howard St", "24th St", "Judah St")  # fmt: skip

# (open, close) in minutes after local midnight, per profile; close past 1440 is after midnight.
_HOURS = {
    "lunch_dinner": [(11 * 60, 14 * 60 + 30), (17 * 60, 22 * 60)],
    "all_day": [(10 * 60 + 30, 22 * 60 + 30)],
    "late_night": [(11 * 60, 26 * 60)],
    "breakfast": [(7 * 60, 15 * 60)],
    "around_the_clock": [(0, 24 * 60)],
}

_VEHICLES = (
    (common_pb2.VEHICLE_TYPE_CAR, ("Toyota Prius", "Honda Civic", "Nissan Leaf", "Kia Niro")),
    (common_pb2.VEHICLE_TYPE_SCOOTER, ("Vespa Primavera", "Honda Ruckus")),
    (common_pb2.VEHICLE_TYPE_BICYCLE, ("Rad Power e-bike", "Trek FX")),
)
_FIRST = ("Alex", "Sam", "Maria", "Jose", "Wei", "Priya", "Kim", "Omar", "Lena", "Diego",
          "Aisha", "Tom", "Yuki", "Noah", "Ava", "Ravi", "Chen", "Sofia", "Ivan",
          "Mei")  # fmt: skip
_LAST = ("Garcia", "Nguyen", "Smith", "Chen", "Patel", "Kim", "Lopez", "Johnson", "Wong",
         "Singh", "Brown", "Martinez", "Lee", "Davis", "Silva")  # fmt: skip


@dataclass(frozen=True, slots=True)
class RestaurantSpec:
    """One restaurant of the city, with what the simulation needs beyond the Catalog's view."""

    restaurant: catalog_pb2.Restaurant
    menu: tuple[catalog_pb2.MenuCategory, ...]
    #: Preparation time profile in minutes: log-normal around ``prep_mean_min``.
    prep_mean_min: float
    prep_sd_min: float
    #: How much more (or less) popular than the average restaurant, for the demand model.
    popularity: float

    @property
    def restaurant_id(self) -> str:
        return self.restaurant.restaurant_id

    @property
    def location(self) -> tuple[float, float]:
        return (self.restaurant.address.lat, self.restaurant.address.lon)

    def item_ids(self) -> list[str]:
        return [i.item_id for c in self.menu for i in c.items if i.available]


@dataclass(frozen=True, slots=True)
class DriverSpec:
    driver: dispatch_pb2.Driver
    #: Where the driver's shifts start.
    home: tuple[float, float]
    #: Probability of accepting a typical offer, before distance and pay adjust it.
    base_acceptance: float
    #: Shift start and length in hours, local time.
    shift_start_h: float
    shift_hours: float

    @property
    def driver_id(self) -> str:
        return self.driver.driver_id


@dataclass(frozen=True, slots=True)
class CustomerSpec:
    customer_id: str
    address: common_pb2.Address
    #: Relative ordering frequency.
    appetite: float


@dataclass(frozen=True, slots=True)
class City:
    seed: int
    restaurants: tuple[RestaurantSpec, ...]
    drivers: tuple[DriverSpec, ...]
    customers: tuple[CustomerSpec, ...]


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    dlat = north_m / METERS_PER_DEG_LAT
    dlon = east_m / (METERS_PER_DEG_LAT * math.cos(math.radians(lat)))
    return (round(lat + dlat, 6), round(lon + dlon, 6))


def _octagon(lat: float, lon: float, miles: float) -> list[common_pb2.LatLng]:
    r = miles * METERS_PER_MILE
    pts = []
    for k in range(8):  # counter-clockwise from east, as GeoJSON's outer rings go
        a = k * math.pi / 4
        la, lo = _offset(lat, lon, r * math.sin(a), r * math.cos(a))
        pts.append(common_pb2.LatLng(lat=la, lon=lo))
    return pts


def _usd(cents: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=cents, currency_code="USD")


def _neighbourhoods(rng: random.Random, n: int) -> list[tuple[float, float, float]]:
    """Centres (lat, lon) and spreads (m) of the city's restaurant clusters."""
    out = [(CENTER[0], CENTER[1], 700.0)]  # downtown, around the design's point
    for _ in range(n - 1):
        d = rng.uniform(1500, 6500)
        a = rng.uniform(0, 2 * math.pi)
        lat, lon = _offset(CENTER[0], CENTER[1], d * math.sin(a), d * math.cos(a))
        out.append((lat, lon, rng.uniform(400, 1200)))
    return out


def _menu(
    rng: random.Random, rid: str, cuisine: str, price_level: int
) -> list[catalog_pb2.MenuCategory]:
    scale = (0.85, 1.0, 1.2, 1.5)[price_level - 1]
    cats = []
    for ci, (cat, items) in enumerate(_MENUS[cuisine].items()):
        c = catalog_pb2.MenuCategory(category_id=f"c{ci}", name=cat)
        for ii, (name, cents) in enumerate(items):
            price = int(round(cents * scale * rng.uniform(0.92, 1.08) / 25.0)) * 25 - 1
            item = catalog_pb2.MenuItem(
                item_id=f"{rid}_i{ci}{ii}", name=name, price=_usd(max(99, price)),
                description=f"{name}, made to order", available=rng.random() > 0.03,
                image_url=f"https://img.foodmesh.dev/items/{rid}_i{ci}{ii}.jpg",
            )  # fmt: skip
            if ci == 0 and ii == 0:  # one item with a size choice, as most menus have
                g = item.customizations.add(group_id="size", name="Size", min_choices=0,
                                            max_choices=1)  # fmt: skip
                g.options.add(option_id="large", name="Large", price_delta=_usd(300),
                              available=True)  # fmt: skip
            c.items.append(item)
        cats.append(c)
    return cats


def _restaurant(
    rng: random.Random, i: int, lat: float, lon: float, *, always_open: bool = False
) -> RestaurantSpec:
    rid = f"rest_{i:05d}"
    cuisine = rng.choice(CUISINES)
    extra = [c for c in rng.sample(CUISINES, 2) if c != cuisine][: rng.randint(0, 1)]
    first, second = _NAME_PARTS[cuisine]
    price_level = rng.choices((1, 2, 3, 4), weights=(30, 45, 20, 5))[0]
    profile = "breakfast" if cuisine == "breakfast" else rng.choices(
        ("lunch_dinner", "all_day", "late_night", "around_the_clock"),
        weights=(42, 37, 13, 8))[0]  # fmt: skip
    closed_day = rng.choice((None, None, None, 1, 2))  # some close on Monday or Tuesday
    if always_open:
        profile, closed_day = "around_the_clock", None
    hours = [catalog_pb2.OpeningHours(weekday=d, open_minute=o, close_minute=c)
             for d in range(1, 8) if d != closed_day for o, c in _HOURS[profile]]  # fmt: skip
    prep = rng.choice((8.0, 12.0, 15.0, 18.0, 22.0, 28.0))
    zone_fee = rng.choice((199, 299, 399))
    r = catalog_pb2.Restaurant(
        restaurant_id=rid,
        name=f"{rng.choice(first)} {rng.choice(second)}",
        cuisines=[cuisine, *extra],
        address=common_pb2.Address(
            street=f"{rng.randint(1, 3999)} {rng.choice(_STREETS)}",
            city="San Francisco",
            state="CA",
            zip=rng.choice(("94103", "94110", "94117", "94109", "94122")),
            country="US",
            lat=lat,
            lon=lon,
        ),
        time_zone=TIME_ZONE,
        hours=hours,
        price_level=price_level,
        minimum_order=_usd(rng.choice((0, 0, 1000, 1500))),
        avg_prep_time_min=int(prep),
        image_url=f"https://img.foodmesh.dev/restaurants/{rid}.jpg",
        max_delivery_distance_miles=rng.choice((4.0, 5.0, 6.0)),
        owner_id=f"owner_{rid}",
        zones=[
            catalog_pb2.DeliveryZone(
                zone_id="near",
                polygon=_octagon(lat, lon, 2.0),
                delivery_fee=_usd(zone_fee),
                minimum_order=_usd(0),
            ),
            catalog_pb2.DeliveryZone(
                zone_id="far",
                polygon=_octagon(lat, lon, 3.5),
                delivery_fee=_usd(zone_fee + 200),
                minimum_order=_usd(1500),
            ),
        ],  # fmt: skip
    )
    return RestaurantSpec(
        restaurant=r,
        menu=tuple(_menu(rng, rid, cuisine, price_level)),
        prep_mean_min=prep,
        prep_sd_min=prep * rng.uniform(0.2, 0.4),
        popularity=rng.lognormvariate(0.0, 0.6),
    )


def build_city(
    *,
    seed: int = 7,
    restaurants: int = 500,
    drivers: int = 300,
    customers: int = 2000,
    always_open: int = 5,
) -> City:
    """The city for ``seed``: deterministic, and a prefix of a bigger city with the same seed.

    The first ``always_open`` restaurants never close (a city's 24-hour diners, near the
    centre); the others keep their profile's hours.

    Each kind has its own random stream, so asking for more drivers does not move a
    single restaurant.
    """
    if restaurants < 1 or drivers < 0 or customers < 1:
        raise ValueError("a city needs at least one restaurant and one customer")
    r_rng = random.Random(f"{seed}:restaurants")
    hoods = _neighbourhoods(random.Random(f"{seed}:hoods"), 12)
    rests = []
    for i in range(restaurants):
        if i < 5:  # always a few within half a mile of the design's example point
            lat, lon = _offset(*CENTER, r_rng.uniform(-600, 600), r_rng.uniform(-600, 600))
        else:
            hlat, hlon, spread = r_rng.choice(hoods)
            lat, lon = _offset(hlat, hlon, r_rng.gauss(0, spread), r_rng.gauss(0, spread))
        rests.append(_restaurant(r_rng, i, lat, lon, always_open=i < always_open))

    d_rng = random.Random(f"{seed}:drivers")
    drv = []
    for i in range(drivers):
        vt, models = d_rng.choices(_VEHICLES, weights=(70, 15, 15))[0]
        did = f"drv_{i:05d}"
        hlat, hlon, _ = d_rng.choice(hoods)
        home = _offset(hlat, hlon, d_rng.gauss(0, 1500), d_rng.gauss(0, 1500))
        drv.append(DriverSpec(
            driver=dispatch_pb2.Driver(
                driver_id=did, name=f"{d_rng.choice(_FIRST)} {d_rng.choice(_LAST)[0]}.",
                vehicle_type=vt, vehicle=d_rng.choice(models),
                photo_url=f"https://img.foodmesh.dev/drivers/{did}.jpg",
            ),
            home=home,
            base_acceptance=min(0.98, max(0.5, d_rng.gauss(0.85, 0.08))),
            shift_start_h=d_rng.choice(SHIFT_STARTS_H),
            shift_hours=d_rng.choice(SHIFT_HOURS),
        ))  # fmt: skip

    c_rng = random.Random(f"{seed}:customers")
    cust = []
    for i in range(customers):
        if i == 0:  # the design's example customer lives at the design's example point
            lat, lon = CENTER
        else:
            hlat, hlon, _ = c_rng.choice(hoods)
            lat, lon = _offset(hlat, hlon, c_rng.gauss(0, 1200), c_rng.gauss(0, 1200))
        cust.append(CustomerSpec(
            customer_id=f"cust_{i:06d}",
            address=common_pb2.Address(
                street=f"{c_rng.randint(1, 3999)} {c_rng.choice(_STREETS)}",
                unit=f"Apt {c_rng.randint(1, 30)}" if c_rng.random() < 0.6 else "",
                city="San Francisco", state="CA", zip="94103", country="US", lat=lat, lon=lon,
            ),
            appetite=c_rng.lognormvariate(0.0, 0.8),
        ))  # fmt: skip
    return City(seed=seed, restaurants=tuple(rests), drivers=tuple(drv), customers=tuple(cust))
