"""The fault schedule: a YAML or JSON file of what to break when, so a run repeats exactly.

Format (times in seconds from the start of the load)::

    warmup_s: 60            # memory and "normal" latency are measured from here on
    faults:
      - {at: 90, kind: kill, targets: [order]}                 # SIGKILL; the supervisor restarts
      - {at: 180, kind: kill, targets: [dispatch, location]}   # two at once
      - {at: 270, kind: restart, targets: [postgres]}          # postgres (fast) | redis | nats
      - {at: 360, kind: pause, targets: [redis], duration_s: 10}  # SIGSTOP, SIGCONT after
      - {at: 450, kind: latency, targets: [postgres], duration_s: 60, delay_ms: 150}
      - {at: 540, kind: cut, targets: [location]}              # every driver's Location stream
      - {at: 600, kind: cut, targets: [sse]}                   # every customer's SSE stream
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "INFRA",
    "KINDS",
    "Fault",
    "FaultSchedule",
    "ScheduleError",
    "default_schedule",
    "load_schedule",
    "parse_schedule",
]

KINDS = ("kill", "restart", "pause", "latency", "cut")
INFRA = ("postgres", "redis", "nats")
#: What a proxy stands in front of: latency for the stores, a cut for the streams.
LATENCY_TARGETS = ("postgres", "redis")
CUT_TARGETS = ("location", "sse")


class ScheduleError(ValueError):
    """A schedule that cannot run; the message names the fault and the field."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: when, what kind, on what, for how long."""

    at_s: float
    kind: str
    targets: tuple[str, ...]
    duration_s: float = 0.0
    delay_ms: float = 0.0

    @property
    def label(self) -> str:
        extra = ""
        if self.kind == "latency":
            extra = f" +{self.delay_ms:g}ms"
        if self.duration_s and self.kind in ("pause", "latency"):
            extra += f" {self.duration_s:g}s"
        return f"{self.kind} {'+'.join(self.targets)}{extra}"

    def as_json(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "kind": self.kind, "targets": list(self.targets),
                "duration_s": self.duration_s, "delay_ms": self.delay_ms}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    """The faults in time order, and the warm-up before which nothing is measured as normal."""

    faults: tuple[Fault, ...]
    warmup_s: float = 60.0

    def as_json(self) -> dict[str, Any]:
        return {"warmup_s": self.warmup_s, "faults": [f.as_json() for f in self.faults]}


def _num(raw: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = raw.get(key, default)
    if value is None:
        raise ScheduleError(f"{where}: {key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ScheduleError(f"{where}: {key} must be a number >= 0, not {value!r}")
    return float(value)


def parse_schedule(raw: Any, *, services: Iterable[str]) -> FaultSchedule:
    """A schedule from parsed YAML/JSON; ``services`` are the names ``kill``/``pause`` may take."""
    if not isinstance(raw, Mapping):
        raise ScheduleError("a schedule is a mapping with a 'faults' list")
    unknown = set(raw) - {"warmup_s", "faults"}
    if unknown:
        raise ScheduleError(f"unknown keys: {', '.join(sorted(unknown))}")
    known = set(services)
    items = raw.get("faults") or []
    if not isinstance(items, list):
        raise ScheduleError("faults must be a list")
    out: list[Fault] = []
    for i, item in enumerate(items):
        where = f"faults[{i}]"
        if not isinstance(item, Mapping):
            raise ScheduleError(f"{where}: each fault is a mapping")
        extra = set(item) - {"at", "kind", "targets", "duration_s", "delay_ms"}
        if extra:
            raise ScheduleError(f"{where}: unknown keys {', '.join(sorted(extra))}")
        kind = item.get("kind")
        if kind not in KINDS:
            raise ScheduleError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        targets = item.get("targets")
        if isinstance(targets, str):
            targets = [targets]
        if (
            not isinstance(targets, list)
            or not targets
            or not all(isinstance(t, str) for t in targets)
        ):
            raise ScheduleError(f"{where}: targets must be a non-empty list of names")
        allowed = {
            "kill": known,
            "restart": set(INFRA),
            "pause": known | set(INFRA),
            "latency": set(LATENCY_TARGETS),
            "cut": set(CUT_TARGETS),
        }[kind]
        bad = [t for t in targets if t not in allowed]
        if bad:
            raise ScheduleError(
                f"{where}: {kind} cannot target {', '.join(bad)} "
                f"(it takes {', '.join(sorted(allowed))})"
            )
        duration = _num(item, "duration_s", where, 10.0 if kind in ("pause", "latency") else 0.0)
        delay = _num(item, "delay_ms", where, 150.0 if kind == "latency" else 0.0)
        if kind in ("pause", "latency") and duration <= 0:
            raise ScheduleError(f"{where}: {kind} needs duration_s > 0")
        out.append(Fault(at_s=_num(item, "at", where), kind=kind, targets=tuple(targets),
                         duration_s=duration, delay_ms=delay))  # fmt: skip
    out.sort(key=lambda f: f.at_s)
    return FaultSchedule(faults=tuple(out), warmup_s=_num(raw, "warmup_s", "schedule", 60.0))


def load_schedule(path: Path, *, services: Iterable[str]) -> FaultSchedule:
    """Reads a schedule file (``.json``, else YAML)."""
    text = path.read_text()
    if path.suffix == ".json":
        raw = json.loads(text)
    else:
        import yaml  # type: ignore[import-untyped]

        raw = yaml.safe_load(text)
    return parse_schedule(raw, services=services)


def default_schedule(duration_s: float, *, services: Sequence[str]) -> FaultSchedule:
    """Every kind of fault, spread evenly between the warm-up and the last tenth of the run.

    Each service is killed in turn, then two at once; PostgreSQL, Redis and NATS restarted
    one at a time; one service paused for 10 s; PostgreSQL slowed for a minute (less on
    short runs, to stay within the gap); the drivers' and the customers' streams cut.
    """
    warmup = min(120.0, max(20.0, duration_s * 0.1))
    plan: list[tuple[str, tuple[str, ...], float, float]] = [
        ("kill", (s,), 0.0, 0.0) for s in services
    ]
    if len(services) >= 2:
        plan.append(("kill", (services[-1], services[-3 if len(services) >= 3 else 0]), 0, 0))
    plan += [("restart", (name,), 0.0, 0.0) for name in INFRA]
    if services:
        plan.append(("pause", (services[len(services) // 2],), 10.0, 0.0))
    plan += [("latency", ("postgres",), 60.0, 150.0), ("cut", ("location",), 0.0, 0.0),
             ("cut", ("sse",), 0.0, 0.0)]  # fmt: skip
    end = duration_s * 0.9
    gap = (end - warmup) / max(1, len(plan))
    faults = []
    for i, (kind, targets, duration, delay) in enumerate(plan):
        if kind == "latency":
            duration = min(duration, gap * 0.6)
        faults.append(Fault(at_s=round(warmup + i * gap, 1), kind=kind, targets=targets,
                            duration_s=duration, delay_ms=delay))  # fmt: skip
    return FaultSchedule(faults=tuple(faults), warmup_s=warmup)
