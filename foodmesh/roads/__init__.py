"""Road graph and routing: the engine under the ETA service.

A :class:`RoadGraph` holds a directed road network in CSR arrays (loaded from a
compact ``.npz`` in milliseconds); :meth:`RoadGraph.default` is the generated
city around the design's San Francisco coordinates. ``snap`` moves a point onto the
nearest road (KD-tree), ``route`` finds the fastest path (A*) with time-of-day
traffic (:class:`TrafficModel`) and live :class:`Overrides`, ``travel_times`` gives
many origins' times to one destination in one Dijkstra (scipy), ``legs`` the time,
length and free-flow time of many legs at once (as ``route`` would answer each),
and ``reach`` everything reachable from one point. Every search of the project
is one of these.
"""

from foodmesh.roads._legs import Legs, Reach
from foodmesh.roads._trees import edge_values
from foodmesh.roads.errors import GraphFormatError, OutsideGraph, RoadsError, Unreachable
from foodmesh.roads.geo import bearing_deg, haversine_m, haversine_np
from foodmesh.roads.graph import RoadGraph, default_cache_dir
from foodmesh.roads.osm import import_osm
from foodmesh.roads.polyline import decode as decode_polyline
from foodmesh.roads.polyline import encode as encode_polyline
from foodmesh.roads.traffic import Overrides, TrafficModel, seed_base_multiplier
from foodmesh.roads.types import LatLon, RoadClass, Route, Snap, Step

__all__ = [
    "GraphFormatError",
    "LatLon",
    "Legs",
    "OutsideGraph",
    "Overrides",
    "RoadClass",
    "Reach",
    "RoadGraph",
    "RoadsError",
    "Route",
    "Snap",
    "Step",
    "TrafficModel",
    "Unreachable",
    "bearing_deg",
    "decode_polyline",
    "edge_values",
    "default_cache_dir",
    "encode_polyline",
    "haversine_m",
    "haversine_np",
    "import_osm",
    "seed_base_multiplier",
]
