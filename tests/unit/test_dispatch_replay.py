"""``foodmesh replay``: the live matching code on a virtual clock, and the trace format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from foodmesh.cli import main as foodmesh_main
from servers.dispatch.replay import SimConfig, TraceError, generate_trace, load_trace, simulate


def small(**kw: Any) -> dict[str, Any]:
    return generate_trace(**{"orders": 120, "couriers": 60, "hours": 1.0, "seed": 5, **kw})


def test_a_calm_city_gets_every_order_delivered_with_sane_metrics() -> None:
    m = simulate(load_trace(small()), SimConfig(accept_prob=1.0))
    assert m.delivered == m.orders == 120 and m.unassigned == 0
    assert m.offers_per_order == 1.0  # everyone accepts: one offer each
    assert 10 < m.click_to_door_mean_min < m.click_to_door_p90_min < 120
    assert 0 < m.on_time_share <= 1 and 0 < m.courier_idle_share < 1
    assert m.decide_wall_s > 0 and m.batches > 0


def test_declines_and_lapses_go_to_other_couriers_and_escalate_after_three() -> None:
    m = simulate(load_trace(small(orders=20, couriers=8)), SimConfig(accept_prob=0.0, drain_s=900))
    assert m.delivered == 0 and m.unassigned == 20
    # Every courier who declined is excluded, so orders cycle through many couriers.
    assert m.offers_per_order > 3


def test_batch_beats_greedy_on_p90_click_to_door_in_a_busy_city() -> None:
    trace = load_trace(generate_trace(orders=300, couriers=60, hours=2.0, seed=3))
    batch = simulate(trace, SimConfig(policy="batch"))
    greedy = simulate(trace, SimConfig(policy="greedy"))
    assert batch.click_to_door_p90_min < greedy.click_to_door_p90_min
    assert batch.delivered >= greedy.delivered


def test_same_trace_and_seed_replay_identically() -> None:
    trace = load_trace(small())
    a, b = simulate(trace, SimConfig()), simulate(trace, SimConfig())
    assert (a.click_to_door_p90_min, a.delivered) == (b.click_to_door_p90_min, b.delivered)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d.update(format="other/1"), "format"),
        (
            lambda d: d["orders"][3].pop("placed_s"),
            "orders[3] (id 'o3').placed_s: is required",
        ),
        (
            lambda d: d["orders"][2].update(restaurant_id="nope"),
            "orders[2] (id 'o2').restaurant_id",
        ),
        (lambda d: d["couriers"][1].update(lat=123.0), "couriers[1] (id 'c1').lat: must be within"),
        (
            lambda d: d["couriers"][0].update(on_s="soon"),
            "couriers[0] (id 'c0').on_s: must be a finite number",
        ),
        (lambda d: d.pop("restaurants"), "restaurants"),
    ],
)
def test_a_bad_trace_is_refused_naming_the_field_and_the_record(damage: Any, message: str) -> None:
    doc = small()
    damage(doc)
    with pytest.raises(TraceError) as err:
        load_trace(doc)
    assert message in str(err.value)


def test_unknown_fields_are_ignored() -> None:
    doc = small()
    doc["weather"] = "rain"
    doc["orders"][0]["basket"] = ["pizza"]
    assert len(load_trace(doc).orders) == 120


def test_foodmesh_replay_prints_the_metrics_of_both_policies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(small(orders=60)))
    assert foodmesh_main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "click-to-door p90 (min)" in out and "greedy" in out and "batch" in out
    assert foodmesh_main(["replay", str(path), "--policy", "greedy", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in got["results"]] == ["greedy"]
    assert got["results"][0]["delivered"] == 60
    path.write_text("{}")
    assert foodmesh_main(["replay", str(path)]) == 2
    assert "format" in capsys.readouterr().err


def test_replay_is_a_subcommand_of_the_foodmesh_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as listed:
        foodmesh_main(["--help"])
    assert listed.value.code == 0
    assert "replay" in capsys.readouterr().out
    with pytest.raises(SystemExit) as own:
        foodmesh_main(["replay", "--help"])
    assert own.value.code == 0
    assert "usage: foodmesh replay" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        foodmesh_main(["replay"])
    assert usage.value.code == 2
    assert "foodmesh replay: error: give a TRACE.json or --generate ORDERS" in (
        capsys.readouterr().err
    )
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(small(orders=20)))
    # the global options come before the command, as for every other command
    assert foodmesh_main(["-v", "replay", str(path), "--policy", "greedy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["delivered"] == 20
