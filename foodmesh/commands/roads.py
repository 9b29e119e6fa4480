"""``foodmesh roads ...``: import an OSM extract, describe a graph, route between two points."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``roads`` and its subcommands to the ``foodmesh`` parser's subparsers."""
    roads = sub.add_parser("roads", help="road graph: import OSM, info, route")
    rs = roads.add_subparsers(dest="roads_command", required=True)
    imp = rs.add_parser("import", help="import an .osm / .osm.pbf extract into a graph file")
    imp.add_argument("file", help="the OSM extract (.osm, .osm.gz, .osm.bz2 or .osm.pbf)")
    imp.add_argument("--out", help="graph file to write (default: <roads cache>/<name>.npz)")
    imp.add_argument("--timezone", default="UTC", help="the area's IANA time zone (traffic)")
    info = rs.add_parser("info", help="describe a graph (default: the embedded city)")
    info.add_argument("graph", nargs="?", help="a graph file (default: $FOODMESH_ROADS_GRAPH)")
    rt = rs.add_parser("route", help="fastest route between two points, with its steps")
    rt.add_argument("origin", help="LAT,LON")
    rt.add_argument("destination", help="LAT,LON")
    rt.add_argument("--at", help="departure, ISO 8601 (default: now)")
    rt.add_argument("--graph", help="a graph file (default: $FOODMESH_ROADS_GRAPH)")


def _point(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(p) for p in text.split(","))
    except ValueError:
        raise SystemExit(f"foodmesh roads: {text!r} is not LAT,LON") from None
    return lat, lon


def run(args: argparse.Namespace) -> int:
    """Runs a parsed ``foodmesh roads`` command; returns the exit status."""
    from foodmesh.roads import RoadGraph, RoadsError, TrafficModel, default_cache_dir

    try:
        if args.roads_command == "import":
            from foodmesh.roads.osm import import_osm

            t0 = time.perf_counter()
            graph = import_osm(args.file, timezone=args.timezone)
            name = Path(args.file).name.split(".")[0]
            out = Path(args.out) if args.out else default_cache_dir() / f"{name}.npz"
            graph.save(out)
            t1 = time.perf_counter()
            RoadGraph.load(out)
            print(
                f"{graph.node_count:,} nodes, {graph.edge_count:,} edges, "
                f"{len(graph.names):,} street names in {t1 - t0:.1f}s -> {out} "
                f"({out.stat().st_size / 1e6:.1f} MB, loads in "
                f"{(time.perf_counter() - t1) * 1e3:.0f} ms)"
            )
            print(f"use it: FOODMESH_ROADS_GRAPH={out}")
            return 0
        graph = RoadGraph.load(args.graph) if args.graph else RoadGraph.configured()
        if args.roads_command == "info":
            lat0, lat1, lon0, lon1 = graph.bounds()
            print(repr(graph))
            print(f"  area: lat {lat0:.4f}..{lat1:.4f}, lon {lon0:.4f}..{lon1:.4f}")
            print(f"  time zone: {graph.timezone}; source: {graph.meta.get('source', '?')}")
            print(f"  one-way edges: {int(graph.oneway.sum()):,}; streets: {len(graph.names):,}")
            return 0
        when = dt.datetime.fromisoformat(args.at) if args.at else dt.datetime.now(dt.UTC)
        r = graph.route(
            _point(args.origin),
            _point(args.destination),
            depart_at=when,
            traffic=TrafficModel(timezone=graph.timezone),
        )
        print(
            f"{r.distance_m / 1000:.2f} km, {r.duration_s / 60:.1f} min "
            f"(free flow {r.free_flow_s / 60:.1f} min, traffic x{r.traffic_multiplier:.2f})"
        )
        for s in r.steps:
            print(f"  {s.maneuver:<12} {s.street:<28} {s.distance_m:>7.0f} m")
        print(f"  polyline: {r.polyline}")
        return 0
    except (RoadsError, ValueError) as e:
        raise SystemExit(f"foodmesh roads: {e}") from None
