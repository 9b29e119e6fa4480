"""The trace format ``foodmesh-trace/1`` (docs/trace-format.md): its records, load, validate, write.

A trace is a day (or an hour) of a city: couriers on and off shift, restaurants,
and orders with when they were placed and when the food was ready. The
simulator records one (``foodmesh.sim.trace.TraceRecorder``); ``foodmesh replay``
feeds one through the dispatch code. This module is the format's only reader and
writer, and imports nothing of the project, so both can use it. Loading is strict
where it matters (a missing required field, a bad number, an order naming an
unknown restaurant are errors that name the field and the record) and lenient
elsewhere (unknown fields are ignored).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULTS",
    "FORMAT",
    "Courier",
    "Trace",
    "TraceError",
    "TraceOrder",
    "TraceRestaurant",
    "load_trace",
    "parse_trace",
    "write_trace",
]

FORMAT = "foodmesh-trace/1"
#: The trace-wide numbers a document may leave out.
DEFAULTS: Mapping[str, float] = {
    "speed_mps": 5.0,
    "pickup_service_s": 240.0,
    "dropoff_service_s": 240.0,
    "target_click_to_door_s": 2400.0,
}


class TraceError(ValueError):
    """A trace that does not follow the format; ``field`` is the path of the offending value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Courier:
    id: str
    lat: float
    lon: float
    on_s: float
    off_s: float


@dataclass(frozen=True, slots=True)
class TraceRestaurant:
    id: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class TraceOrder:
    id: str
    placed_s: float
    restaurant_id: str
    ready_s: float
    dropoff_lat: float
    dropoff_lon: float


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    source: str
    origin: tuple[float, float]
    speed_mps: float
    pickup_service_s: float
    dropoff_service_s: float
    target_click_to_door_s: float
    couriers: tuple[Courier, ...]
    restaurants: tuple[TraceRestaurant, ...]
    orders: tuple[TraceOrder, ...]

    def as_json(self) -> dict[str, Any]:
        """The trace as the format's JSON object."""
        return {
            "format": FORMAT,
            "name": self.name,
            "source": self.source,
            "origin": {"lat": self.origin[0], "lon": self.origin[1]},
            "speed_mps": self.speed_mps,
            "pickup_service_s": self.pickup_service_s,
            "dropoff_service_s": self.dropoff_service_s,
            "target_click_to_door_s": self.target_click_to_door_s,
            "couriers": [{"id": c.id, "lat": c.lat, "lon": c.lon, "on_s": c.on_s,
                          "off_s": c.off_s} for c in self.couriers],
            "restaurants": [{"id": r.id, "lat": r.lat, "lon": r.lon} for r in self.restaurants],
            "orders": [{"id": o.id, "placed_s": o.placed_s, "restaurant_id": o.restaurant_id,
                        "ready_s": o.ready_s,
                        "dropoff": {"lat": o.dropoff_lat, "lon": o.dropoff_lon}}
                       for o in self.orders],
        }  # fmt: skip


# ---------------------------------------------------------------- loading


def _where(kind: str, i: int, rec: Mapping[str, Any]) -> str:
    rid = rec.get("id")
    return f"{kind}[{i}]" + (f" (id {rid!r})" if isinstance(rid, str) and rid else "")


def _number(rec: Mapping[str, Any], key: str, where: str, *, lo: float, hi: float) -> float:
    if key not in rec:
        raise TraceError(f"{where}.{key}", "is required")
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise TraceError(f"{where}.{key}", f"must be a finite number, not {v!r}")
    if not lo <= v <= hi:
        raise TraceError(f"{where}.{key}", f"must be within [{lo:g}, {hi:g}], not {v!r}")
    return float(v)


def _text(rec: Mapping[str, Any], key: str, where: str) -> str:
    v = rec.get(key)
    if v is None:
        raise TraceError(f"{where}.{key}", "is required")
    if not isinstance(v, str) or not v:
        raise TraceError(f"{where}.{key}", f"must be a non-empty string, not {v!r}")
    return v


def _point(rec: Mapping[str, Any], where: str) -> tuple[float, float]:
    return (
        _number(rec, "lat", where, lo=-90.0, hi=90.0),
        _number(rec, "lon", where, lo=-180.0, hi=180.0),
    )


