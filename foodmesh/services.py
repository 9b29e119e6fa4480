"""Which services this checkout can run, and their specs (the application floor)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servers.runtime.serve import ServiceSpec

from foodmesh.core.services import KNOWN, ServiceInfo

__all__ = ["KNOWN", "ServiceInfo", "available", "load_spec"]


def _present(info: ServiceInfo) -> bool:
    # A package still being written (domain modules, no servicer yet) is not a service.
    return (
        importlib.util.find_spec(info.module) is not None
        and importlib.util.find_spec(f"{info.module}.service") is not None
    )


def available() -> list[ServiceInfo]:
    """The known services whose package (with its ``service.py``) exists in this checkout."""
    return [s for s in KNOWN if _present(s)]


def load_spec(name: str) -> ServiceSpec:
    """The ``SPEC`` of ``servers.<name>``; raises KeyError for an unknown or absent service."""
    info = next((s for s in KNOWN if s.name == name), None)
    if info is None or not _present(info):
        names = ", ".join(s.name for s in available()) or "none yet"
        raise KeyError(f"no service named {name!r} (available: {names})")
    spec: ServiceSpec = importlib.import_module(info.module).SPEC
    return spec
