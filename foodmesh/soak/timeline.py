"""The record of a soak's API calls and faults, and what it says: error budget and recovery.

Pure: samples in, figures out. A call is ``(t, kind, status, seconds)`` with ``t`` seconds
from the start of the load; ``status`` is the HTTP status (0 when no answer came, 200 for
an acknowledged location fix). A failed call is one without an answer, or a 5xx or 429:
the 4xx a bad request earns is the platform working.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Call",
    "FaultWindow",
    "Timeline",
    "bucket_series",
    "call_kind",
    "failed",
    "p99",
    "window_figures",
]

#: The kinds the targets name; every other call is "other".
KEY_KINDS = ("place_order", "search", "location_ack")
_ORDER_PATH = re.compile(r"^/api/v1/orders/[^/]+$")


def call_kind(method: str, path: str) -> str:
    """``place_order``, ``search``, ``menu``, ``get_order``, ``order_step``... from a request."""
    path = path.split("?", 1)[0]
    if method == "POST" and path == "/api/v1/orders":
        return "place_order"
    if path == "/api/v1/restaurants/search":
        return "search"
    if path.endswith("/menu"):
        return "menu"
    if path.endswith("/watch"):
        return "watch"
    if method == "GET" and _ORDER_PATH.match(path):
        return "get_order"
    if method == "GET" and path == "/api/v1/orders":
        return "list_orders"
    if path.endswith("/status"):
        return "order_step"
    if path.endswith(":cancel"):
        return "cancel"
    if path.endswith("/rating"):
        return "rating"
    return "other"


@dataclass(frozen=True, slots=True)
class Call:
    t: float
    kind: str
    status: int
    seconds: float


def failed(status: int) -> bool:
    return status == 0 or status >= 500 or status == 429


def p99(values: Sequence[float]) -> float | None:
    """The 99th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.99 * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A fault as it happened: from its start until what it broke answered again."""

    label: str
    kind: str
    start_s: float
    #: When the fault was over: the process serving again, the latency removed.
    restored_s: float
    #: The target's allowance for recovery after ``restored_s`` (10 s services, 30 s stores).
    allowance_s: float

    @property
    def end_s(self) -> float:
        """The window counted as "during the fault": restoration plus the allowance."""
        return self.restored_s + self.allowance_s


@dataclass(slots=True)
class Timeline:
    """Every call of the run, appended as it is answered."""

    calls: list[Call] = field(default_factory=list)

    def add(self, t: float, kind: str, status: int, seconds: float) -> None:
        self.calls.append(Call(t, kind, status, seconds))


def _figures(calls: Iterable[Call]) -> dict[str, Any]:
    calls = list(calls)
    n = len(calls)
    bad = sum(1 for c in calls if failed(c.status))
    out: dict[str, Any] = {"calls": n, "failed": bad,
                           "failed_share": round(bad / n, 6) if n else 0.0}  # fmt: skip
    for kind in KEY_KINDS:
        lat = [c.seconds for c in calls if c.kind == kind and not failed(c.status)]
        v = p99(lat)
        out[f"p99_{kind}_ms"] = round(v * 1000, 1) if v is not None else None
        out[f"n_{kind}"] = len(lat)
    return out


def _overlaps(c: Call, w: FaultWindow) -> bool:
    """Whether the call was in flight during the window (made before it, answered in it)."""
    return c.t < w.end_s and c.t + c.seconds >= w.start_s


def _inside(c: Call, windows: Sequence[FaultWindow]) -> bool:
    return any(_overlaps(c, w) for w in windows)


def bucket_series(calls: Sequence[Call], *, width_s: float = 5.0) -> list[dict[str, Any]]:
    """Per ``width_s`` bucket: calls per second, failed share and p99 of each key kind."""
    if not calls:
        return []
    last = max(c.t for c in calls)
    buckets: list[list[Call]] = [[] for _ in range(int(last // width_s) + 1)]
    for c in calls:
        buckets[int(c.t // width_s)].append(c)
    out = []
    for i, b in enumerate(buckets):
        f = _figures(b)
        out.append({"t": i * width_s, "rate": round(len(b) / width_s, 2),
                    "failed_share": f["failed_share"],
                    **{k: f[f"p99_{k}_ms"] for k in KEY_KINDS}})  # fmt: skip
    return out


def _normal_p99(calls: Sequence[Call], windows: Sequence[FaultWindow], warmup_s: float) -> float:
    lat = [c.seconds for c in calls if c.kind in ("place_order", "search") and c.t >= warmup_s
           and not failed(c.status) and not _inside(c, windows)]  # fmt: skip
    return p99(lat) or 0.0


def _recovery(calls: Sequence[Call], w: FaultWindow, normal: float, *, hold_s: float = 10.0,
              step_s: float = 1.0, until_s: float = float("inf"),
              horizon_s: float = 180.0) -> float | None:  # fmt: skip
    """Seconds after ``w.restored_s`` until the API is normal again and stays so ``hold_s``.

    Normal: no failed call, and the p99 of PlaceOrder and search within twice the p99
    outside faults (plus 50 ms, so a quiet run's tiny p99 is not a knife's edge). Only
    calls before ``until_s`` (the next fault) count; None when it came first.
    """
    limit = 2 * normal + 0.05
    t = w.restored_s
    end = min(w.restored_s + horizon_s, until_s)
    while t + min(hold_s, 3.0) <= end:
        span = [c for c in calls if t <= c.t < min(t + hold_s, end)]
        if not span:
            t += step_s
            continue
        lat = [c.seconds for c in span if c.kind in ("place_order", "search")
               and not failed(c.status)]  # fmt: skip
        worst = p99(lat) or 0.0
        if not any(failed(c.status) for c in span) and worst <= limit:
            return round(t - w.restored_s, 1)
        t += step_s
    return None


def window_figures(
    calls: Sequence[Call], windows: Sequence[FaultWindow], *, warmup_s: float
) -> dict[str, Any]:
    """The error budget: each window's figures and recovery, and the same outside faults."""
    measured = [c for c in calls if c.t >= warmup_s]
    outside = [c for c in measured if not _inside(c, windows)]
    normal = _normal_p99(calls, windows, warmup_s)
    per = []
    starts = sorted(w.start_s for w in windows)
    for w in windows:
        during = [c for c in calls if _overlaps(c, w)]
        nxt = next((s for s in starts if s > w.start_s), float("inf"))
        rec = _recovery(calls, w, normal, until_s=nxt)
        # A recovery the next fault cut short cannot be judged: it is not counted against.
        overlapped = rec is None and nxt < w.restored_s + w.allowance_s + 10.0
        per.append({
            "label": w.label, "kind": w.kind, "start_s": round(w.start_s, 1),
            "restored_s": round(w.restored_s, 1), "allowance_s": w.allowance_s,
            "recovery_s": rec,
            "recovered_in_time": overlapped or (rec is not None and rec <= w.allowance_s),
            "overlapped": overlapped,
            **_figures(during),
        })  # fmt: skip
    return {"normal_p99_ms": round(normal * 1000, 1), "outside": _figures(outside),
            "windows": per}  # fmt: skip
