"""The shape every id in the mesh has, checked the same way by every service."""

from __future__ import annotations

import re

from foodmesh.core.errors import Violations

__all__ = ["ID_PATTERN", "check_id"]

#: 1–64 characters: letters, digits, ``_ . : -``, starting with a letter or digit.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def check_id(v: Violations, value: str, path: str) -> bool:
    """Records a violation at ``path`` unless ``value`` is a well-formed id; True when it is."""
    if not value:
        v.add(path, "is required")
        return False
    return v.check(
        bool(ID_PATTERN.match(value)),
        path,
        "must be 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
    )
