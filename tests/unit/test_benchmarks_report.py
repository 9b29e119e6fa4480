"""benchmarks/_report.py: the performance doc's table comes from the benchmarks' JSON."""

from __future__ import annotations

from benchmarks._report import BEGIN, END, render, replace_section

RESULT = {
    "benchmark": "roads",
    "date": "2026-12-07T03:13:39+00:00",
    "machine": {"cpus": 2, "cpu": "Xeon", "python": "3.11.7", "loadavg_at_start": [0.4, 1, 1]},
    "ratio": {"route_p50_ours_over_raw": 0.91, "nested": {"p99": 1.174}},
    "route": {"p50_ms": 3.7},
}


def test_every_ratio_becomes_a_row_with_its_command_date_and_machine() -> None:
    table = render([RESULT])
    rows = [ln for ln in table.splitlines() if ln.startswith("| `python benchmarks/roads.py`")]
    assert len(rows) == 2
    assert "route_p50_ours_over_raw | 0.91 | 2026-12-07 03:13" in rows[1]
    assert "nested.p99 | 1.174" in rows[0]
    assert "2 vCPUs, Xeon, Python 3.11.7, load 0.4 at start" in rows[0]


def test_the_section_between_the_markers_is_replaced_and_the_rest_kept() -> None:
    doc = f"# Performance\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nnarrative\n"
    out = replace_section(doc, render([RESULT]))
    assert "old table" not in out and "intro" in out and "narrative" in out
    assert out.count(BEGIN) == 1 and out.count(END) == 1
    assert replace_section("# P\n", "X").endswith("X\n")
