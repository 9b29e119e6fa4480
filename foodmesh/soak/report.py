"""A soak's report: ``report.json`` for machines, ``report.md`` and ``timeline.png`` for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foodmesh.soak.timeline import bucket_series, window_figures

if TYPE_CHECKING:
    from foodmesh.soak.run import SoakResult

__all__ = ["TARGET_ERROR_SHARE", "build_report", "write_report"]

#: The target: failed API calls outside fault windows.
TARGET_ERROR_SHARE = 0.001


def build_report(r: SoakResult) -> dict[str, Any]:
    """The report's JSON: the headline counts first, then every figure behind them."""
    c = r.config
    budget = window_figures(r.timeline.calls, r.windows, warmup_s=c.schedule.warmup_s)
    unhandled = sum(len(v) for v in r.unhandled.values())
    a = r.audit
    memory_bad = {k: v for k, v in r.memory.items() if not v["ok"]}
    outside = budget["outside"]["failed_share"]
    slow = [w["label"] for w in budget["windows"] if not w["recovered_in_time"]]
    checks = {
        "audit": a.passed,
        "unhandled_errors": unhandled == 0,
        "memory_growth": not memory_bad,
        "error_rate_outside_faults": outside < TARGET_ERROR_SHARE,
        "recovery": not slow,
        "no_crashes": not r.unexpected_exits,
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "lost_orders": a.lost_orders,
        "double_assignments": a.double_assignments,
        "double_charges": a.double_charges,
        "lingering_holds": a.lingering_holds,
        "unhandled_errors": unhandled,
        "acknowledged_orders": a.acknowledged,
        "delivered": a.delivered,
        "cancelled": a.cancelled,
        "in_progress": a.in_progress,
        "error_rate_outside_faults": outside,
        "slow_recoveries": slow,
        "windows": budget["windows"],
        "outside_faults": budget["outside"],
        "normal_p99_ms": budget["normal_p99_ms"],
        "audit": a.as_json(),
        "memory": r.memory,
        "cpu": r.cpu,
        "unhandled": r.unhandled,
        "restarts": r.restarts,
        "unexpected_exits": r.unexpected_exits,
        "config": {
            "duration_s": c.duration_s,
            "load": c.load,
            "orders_per_hour": c.orders_per_hour,
            "seed": c.seed,
            "drivers": c.drivers,
            "restaurants": c.restaurants,
            "prep_scale": c.prep_scale,
            "travel_scale": c.travel_scale,
            "schedule": c.schedule.as_json(),
        },  # fmt: skip
        "sim": r.sim,
        "elapsed_s": round(r.elapsed_s, 1),
        "notes": r.notes,
    }


