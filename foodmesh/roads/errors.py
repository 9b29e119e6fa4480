"""The errors the road graph raises: one small tree, free of gRPC (the ETA service maps them)."""

from __future__ import annotations

__all__ = ["GraphFormatError", "OutsideGraph", "RoadsError", "Unreachable"]


class RoadsError(Exception):
    """Base of every error of ``foodmesh.roads``."""


class Unreachable(RoadsError):
    """No path joins the two points (a closed bridge, a one-way dead end, ...)."""


class OutsideGraph(RoadsError, ValueError):
    """A point is not a valid position, or lies farther from any road than allowed.

    ``which`` names the argument (``origin``/``destination``/``origins[3]``) so a
    service can turn it into a field violation; ``distance_m`` is how far the
    nearest road is (``inf`` for a position that is not valid at all).
    """

    def __init__(self, which: str, distance_m: float, max_m: float) -> None:
        if distance_m == float("inf"):
            msg = f"{which}: not a valid latitude/longitude"
        else:
            msg = f"{which}: {distance_m:.0f} m from the nearest road (at most {max_m:.0f} m)"
        super().__init__(msg)
        self.which = which
        self.distance_m = distance_m
        self.max_m = max_m


class GraphFormatError(RoadsError, ValueError):
    """A graph file (or an OSM extract) is missing, corrupt or of an unknown version."""
