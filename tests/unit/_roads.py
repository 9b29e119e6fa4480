"""Small hand-made road graphs for the roads and ETA unit tests."""

from __future__ import annotations

from foodmesh.roads import RoadGraph

#: Nodes of :func:`junction_graph` (lat, lon): P is node 0.
P = (37.7700, -122.4200)
B = (37.7700, -122.4180)  # east of P
C = (37.7720, -122.4200)  # north of P
D = (37.7720, -122.4180)  # north-east
A = (37.7700, -122.4220)  # west of P
#: Half-way along C-D, the street drawn twice eastbound (two parallel edges).
CD_MID = (37.7720, -122.4190)


def junction_graph() -> RoadGraph:
    """Five junctions where a batch of legs can go wrong in ways ``route`` does not.

    P (node 0) has a one-way street out to B (its lowest edge, which is where a point
    exactly on P snaps) and a two-way street north to C, so a leg leaving P for C must
    not be made to drive to B first. C to D is drawn twice eastbound, a slow edge and a
    fast one (parallel edges, as OSM has them), and once westbound.
    """
    lat, lon = zip(P, B, C, D, A, strict=True)
    edges = [  # u, v, speed m/s
        (0, 1, 10.0),  # P -> B, one-way
        (4, 0, 10.0),  # A -> P, one-way
        (0, 2, 10.0), (2, 0, 10.0),  # P <-> C
        (2, 3, 4.0), (2, 3, 16.0), (3, 2, 10.0),  # C -> D twice, D -> C
        (3, 1, 10.0), (1, 3, 10.0),  # D <-> B
        (4, 2, 10.0), (2, 4, 10.0),  # A <-> C
    ]  # fmt: skip
    u, v, speed = zip(*edges, strict=True)
    oneway = [k < 2 for k in range(len(edges))]
    return RoadGraph.from_edges(
        lat=lat, lon=lon, u=u, v=v, road_class=[3] * len(edges), speed_mps=speed,
        name_idx=[k % 2 for k in range(len(edges))], oneway=oneway,
        names=["Main St", "Side St"], meta={"timezone": "America/Los_Angeles"},
    )  # fmt: skip
