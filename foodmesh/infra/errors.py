"""Errors of the embedded infrastructure: one line that names the server and what to do."""

from __future__ import annotations

__all__ = ["InfraError"]


class InfraError(Exception):
    """A server could not be found, started or stopped; the message says which and why."""
