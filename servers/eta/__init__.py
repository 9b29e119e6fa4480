"""The ETA service: routes over the road graph, delivery estimates, rerouting, overrides.

``SPEC`` is what ``foodmesh serve eta`` runs. Its parts: ``routing`` (the road graph
of :mod:`foodmesh.roads` with traffic, live overrides and a straight-line fallback),
``cache`` (the 5-minute route cache and the shared overrides in Redis), ``model``
(the XGBoost prep and travel models, hot-loaded from the model directory),
``estimate`` (prep + pickup + delivery and the confidence), ``reroute`` (the rule),
``training`` (``foodmesh train-eta``).

Settings (``FOODMESH_ETA_*``):

- ``MODEL_DIR``: where ``train-eta`` writes models and the service looks for the
  newest (default ``$FOODMESH_STATE_DIR/models``, else ``.foodmesh/models``). With
  none there the service answers with the routing-only baseline (``model_version``
  ``baseline``) until one appears; no training happens at start-up;
- ``MODEL_POLL_S``: how often the directory is looked at (2);
- ``GRAPH``: a road graph file (``.npz`` from ``foodmesh roads import``); default the
  generated city around the design's San Francisco point;
- ``ROUTE_CACHE_S``: how long a route stays cached (300);
- ``OVERRIDES_SYNC_S``: how often a replica picks up road overrides another one set (1);
- ``RETRAIN_EVERY_S``: when above 0 and PostgreSQL is configured, the service retrains
  on the Order database's deliveries on this schedule (and when enough new ones
  arrived), promoting a candidate only if it beats the serving model on the latest
  deliveries (``retrain``); 0 (default) leaves it to ``foodmesh retrain-eta``;
- ``MAX_SNAP_M``: farther than this from any road, a point gets the straight-line
  fallback (1000); ``MAX_OFFMAP_M``: farther than this, it is refused (50000).
"""

from __future__ import annotations

import asyncio
import os

# XGBoost's OpenMP threads spin while they wait by default; on a shared machine with
# more threads than free cores that spinning made training 50x slower (measured:
# 2 threads, 122 s spinning against 2.2 s passive). Set before xgboost is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from foodmesh.core.settings import env_float
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import eta_pb2_grpc
from servers.runtime.serve import Dependency, Resources, ServiceSpec, StartupError

__all__ = ["SPEC", "build", "default_model_dir"]


def default_model_dir() -> Path:
    """``$FOODMESH_ETA_MODEL_DIR``, else ``$FOODMESH_STATE_DIR/models`` or ``.foodmesh/models``."""
    explicit = os.environ.get("FOODMESH_ETA_MODEL_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("FOODMESH_STATE_DIR") or ".foodmesh"
    return Path(state).absolute() / "models"


async def build(server: grpc.aio.Server, resources: Resources) -> Callable[[], Awaitable[None]]:
    """Loads the graph and the newest model, wires the servicer; returns what stops it."""
    from foodmesh.roads import RoadGraph, RoadsError
    from servers.eta.cache import OverrideStore, RouteCache
    from servers.eta.model import ModelWatcher
    from servers.eta.routing import Router
    from servers.eta.service import EtaServicer

    extra = resources.settings.extra
    graph_path = extra.get("FOODMESH_ETA_GRAPH")
    try:
        if graph_path:
            graph = await asyncio.to_thread(RoadGraph.load, graph_path)
        else:
            graph = await asyncio.to_thread(RoadGraph.default)
    except (RoadsError, OSError) as exc:
        where = f"FOODMESH_ETA_GRAPH={graph_path}" if graph_path else "the default road graph"
        raise StartupError(f"eta: cannot load {where}: {exc}") from None
    router = Router(
        graph,
        max_snap_m=env_float(extra, "FOODMESH_ETA_MAX_SNAP_M", 1000.0, lo=1.0),
        max_offmap_m=env_float(extra, "FOODMESH_ETA_MAX_OFFMAP_M", 50_000.0, lo=1.0),
    )
    # The snapping index and the landmarks of every traffic bucket now, not on the
    # first request of each hour.
    await asyncio.to_thread(graph.warm, traffic=router.traffic)
    model_dir = Path(extra["FOODMESH_ETA_MODEL_DIR"]) if "FOODMESH_ETA_MODEL_DIR" in extra else (
        default_model_dir())  # fmt: skip
    models = ModelWatcher(model_dir, poll_s=env_float(extra, "FOODMESH_ETA_MODEL_POLL_S", 2.0,
                                                      lo=0.05))  # fmt: skip
    await models.poll()
    servicer = EtaServicer(
        router=router,
        models=models,
        cache=RouteCache(lambda: resources.redis, resources.keys,
                         ttl_s=env_float(extra, "FOODMESH_ETA_ROUTE_CACHE_S", 300.0, lo=0.001)),
        overrides=OverrideStore(lambda: resources.redis, resources.keys),
        sync_every_s=env_float(extra, "FOODMESH_ETA_OVERRIDES_SYNC_S", 1.0, lo=0.01),
    )  # fmt: skip
    eta_pb2_grpc.add_EtaServiceServicer_to_server(servicer, server)
    models.start()
    servicer.start()
    # Learning from the platform's deliveries in this process (Kubernetes; `foodmesh up`
    # runs `foodmesh retrain-eta` beside the service instead).
    retrain_every = env_float(extra, "FOODMESH_ETA_RETRAIN_EVERY_S", 0.0, lo=0.0)
    retrain_stop = asyncio.Event()
    retraining: asyncio.Task[None] | None = None
    if retrain_every > 0 and resources.settings.postgres_url:
        from servers.eta.retrain import RetrainConfig, Retrainer

        retrainer = Retrainer(resources.settings.postgres_url, model_dir, graph=graph,
                              config=RetrainConfig(every_s=retrain_every))  # fmt: skip
        retraining = asyncio.create_task(retrainer.run(retrain_stop), name="eta-retrain")

    async def stop() -> None:
        retrain_stop.set()
        if retraining is not None:
            await stop_tasks([retraining])
        await servicer.stop()
        await models.stop()

    return stop


SPEC = ServiceSpec(
    name="eta",
    grpc_services=("foodmesh.v1.EtaService",),
    register=build,
    needs=frozenset({Dependency.REDIS}),
)