def _records(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    v = doc.get(key)
    if v is None:
        raise TraceError(key, "is required")
    if not isinstance(v, list):
        raise TraceError(key, "must be a list")
    for i, rec in enumerate(v):
        if not isinstance(rec, dict):
            raise TraceError(f"{key}[{i}]", "must be an object")
    return v


def parse_trace(doc: Any) -> Trace:
    """A validated :class:`Trace` from the format's JSON object; raises :class:`TraceError`."""
    if not isinstance(doc, Mapping):
        raise TraceError("(root)", "a trace is a JSON object")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise TraceError("format", f"must be {FORMAT!r}, not {fmt!r}")
    origin_rec = doc.get("origin", {"lat": 0.0, "lon": 0.0})
    if not isinstance(origin_rec, dict):
        raise TraceError("origin", "must be an object with lat and lon")
    origin = _point(origin_rec, "origin")
    params = {}
    for key, default in DEFAULTS.items():
        params[key] = _number(doc, key, "(root)", lo=0.0, hi=1e9) if key in doc else default
    if params["speed_mps"] <= 0:
        raise TraceError("speed_mps", "must be positive")
    for key in ("name", "source"):
        if key in doc and not isinstance(doc[key], str):
            raise TraceError(key, "must be a string")

    couriers: list[Courier] = []
    seen: set[str] = set()
    for i, rec in enumerate(_records(doc, "couriers")):
        where = _where("couriers", i, rec)
        cid = _text(rec, "id", where)
        if cid in seen:
            raise TraceError(f"{where}.id", "is not unique")
        seen.add(cid)
        lat, lon = _point(rec, where)
        on_s = _number(rec, "on_s", where, lo=0.0, hi=1e9)
        off_s = _number(rec, "off_s", where, lo=0.0, hi=1e9)
        if off_s < on_s:
            raise TraceError(f"{where}.off_s", f"is before on_s ({off_s:g} < {on_s:g})")
        couriers.append(Courier(cid, lat, lon, on_s, off_s))

    restaurants: list[TraceRestaurant] = []
    rids: set[str] = set()
    for i, rec in enumerate(_records(doc, "restaurants")):
        where = _where("restaurants", i, rec)
        rid = _text(rec, "id", where)
        if rid in rids:
            raise TraceError(f"{where}.id", "is not unique")
        rids.add(rid)
        restaurants.append(TraceRestaurant(rid, *_point(rec, where)))

    orders: list[TraceOrder] = []
    oids: set[str] = set()
    for i, rec in enumerate(_records(doc, "orders")):
        where = _where("orders", i, rec)
        oid = _text(rec, "id", where)
        if oid in oids:
            raise TraceError(f"{where}.id", "is not unique")
        oids.add(oid)
        placed = _number(rec, "placed_s", where, lo=0.0, hi=1e9)
        rid = _text(rec, "restaurant_id", where)
        if rid not in rids:
            raise TraceError(f"{where}.restaurant_id", f"names no restaurant of the trace: {rid!r}")
        ready = _number(rec, "ready_s", where, lo=0.0, hi=1e9)
        if ready < placed:
            raise TraceError(f"{where}.ready_s", f"is before placed_s ({ready:g} < {placed:g})")
        drop = rec.get("dropoff")
        if not isinstance(drop, dict):
            raise TraceError(f"{where}.dropoff", "is required: an object with lat and lon")
        dlat, dlon = _point(drop, f"{where}.dropoff")
        orders.append(TraceOrder(oid, placed, rid, ready, dlat, dlon))

    return Trace(
        name=str(doc.get("name", "")),
        source=str(doc.get("source", "")),
        origin=origin,
        speed_mps=params["speed_mps"],
        pickup_service_s=params["pickup_service_s"],
        dropoff_service_s=params["dropoff_service_s"],
        target_click_to_door_s=params["target_click_to_door_s"],
        couriers=tuple(couriers),
        restaurants=tuple(restaurants),
        orders=tuple(orders),
    )


def load_trace(source: str | os.PathLike[str] | Mapping[str, Any]) -> Trace:
    """Reads and validates a trace file (or an already parsed document); a file that
    cannot be read or is not JSON is a :class:`TraceError` too."""
    if isinstance(source, Mapping):
        return parse_trace(source)
    try:
        doc = json.loads(Path(source).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceError("(file)", f"not JSON: {exc}") from None
    except OSError as exc:
        raise TraceError("(file)", f"cannot read trace {source}: {exc}") from None
    return parse_trace(doc)


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """Writes ``trace`` atomically (a temporary file renamed over ``path``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(trace.as_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target
