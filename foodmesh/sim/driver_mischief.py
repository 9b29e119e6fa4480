"""A bad actor's driver app: malformed fixes and actions that make no sense.

The platform must refuse each (a rejection, INVALID_ARGUMENT, FAILED_PRECONDITION),
never fail on it: a refusal counts as ``defended``, an acceptance or an internal
error as ``breached`` (``Stats``).
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import grpc

from foodmesh.sim.agents import Stats
from foodmesh.sim.driver_session import Session, SessionLost
from foodmesh.v1 import dispatch_pb2, location_pb2

__all__ = ["Mischief"]


class Mischief:
    """What one driver's app does wrong on purpose; nothing when ``bad`` is off."""

    def __init__(self, rng: random.Random, stats: Stats, *, bad: bool) -> None:
        self.rng = rng
        self.stats = stats
        self.bad = bad
        self._bad_seqs: set[int] = set()

    # ------------------------------------------------------------ the location stream

    def sends_malformed(self, fix_seq: int) -> bool:
        """A malformed fix goes before this one (always among the first, then a fifth)."""
        return self.bad and (fix_seq < 2 or self.rng.random() < 0.2)

    def malformed(self, f: location_pb2.LocationFix) -> location_pb2.LocationFix:
        """Spoils one field of a fix (or dates it an hour ahead), and remembers its seq."""
        kind = self.rng.choice(("nan", "lat", "lon", "heading", "speed", "future"))
        if kind == "nan":
            f.lat = math.nan
        elif kind == "lat":
            f.lat = self.rng.choice((91.5, -123.0))
        elif kind == "lon":
            f.lon = 181.25
        elif kind == "heading":
            f.heading = 400.0
        elif kind == "speed":
            f.speed = -12.0
        else:
            f.timestamp.FromNanoseconds(time.time_ns() + 3600 * 10**9)
        self._bad_seqs.add(f.seq)
        return f

    def refused(self, seq: int) -> bool:
        """A fix was rejected: whether it was one of ours (then it counts as defended)."""
        if seq in self._bad_seqs:
            self.stats.defended["malformed_fix"] += 1
            return True
        return False

    def acked(self, acked_seq: int, rejected: set[int]) -> None:
        """Malformed fixes up to ``acked_seq`` not among ``rejected`` were accepted: a breach."""
        for seq in [s for s in self._bad_seqs if s <= acked_seq]:
            self._bad_seqs.discard(seq)
            if seq not in rejected:
                self.stats.breached["malformed_fix_accepted"] += 1

    def stream_broke(self) -> None:
        """The location stream failed with an internal error: ours broke it."""
        if self.bad:
            self.stats.breached["malformed_fix_stream"] += 1

    # ------------------------------------------------------------ the work session

    async def garbage(self, s: Session) -> None:
        """Sends an action that makes no sense; it must be refused."""
        stats = self.stats
        kind = self.rng.choice(("unknown_offer", "not_my_order", "empty_delivered", "no_action"))
        actions: dict[str, dict[str, Any]] = {
            "unknown_offer": {"accept_offer": dispatch_pb2.AcceptOffer(offer_id="off-bogus")},
            "not_my_order": {"picked_up": dispatch_pb2.OrderProgress(order_id="ord-not-mine")},
            "empty_delivered": {"delivered": dispatch_pb2.Delivered(order_id="")},
            "no_action": {},
        }
        try:
            ev = await s.act(timeout_s=10.0, **actions[kind])
        except SessionLost:
            code = s.ended_code
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                stats.defended[f"garbage_{kind}"] += 1
            elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                stats.breached[f"garbage_{kind}_{code.name}"] += 1
            else:  # no answer, or the service is down: says nothing about the probe
                stats.error(f"garbage_{kind}_unanswered")
            raise
        answer = ev.action_rejected.code if ev.WhichOneof("event") == "action_rejected" else ""
        if answer == "UNAVAILABLE":
            stats.error(f"garbage_{kind}_unanswered")
        elif answer and answer not in ("INTERNAL", "UNKNOWN"):
            stats.defended[f"garbage_{kind}"] += 1
        else:  # accepted, or refused as a bug
            stats.breached[f"garbage_{kind}{'_' + answer if answer else '_accepted'}"] += 1
