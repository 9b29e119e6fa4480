"""OpenStreetMap import: ``.osm`` XML (stdlib iterparse) or ``.osm.pbf`` (pyosmium).

Every way tagged ``highway=*`` that cars may use becomes edges between its
consecutive nodes: the road class from ``highway``, the free-flow speed from
``maxspeed`` (else the class's default), the direction from ``oneway`` (and
``junction=roundabout`` / motorways), the street name from ``name`` (else
``ref``). Only the largest strongly connected component is kept, so every
point of the result can reach every other.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from foodmesh.core.progress import Progress
from foodmesh.roads.errors import GraphFormatError
from foodmesh.roads.graph import RoadGraph
from foodmesh.roads.types import DEFAULT_SPEED_MPS, RoadClass

__all__ = ["HIGHWAY_CLASS", "OsmWay", "import_osm", "parse_maxspeed", "read_ways"]

log = logging.getLogger("foodmesh.roads")

#: ``highway=*`` values cars drive on, and the class each becomes.
HIGHWAY_CLASS: dict[str, RoadClass] = {
    "motorway": RoadClass.MOTORWAY,
    "motorway_link": RoadClass.MOTORWAY,
    "trunk": RoadClass.MOTORWAY,
    "trunk_link": RoadClass.PRIMARY,
    "primary": RoadClass.PRIMARY,
    "primary_link": RoadClass.PRIMARY,
    "secondary": RoadClass.SECONDARY,
    "secondary_link": RoadClass.SECONDARY,
    "tertiary": RoadClass.SECONDARY,
    "tertiary_link": RoadClass.SECONDARY,
    "unclassified": RoadClass.RESIDENTIAL,
    "residential": RoadClass.RESIDENTIAL,
    "living_street": RoadClass.SERVICE,
    "road": RoadClass.RESIDENTIAL,
    "service": RoadClass.SERVICE,
}
_NO_CARS = {"no", "private", "agricultural", "forestry", "delivery_no"}
_MPH = 0.44704
_KMH = 1 / 3.6


@dataclass(frozen=True, slots=True)
class OsmWay:
    """One routable way: its tags and its nodes as ``(id, lat, lon)``."""

    tags: dict[str, str]
    nodes: list[tuple[int, float, float]]


def parse_maxspeed(value: str | None) -> float | None:
    """``maxspeed`` in m/s: ``"50"`` (km/h), ``"30 mph"``, ``"50 km/h"``; None if unusable."""
    if not value:
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$", value.split(";")[0])
    if not m:
        return None
    n = float(m.group(1))
    if n <= 0:
        return None
    return n * (_MPH if m.group(2) == "mph" else _KMH)


def _routable(tags: dict[str, str]) -> bool:
    hw = tags.get("highway")
    if hw not in HIGHWAY_CLASS or tags.get("area") == "yes":
        return False
    if tags.get("motor_vehicle", tags.get("motorcar")) in _NO_CARS:
        return False
    return tags.get("access") not in _NO_CARS


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.suffix == ".bz2":
        return cast(IO[bytes], bz2.open(path, "rb"))
    return open(path, "rb")


def _read_xml(path: Path, progress: Progress | None) -> Iterator[OsmWay]:
    """Ways of an ``.osm`` XML file (nodes come first in OSM files, as the format says)."""
    coords: dict[int, tuple[float, float]] = {}
    try:
        with _open(path) as f:
            for _, el in ET.iterparse(f, events=("end",)):
                tag = el.tag
                if tag == "node":
                    try:
                        coords[int(el.attrib["id"])] = (
                            float(el.attrib["lat"]),
                            float(el.attrib["lon"]),
                        )
                    except (KeyError, ValueError):
                        pass  # a node without a position cannot be routed over
                    el.clear()
                    if progress:
                        progress.add()
                elif tag == "way":
                    tags = {t.attrib["k"]: t.attrib["v"] for t in el.iter("tag")}
                    if _routable(tags):
                        nodes = []
                        for nd in el.iter("nd"):
                            ref = int(nd.attrib["ref"])
                            c = coords.get(ref)
                            if c is not None:
                                nodes.append((ref, c[0], c[1]))
                        yield OsmWay(tags, nodes)
                    el.clear()
                    if progress:
                        progress.add()
                elif tag == "relation":
                    el.clear()
    except ET.ParseError as e:
        raise GraphFormatError(f"{path}: not valid OSM XML ({e})") from e


def _read_pbf(path: Path, progress: Progress | None) -> Iterator[OsmWay]:
    try:
        import osmium
    except ImportError as e:  # pragma: no cover - osmium is a dependency
        raise GraphFormatError(f"{path}: reading .pbf needs pyosmium (pip install osmium)") from e
    try:
        fp = (
            osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
            .with_locations()
            .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
        )
        for obj in fp:
            way: Any = obj  # the filter lets only ways through
            if progress:
                progress.add()
            tags = {t.k: t.v for t in way.tags}
            if not _routable(tags):
                continue
            nodes = [
                (int(nd.ref), float(nd.location.lat), float(nd.location.lon))
                for nd in way.nodes
                if nd.location.valid()
            ]
            yield OsmWay(tags, nodes)
    except RuntimeError as e:
        raise GraphFormatError(f"{path}: not a readable OSM file ({e})") from e


def read_ways(path: str | Path, *, show_progress: bool = True) -> Iterator[OsmWay]:
    """The routable ways of an OSM file, ``.osm``/``.xml`` (optionally .gz/.bz2) or ``.pbf``."""
    p = Path(path)
    if not p.is_file():
        raise GraphFormatError(f"{p}: no such file")
    progress = Progress(f"reading {p.name} (elements)") if show_progress else None
    name = p.name.lower()
    if name.endswith(".pbf"):
        yield from _read_pbf(p, progress)
    elif re.search(r"\.(osm|xml)(\.gz|\.bz2)?$", name):
        yield from _read_xml(p, progress)
    else:
        raise GraphFormatError(f"{p}: not an .osm, .osm.xml or .osm.pbf file")
    if progress:
        progress.finish()


def _direction(tags: dict[str, str], cls: RoadClass) -> int:
    """+1 along the way only, -1 against it only, 0 both ways."""
    ow = tags.get("oneway", "").lower()
    if ow in ("yes", "true", "1"):
        return 1
    if ow in ("-1", "reverse"):
        return -1
    if ow in ("no", "false", "0"):
        return 0
    if tags.get("junction") in ("roundabout", "circular") or (
        cls == RoadClass.MOTORWAY and tags.get("highway", "").startswith("motorway")
    ):
        return 1
    return 0


def import_osm(
    path: str | Path,
    *,
    timezone: str = "UTC",
    name: str | None = None,
    show_progress: bool = True,
) -> RoadGraph:
    """Builds a road graph from an OSM extract (largest strongly connected part).

    Raises:
        GraphFormatError: the file is missing, unreadable, or has no drivable roads.
    """
    p = Path(path)
    node_index: dict[int, int] = {}
    lat: list[float] = []
    lon: list[float] = []
    us: list[int] = []
    vs: list[int] = []
    cls_l: list[int] = []
    spd_l: list[float] = []
    nm_l: list[int] = []
    ow_l: list[bool] = []
    names: list[str] = []
    name_ix: dict[str, int] = {}
    ways = 0

    def node(ref: int, la: float, lo: float) -> int:
        i = node_index.get(ref)
        if i is None:
            i = node_index[ref] = len(lat)
            lat.append(la)
            lon.append(lo)
        return i

    for way in read_ways(p, show_progress=show_progress):
        if len(way.nodes) < 2:
            continue
        ways += 1
        cls = HIGHWAY_CLASS[way.tags["highway"]]
        speed = parse_maxspeed(way.tags.get("maxspeed")) or DEFAULT_SPEED_MPS[cls]
        street = way.tags.get("name") or way.tags.get("ref") or f"unnamed {way.tags['highway']}"
        ni = name_ix.get(street)
        if ni is None:
            ni = name_ix[street] = len(names)
            names.append(street)
        way_dir = _direction(way.tags, cls)
        ids = [node(r, la, lo) for r, la, lo in way.nodes]
        for a, b in zip(ids, ids[1:], strict=False):
            pairs = [(a, b)] if way_dir > 0 else [(b, a)] if way_dir < 0 else [(a, b), (b, a)]
            for x, y in pairs:
                us.append(x)
                vs.append(y)
                cls_l.append(int(cls))
                spd_l.append(speed)
                nm_l.append(ni)
                ow_l.append(way_dir != 0)
    if not us:
        raise GraphFormatError(f"{p}: no drivable roads in this extract")
    lat_a, lon_a = np.array(lat), np.array(lon)
    meta: dict[str, Any] = {
        "name": name or p.name,
        "source": "osm",
        "timezone": timezone,
        "center_lat": float(np.mean(lat_a)),
        "center_lon": float(np.mean(lon_a)),
        "osm_ways": ways,
    }
    graph = RoadGraph.from_edges(
        lat=lat_a,
        lon=lon_a,
        u=us,
        v=vs,
        road_class=cls_l,
        speed_mps=spd_l,
        name_idx=nm_l,
        oneway=ow_l,
        names=names,
        meta=meta,
    )
    kept = graph.node_count / max(1, len(lat))
    log.info(
        "imported %s: %d ways, %d nodes -> %d nodes, %d edges (largest strongly connected part, "
        "%.0f%% of nodes)",
        p.name,
        ways,
        len(lat),
        graph.node_count,
        graph.edge_count,
        100 * kept,
    )
    if graph.node_count < 2 or not math.isfinite(kept):
        raise GraphFormatError(f"{p}: no connected drivable network in this extract")
    return graph
