"""A kitchen's state as of an order's placement: its recent prep times and its open orders.

The live features Order sends with each estimate, computed the same way over a
history for training, so a model never learns from what was not known yet: for
each order, only the restaurant's orders whose food was ready *before* it was
placed count toward its recent prep time, and its load is the orders placed
before it and not ready yet. Order's query (``servers/order/eta_features.py``)
is the live twin of :func:`kitchen_as_of`. Pure: numpy in, numpy out.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

__all__ = ["RECENT_PREP_ORDERS", "kitchen_as_of"]

#: How many of a restaurant's latest ready orders its recent prep time averages.
RECENT_PREP_ORDERS = 10

F64 = npt.NDArray[np.float64]


def kitchen_as_of(
    restaurant_id: npt.ArrayLike,
    placed_ts: npt.ArrayLike,
    prep_s: npt.ArrayLike,
    *,
    recent: int = RECENT_PREP_ORDERS,
) -> tuple[F64, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per order: (recent prep minutes, NaN when none yet; how many it averages; open orders).

    Rows may come in any order; a missing ``prep_s`` (NaN) never becomes ready.
    """
    rid = np.asarray(restaurant_id)
    placed = np.asarray(placed_ts, dtype=np.float64)
    prep = np.asarray(prep_s, dtype=np.float64)
    n = len(placed)
    ready = placed + np.where(np.isfinite(prep), prep, np.inf)
    # One sweep through time: a ready event before a placement at the same instant.
    times = np.concatenate([ready, placed])
    kind = np.concatenate([np.zeros(n, dtype=np.int8), np.ones(n, dtype=np.int8)])
    idx = np.concatenate([np.arange(n), np.arange(n)])
    order = np.lexsort((kind, times))
    last: dict[str, deque[float]] = {}
    open_: dict[str, int] = {}
    out_prep = np.full(n, np.nan)
    out_n = np.zeros(n, dtype=np.int64)
    out_open = np.zeros(n, dtype=np.int64)
    for e in order:
        if not np.isfinite(times[e]):
            break
        i = int(idx[e])
        r = str(rid[i])
        if kind[e] == 0:  # ready
            open_[r] = open_.get(r, 0) - 1
            last.setdefault(r, deque(maxlen=recent)).append(prep[i] / 60.0)
        else:  # placed
            q = last.get(r)
            if q:
                out_prep[i] = sum(q) / len(q)
                out_n[i] = len(q)
            out_open[i] = open_.get(r, 0)
            open_[r] = open_.get(r, 0) + 1
    return out_prep, out_n, out_open
