"""The trace format foodmesh-trace/1: what the recorder writes loads back; errors name the place."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from foodmesh.sim.trace import (
    FORMAT,
    TraceError,
    TraceRecorder,
    load_trace,
    parse_trace,
    write_trace,
)

EXAMPLE: dict[str, Any] = {
    "format": "foodmesh-trace/1",
    "name": "sf-lunch-small",
    "source": "where it came from",
    "origin": {"lat": 37.7749, "lon": -122.4194},
    "speed_mps": 5.0,
    "pickup_service_s": 240,
    "dropoff_service_s": 240,
    "target_click_to_door_s": 2400,
    "couriers": [{"id": "c1", "lat": 37.78, "lon": -122.41, "on_s": 0, "off_s": 14400}],
    "restaurants": [{"id": "r1", "lat": 37.776, "lon": -122.418}],
    "orders": [
        {"id": "o1", "placed_s": 35, "restaurant_id": "r1", "ready_s": 935,
         "dropoff": {"lat": 37.771, "lon": -122.43}, "tip": 3}
    ],
}  # fmt: skip


def broken(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(EXAMPLE))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return doc


def test_the_documented_example_loads_and_unknown_fields_are_ignored() -> None:
    t = parse_trace(EXAMPLE)
    assert t.name == "sf-lunch-small" and t.origin == (37.7749, -122.4194)
    assert t.couriers[0].off_s == 14400 and t.restaurants[0].id == "r1"
    o = t.orders[0]
    assert (o.placed_s, o.ready_s, o.dropoff_lat) == (35, 935, 37.771)
    assert parse_trace(t.as_json()) == t
    defaults = parse_trace({"format": FORMAT, "couriers": [], "restaurants": [], "orders": []})
    assert defaults.speed_mps == 5.0 and defaults.target_click_to_door_s == 2400


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"format": "foodmesh-trace/2"}, "format"),
        ({"orders__0__restaurant_id": "r9"}, "orders[0] (id 'o1').restaurant_id"),
        ({"orders__0__placed_s": KeyError}, "orders[0] (id 'o1').placed_s"),
        ({"orders__0__ready_s": 10}, "orders[0] (id 'o1').ready_s"),
        ({"orders__0__dropoff__lat": 95}, "orders[0] (id 'o1').dropoff.lat"),
        ({"orders__0__dropoff": KeyError}, "orders[0] (id 'o1').dropoff"),
        ({"couriers__0__on_s": "soon"}, "couriers[0] (id 'c1').on_s"),
        ({"couriers__0__off_s": -1}, "couriers[0] (id 'c1').off_s"),
        ({"couriers__0__lon": math.nan}, "couriers[0] (id 'c1').lon"),
        ({"restaurants__0__id": ""}, "restaurants[0].id"),
        ({"couriers": KeyError}, "couriers"),
        ({"speed_mps": 0}, "speed_mps"),
        ({"orders__0__placed_s": True}, "orders[0] (id 'o1').placed_s"),
    ],
)
def test_a_bad_trace_names_the_field_and_the_record(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(TraceError) as err:
        parse_trace(broken(**changes))
    assert err.value.field == field


def test_duplicate_ids_and_non_json_files_are_errors(tmp_path: Path) -> None:
    doc = broken()
    doc["orders"].append(dict(doc["orders"][0]))
    with pytest.raises(TraceError, match="not unique"):
        parse_trace(doc)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TraceError) as err:
        load_trace(bad)
    assert err.value.field == "(file)"


def test_the_recorder_writes_a_trace_that_loads_back(tmp_path: Path) -> None:
    rec = TraceRecorder(name="t", source="test", origin=(37.7749, -122.4194))
    rec.courier_on("d1", 37.78, -122.41, 1.0)
    rec.courier_on("d1", 37.78, -122.41, 2.0)  # already on: ignored
    rec.courier_off("d1", 50.0)
    rec.courier_on("d1", 37.70, -122.40, 60.0)  # a second shift
    rec.courier_on("d2", 37.77, -122.42, 5.0)  # still on at the end
    rec.order_placed("o1", t=10.0, restaurant_id="r1", restaurant=(37.776, -122.418),
                     dropoff=(37.771, -122.43), planned_ready_s=700.0)  # fmt: skip
    rec.order_placed("o2", t=20.0, restaurant_id="r2", restaurant=(37.7, -122.4),
                     dropoff=(37.72, -122.41), planned_ready_s=900.0)  # fmt: skip
    rec.order_placed("o3", t=30.0, restaurant_id="r1", restaurant=(37.776, -122.418),
                     dropoff=(37.771, -122.43), planned_ready_s=5.0)  # fmt: skip
    rec.order_ready("o1", 650.0)
    rec.order_cancelled("o2")
    path = write_trace(rec.trace(end_s=1000.0), tmp_path / "out" / "day.json")
    t = load_trace(path)
    assert [(c.id, c.on_s, c.off_s) for c in t.couriers] == [
        ("d1", 1.0, 50.0), ("d1#2", 60.0, 1000.0), ("d2", 5.0, 1000.0)]  # fmt: skip
    assert [(o.id, o.ready_s) for o in t.orders] == [("o1", 650.0), ("o3", 30.0)]
    assert {r.id for r in t.restaurants} == {"r1", "r2"}
    assert rec.order_count == 2


def test_what_the_recorder_writes_is_what_foodmesh_replay_reads(tmp_path: Path) -> None:
    replay = pytest.importorskip("servers.dispatch.replay")
    rec = TraceRecorder(name="t", source="test", origin=(37.7749, -122.4194))
    rec.courier_on("d1", 37.78, -122.41, 0.0)
    rec.order_placed("o1", t=10.0, restaurant_id="r1", restaurant=(37.776, -122.418),
                     dropoff=(37.771, -122.43), planned_ready_s=700.0)  # fmt: skip
    path = write_trace(rec.trace(end_s=3600.0), tmp_path / "day.json")
    theirs = replay.load_trace(path)
    assert [o.id for o in theirs.orders] == ["o1"] and len(theirs.couriers) == 1


def test_replay_and_the_simulator_share_one_trace_reader() -> None:
    replay = pytest.importorskip("servers.dispatch.replay")
    import foodmesh.core.trace as fmt
    import foodmesh.sim.trace as recorded

    assert replay.load_trace is fmt.load_trace is recorded.load_trace
    assert replay.Trace is fmt.Trace is recorded.Trace
