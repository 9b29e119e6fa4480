"""Which services this checkout runs, and their specs (the application floor)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from foodmesh.core.services import KNOWN, ServiceInfo

if TYPE_CHECKING:
    from servers.runtime.serve import ServiceSpec

__all__ = ["KNOWN", "ServiceInfo", "available", "load_spec"]


def available() -> list[ServiceInfo]:
    """The services of the mesh, in start order (services others call first)."""
    return list(KNOWN)


def load_spec(name: str) -> ServiceSpec:
    """The ``SPEC`` of ``servers.<name>``; raises KeyError for an unknown service."""
    info = next((s for s in KNOWN if s.name == name), None)
    if info is None:
        raise KeyError(f"no service named {name!r} (known: {', '.join(s.name for s in KNOWN)})")
    spec: ServiceSpec = importlib.import_module(info.module).SPEC
    return spec
