"""How fast each kind of vehicle covers a leg that a car covers in a given time.

The routing-only vehicle profile, shared by the ETA service's features and the simulator's
world (one model of the city for both): scooters filter through half the congestion;
bicycles and walkers ignore it but go slower. Unspecified is a car.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from foodmesh.v1 import common_pb2

__all__ = ["vehicle_seconds", "vehicle_time_s"]

F64 = npt.NDArray[np.float64]
_VT = common_pb2.VehicleType


def vehicle_time_s(
    vehicle: npt.ArrayLike, free_flow_s: npt.ArrayLike, graph_s: npt.ArrayLike
) -> F64:
    """How long a vehicle takes where a car takes ``graph_s`` (free flow ``free_flow_s``).

    The routing-only vehicle profile (the baseline's, and the simulator's truth
    before a driver's own pace): scooters filter through half the congestion;
    bicycles and walkers ignore it but go slower. Unspecified is a car.
    """
    v = np.asarray(vehicle)
    ff = np.asarray(free_flow_s, dtype=np.float64)
    g = np.asarray(graph_s, dtype=np.float64)
    return np.asarray(
        np.select(
            [
                v == _VT.VEHICLE_TYPE_SCOOTER,
                v == _VT.VEHICLE_TYPE_BICYCLE,
                v == _VT.VEHICLE_TYPE_WALKING,
            ],
            [0.95 * (ff + 0.5 * (g - ff)), 1.7 * ff, 4.0 * ff],
            default=g,
        ),  # fmt: skip
        dtype=np.float64,
    )


def vehicle_seconds(vehicle: int, free_flow_s: float, graph_s: float) -> float:
    """:func:`vehicle_time_s` for one leg, without numpy's per-call cost."""
    if vehicle == _VT.VEHICLE_TYPE_SCOOTER:
        return 0.95 * (free_flow_s + 0.5 * (graph_s - free_flow_s))
    if vehicle == _VT.VEHICLE_TYPE_BICYCLE:
        return 1.7 * free_flow_s
    if vehicle == _VT.VEHICLE_TYPE_WALKING:
        return 4.0 * free_flow_s
    return graph_s
