"""The soak's pure parts: the fault schedule, the error budget and recovery, memory growth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foodmesh.soak.faults import ScheduleError, default_schedule, load_schedule, parse_schedule
from foodmesh.soak.run import cpu_use, memory_growth, scan_logs
from foodmesh.soak.timeline import Call, FaultWindow, call_kind, window_figures

SERVICES = ["eta", "pricing", "catalog", "location", "dispatch", "order", "gateway"]


def test_a_schedule_file_is_read_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(
        "warmup_s: 30\nfaults:\n"
        "  - {at: 90, kind: restart, targets: [postgres]}\n"
        "  - {at: 40, kind: kill, targets: [order, dispatch]}\n"
        "  - {at: 120, kind: latency, targets: redis, duration_s: 20, delay_ms: 80}\n"
    )
    s = load_schedule(path, services=SERVICES)
    assert s.warmup_s == 30
    assert [(f.at_s, f.kind, f.targets) for f in s.faults] == [
        (40, "kill", ("order", "dispatch")), (90, "restart", ("postgres",)),
        (120, "latency", ("redis",)),
    ]  # fmt: skip
    assert s.faults[2].delay_ms == 80 and s.faults[2].duration_s == 20
    as_json = tmp_path / "faults.json"
    as_json.write_text(
        json.dumps(
            s.as_json()
            | {
                "faults": [
                    {"at": f.at_s, "kind": f.kind, "targets": list(f.targets)} for f in s.faults
                ]
            }
        )
    )
    assert [f.kind for f in load_schedule(as_json, services=SERVICES).faults] == [
        "kill",
        "restart",
        "latency",
    ]


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ({"at": 1, "kind": "explode", "targets": ["order"]}, "kind must be one of"),
        ({"at": 1, "kind": "kill", "targets": ["postgres"]}, "kill cannot target postgres"),
        ({"at": 1, "kind": "latency", "targets": ["nats"]}, "latency cannot target nats"),
        ({"at": -1, "kind": "kill", "targets": ["order"]}, "at must be a number"),
        ({"at": 1, "kind": "pause", "targets": ["redis"], "duration_s": 0}, "duration_s > 0"),
        ({"at": 1, "kind": "cut", "targets": []}, "non-empty list"),
    ],
)
def test_a_bad_fault_is_refused_naming_it(fault: dict[str, object], says: str) -> None:
    with pytest.raises(ScheduleError, match=says) as info:
        parse_schedule({"faults": [fault]}, services=SERVICES)
    assert "faults[0]" in str(info.value)


def test_the_default_schedule_has_every_kind_within_the_run() -> None:
    s = default_schedule(1800, services=SERVICES)
    kinds = {f.kind for f in s.faults}
    assert kinds == {"kill", "restart", "pause", "latency", "cut"}
    killed = [f.targets for f in s.faults if f.kind == "kill"]
    assert {t for ts in killed for t in ts} == set(SERVICES)
    assert any(len(ts) == 2 for ts in killed)
    assert {f.targets[0] for f in s.faults if f.kind == "restart"} == {"postgres", "redis", "nats"}
    assert all(s.warmup_s <= f.at_s and f.at_s + f.duration_s < 1800 for f in s.faults)


def test_call_kinds() -> None:
    assert call_kind("POST", "/api/v1/orders") == "place_order"
    assert call_kind("GET", "/api/v1/restaurants/search?lat=1") == "search"
    assert call_kind("GET", "/api/v1/orders/ord_1") == "get_order"
    assert call_kind("POST", "/api/v1/orders/ord_1:cancel") == "cancel"


def test_error_budget_and_recovery_per_window() -> None:
    calls = [Call(t / 2, "search", 200, 0.02) for t in range(400)]  # 200 s, 2 calls/s
    # a kill at 100 s: failures until 104 s, slow until 108 s
    calls = [
        Call(c.t, c.kind, 503 if 100 <= c.t < 104 else 200, 0.9 if 104 <= c.t < 108 else 0.02)
        for c in calls
    ]
    calls.append(Call(150, "search", 0, 10.0))  # one failure outside
    w = FaultWindow("kill order", "kill", 100.0, 103.0, 10.0)
    fig = window_figures(calls, [w], warmup_s=10)
    win = fig["windows"][0]
    assert win["failed"] == 8 and win["recovery_s"] == 5.0 and win["recovered_in_time"]
    assert fig["outside"]["failed"] == 1
    assert fig["normal_p99_ms"] == 20.0


def test_memory_growth_per_incarnation() -> None:
    samples = [(t * 5.0, "order", 100, 100_000 + int(t * 1000)) for t in range(100)]  # grows
    samples += [(t * 5.0, "catalog", 200, 100_000) for t in range(100)]  # flat
    samples += [(t * 5.0, "eta", 300, 100_000) for t in range(5)]  # too short to judge
    m = memory_growth(samples, warmup_s=60)
    assert not m["order"]["ok"] and m["order"]["growth"] > 0.2
    assert m["catalog"] == {"start_mib": 97.7, "end_mib": 97.7, "growth": 0.0, "ok": True}
    assert "eta" not in m


def test_cpu_use_adds_up_each_incarnation_over_the_run() -> None:
    # 100 s sampled; order ran 40 s (pid 1) at half a core, then 60 s (pid 2) at a quarter.
    samples = [(t, "order", 1, 50 * t) for t in range(0, 41, 5)]
    samples += [(40 + t, "order", 2, 9_000 + 25 * t) for t in range(0, 61, 5)]
    samples += [(t, "soak (the city)", 9, 100 * t) for t in range(0, 101, 5)]  # a whole core
    got = cpu_use(samples, tick_s=0.01)
    assert got["order"] == {"cpu_s": 35.0, "cores": 0.35}
    assert got["soak (the city)"] == {"cpu_s": 100.0, "cores": 1.0}
    assert cpu_use([]) == {}


def test_a_running_platform_is_read_from_its_supervisors_record(tmp_path: Path) -> None:
    """--target finds `foodmesh up`'s processes (live pids only) and Dispatch's settings."""
    import json
    import os

    from foodmesh.soak.run import _environ, _Processes

    (tmp_path / "processes.json").write_text(json.dumps({"processes": [
        {"name": "dispatch", "pid": os.getpid(), "restarts": 2, "grpc_port": 7054},
        {"name": "gateway", "pid": None, "restarts": 5, "http_url": "http://127.0.0.1:8080/"},
    ]}))  # fmt: skip
    procs = _Processes(tmp_path)
    assert procs.pid("dispatch") == os.getpid() and procs.pid("gateway") is None
    assert procs.live() == [("dispatch", os.getpid())]
    assert procs.read()["gateway"]["restarts"] == 5
    assert _Processes(tmp_path / "nowhere").read() == {}
    assert _environ(os.getpid()).get("PATH") == os.environ["PATH"]
    assert _environ(None) == {}


def test_scan_logs_finds_tracebacks_not_warnings(tmp_path: Path) -> None:
    (tmp_path / "order.log").write_text(
        "2026 WARNING foodmesh.order payment pending\n"
        'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'
    )
    (tmp_path / "eta.log").write_text("2026 INFO all well\n")
    found = scan_logs(tmp_path)
    assert list(found) == ["order"]
    assert found["order"][0].endswith("ValueError: boom")


def test_durations_read_as_people_write_them() -> None:
    import argparse

    from foodmesh.commands.soak import parse_duration

    assert [parse_duration(t) for t in ("30m", "90s", "1800", "1h", "2.5m")] == [
        1800, 90, 1800, 3600, 150]  # fmt: skip
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")
