"""Graphs on disk: the ``.npz`` format, and the default city (generated once, cached).

A graph file is one uncompressed ``.npz`` of the CSR arrays, the street names and
a JSON ``meta``, tagged with :data:`FORMAT_VERSION`; loading one takes milliseconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from foodmesh.roads.errors import GraphFormatError

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["FORMAT_VERSION", "configured", "default", "default_cache_dir", "load", "save"]

log = logging.getLogger("foodmesh.roads")

FORMAT_VERSION = 1


_DEFAULT: dict[Path, RoadGraph] = {}
_DEFAULT_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """Where generated graphs are cached: ``$FOODMESH_ROADS_DIR``, else the user's cache."""
    env = os.environ.get("FOODMESH_ROADS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "foodmesh" / "roads"


def save(g: RoadGraph, path: str | os.PathLike[str]) -> Path:
    """Writes the graph as one uncompressed ``.npz`` (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    import json

    with open(tmp, "wb") as f:
        np.savez(
            f,
            format_version=np.array(FORMAT_VERSION),
            lat=g.lat,
            lon=g.lon,
            offsets=g.offsets,
            targets=g.targets,
            length_m=g.length_m.astype(np.float32),
            road_class=g.road_class,
            speed_mps=g.speed_mps.astype(np.float32),
            name_idx=g.name_idx,
            oneway=g.oneway,
            names=np.array(g.names if g.names else [""], dtype=np.str_),
            meta=np.array(json.dumps(g.meta, sort_keys=True)),
        )
    os.replace(tmp, path)
    return path


def load(cls: type[RoadGraph], path: str | os.PathLike[str]) -> RoadGraph:
    """Reads a graph written by :meth:`save`.

    Raises:
        GraphFormatError: the file is missing, corrupt or of another format version.
    """
    import json
    import zipfile

    try:
        # Our own handle: np.load leaks the file it opened when the zip is corrupt.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            version = int(z["format_version"])
            if version != FORMAT_VERSION:
                raise GraphFormatError(
                    f"{path}: graph format {version}, this code reads {FORMAT_VERSION}"
                )
            arrays = {k: z[k] for k in z.files}
    except GraphFormatError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise GraphFormatError(f"{path}: not a readable road graph ({e})") from e
    names = [str(s) for s in arrays["names"].tolist()]
    return cls(
        lat=arrays["lat"],
        lon=arrays["lon"],
        offsets=arrays["offsets"],
        targets=arrays["targets"],
        length_m=arrays["length_m"],
        road_class=arrays["road_class"],
        speed_mps=arrays["speed_mps"],
        name_idx=arrays["name_idx"],
        oneway=arrays["oneway"],
        names=names,
        meta=json.loads(str(arrays["meta"])),
    )


def configured(cls: type[RoadGraph]) -> RoadGraph:
    """The graph file named by ``$FOODMESH_ROADS_GRAPH`` (an import), else :meth:`default`."""
    path = os.environ.get("FOODMESH_ROADS_GRAPH")
    if not path:
        return default(cls)
    p = Path(path)
    with _DEFAULT_LOCK:
        cached = _DEFAULT.get(p)
    if cached is None:
        cached = load(cls, p)
        with _DEFAULT_LOCK:
            _DEFAULT[p] = cached
    return cached


def default(cls: type[RoadGraph], *, cache_dir: str | os.PathLike[str] | None = None) -> RoadGraph:
    """The embedded default city around San Francisco's seed coordinates.

    Generated deterministically on first use (a few seconds, with progress lines),
    cached as a file under :func:`default_cache_dir`, and kept in memory per process.
    """
    from foodmesh.roads.city import CITY_VERSION, generate_city

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = directory / f"default-city-v{CITY_VERSION}-f{FORMAT_VERSION}.npz"
    with _DEFAULT_LOCK:
        cached = _DEFAULT.get(path)
        if cached is not None:
            return cached
        graph: RoadGraph | None = None
        if path.exists():
            try:
                t0 = time.perf_counter()
                graph = load(cls, path)
                log.debug("loaded %s in %.3fs", path, time.perf_counter() - t0)
            except GraphFormatError as e:
                log.warning("regenerating the default city: %s", e)
        if graph is None:
            graph = generate_city()
            try:
                save(graph, path)
                log.info("cached the default city at %s", path)
            except OSError as e:  # a read-only home still gets a working graph
                log.warning("could not cache the default city at %s: %s", path, e)
        _DEFAULT[path] = graph
        return graph