def _plot(report: dict[str, Any], series: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    t = [b["t"] for b in series]
    for kind, colour in (("place_order", "tab:red"), ("search", "tab:blue"),
                         ("location_ack", "tab:green")):  # fmt: skip
        lat.plot(t, [b[kind] if b[kind] is not None else float("nan") for b in series],
                 label=f"p99 {kind} (ms)", color=colour, linewidth=1)  # fmt: skip
    lat.set_yscale("log")
    lat.set_ylabel("p99 latency per 5 s (ms)")
    thr.plot(t, [b["rate"] for b in series], color="black", linewidth=1, label="calls/s")
    failed = [b["rate"] * b["failed_share"] for b in series]
    thr.plot(t, failed, color="tab:red", linewidth=1, label="failed calls/s")
    thr.set_ylabel("calls per second")
    thr.set_xlabel("seconds since the load began")
    for ax in (lat, thr):
        for w in report["windows"]:
            ax.axvspan(w["start_s"], w["restored_s"] + 0.5, color="orange", alpha=0.25)
        ax.legend(loc="upper right", fontsize=8)
    for w in report["windows"]:
        lat.annotate(w["label"], (w["start_s"], 1.0), xycoords=("data", "axes fraction"),
                     rotation=90, fontsize=7, va="top")  # fmt: skip
    fig.suptitle("foodmesh soak: latency and throughput, fault windows shaded")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _markdown(report: dict[str, Any]) -> str:
    c = report["config"]
    a = report["audit"]
    lines = [
        "# foodmesh soak",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}** — {c['duration_s']:g} s at load "
        f"{c['load']:g} ({c['orders_per_hour']:g} orders/h), {c['drivers']} drivers, "
        f"seed {c['seed']}, {len(c['schedule']['faults'])} faults.",
        "",
        "| check | result |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {'ok' if v else 'FAILED'} |" for k, v in report["checks"].items()]
    lines += [
        "",
        "| figure | value |",
        "| --- | --- |",
        *(f"| {k} | {report[k]} |" for k in (
            "acknowledged_orders", "delivered", "cancelled", "in_progress", "lost_orders",
            "double_assignments", "double_charges", "lingering_holds", "unhandled_errors",
            "error_rate_outside_faults", "normal_p99_ms")),
        "",
        "![latency and throughput](timeline.png)",
        "",
        "## Fault windows",
        "",
        "| fault | start s | restored s | recovery s | calls | failed | p99 place ms "
        "| p99 search ms | p99 ack ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    o = report["outside_faults"]
    for w in report["windows"]:
        rec = "-" if w["recovery_s"] is None else f"{w['recovery_s']:g}"
        lines.append(
            f"| {w['label']} | {w['start_s']:g} | {w['restored_s']:g} | {rec} | {w['calls']} "
            f"| {w['failed_share']:.2%} | {_ms(w['p99_place_order_ms'])} "
            f"| {_ms(w['p99_search_ms'])} | {_ms(w['p99_location_ack_ms'])} |"
        )
    lines.append(
        f"| **outside faults** | | | | {o['calls']} | {o['failed_share']:.3%} "
        f"| {_ms(o['p99_place_order_ms'])} | {_ms(o['p99_search_ms'])} "
        f"| {_ms(o['p99_location_ack_ms'])} |"
    )
    lines += ["", "## Audit", ""]
    if a["failures"]:
        lines += [f"- {f}" for f in a["failures"]]
        for check, examples in a["examples"].items():
            lines.append(f"- {check}, e.g.: " + "; ".join(examples[:5]))
    else:
        lines.append("Every check passed.")
    lines += ["", "Outboxes and queues (unpublished): " + ", ".join(
        f"{k} {v}" for k, v in a["undrained_outboxes"].items()),
        "Durable consumers (behind): " + ", ".join(
        f"{k} {v}" for k, v in a["lagging_consumers"].items()), ""]  # fmt: skip
    lines += ["## Memory (RSS after warm-up)", "", "| process | start MiB | end MiB | growth |",
              "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, m in report["memory"].items():
        lines.append(f"| {name} | {m['start_mib']} | {m['end_mib']} | {m['growth']:.1%} |")
    if report.get("cpu"):
        lines += ["", "## CPU over the run (cores: the mean share of one core)", "",
                  "| process | CPU s | cores |", "| --- | ---: | ---: |"]  # fmt: skip
        for name, u in report["cpu"].items():
            lines.append(f"| {name} | {u['cpu_s']:,.0f} | {u['cores']:.2f} |")
    if report["unexpected_exits"]:
        lines += ["", "## Processes that died on their own", ""]
        lines += [f"- {k}: {v}" for k, v in report["unexpected_exits"].items()]
    if report["unhandled"]:
        lines += ["", "## Unhandled errors in the logs", ""]
        for name, hits in report["unhandled"].items():
            lines += [f"- {name}: {len(hits)}, e.g. `{hits[0]}`"]
    if report["notes"]:
        lines += ["", "## Notes", "", *(f"- {n}" for n in report["notes"])]
    return "\n".join(lines) + "\n"


def write_report(r: SoakResult, out: Path) -> dict[str, Any]:
    """Writes report.json, report.md and timeline.png into ``out``; returns the report."""
    report = build_report(r)
    series = bucket_series(r.timeline.calls)
    (out / "report.json").write_text(json.dumps({**report, "series": series}, indent=2))
    _plot(report, series, out / "timeline.png")
    (out / "report.md").write_text(_markdown(report))
    return report
