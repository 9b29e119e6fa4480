"""Alert rules and the Grafana dashboard: they parse, and every metric they name exists.

"Exists" means defined by prometheus_client in our code (found by reading every
``Counter``/``Gauge``/``Histogram``/``Summary`` definition under servers/, gateway/,
dashboard/, foodmesh/, clients/) or exported by prometheus_client's default collectors.
Metrics of services not built yet are listed in PENDING with the service that must
provide them: their checks are expected failures (strict), so the day a service exports
one, the test says to take it off the list.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "components" / "monitoring"
SOURCES = ("servers", "gateway", "dashboard", "foodmesh", "clients")
SEVERITIES = {"page", "ticket", "info"}
#: Series Prometheus makes itself.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
#: Named by the rules/dashboard, not exported yet: metric -> who must provide it.
PENDING: dict[str, str] = {}

_FUNCTIONS = {
    "abs",
    "absent",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "group",
    "histogram_quantile",
    "increase",
    "irate",
    "label_replace",
    "label_values",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "predict_linear",
    "quantile",
    "rate",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "stddev",
    "sum",
    "sum_over_time",
    "time",
    "topk",
    "vector",
}
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric (or recording rule) names a PromQL expression reads."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+\d+[smhdwy]\b", " ", s)
    s = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", " ", s)
    found = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s))
    return {n for n in found if n.lower() not in _KEYWORDS and n not in _FUNCTIONS}


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (namespace, le) (rate(grpc_server_handling_seconds_"
        'bucket{grpc_service="a.B", x=~"1|2"}[5m]))) > 0.5 and on (pod) foo:bar offset 1w'
        " / ignoring(x) up * 1024"
    )
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket", "foo:bar", "up"}


@cache
def exported() -> frozenset[str]:
    """Every series name our code (and prometheus_client's default collectors) can export."""
    names: set[str] = set()
    kinds = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            if "/v1/" in str(path):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                fn = node.func
                kind = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
                first = node.args[0]
                if kind not in kinds or not isinstance(first, ast.Constant):
                    continue
                if not isinstance(first.value, str):
                    continue
                name = first.value
                if kind == "Counter":
                    base = name.removesuffix("_total")
                    names |= {f"{base}_total", f"{base}_created"}
                elif kind == "Histogram":
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
                elif kind == "Summary":
                    names |= {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
                elif kind == "Info":
                    names.add(f"{name}_info")
                else:
                    names.add(name)
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    names |= {s.name for m in registry.collect() for s in m.samples}
    # ProcessCollector only reports on Linux with /proc; these are its documented names.
    names |= {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    return frozenset(names)


@cache
def rules() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((MONITORING / "alerts.yaml").read_text(encoding="utf-8"))
    return doc


def _all_rules() -> list[dict[str, Any]]:
    return [r for g in rules()["groups"] for r in g["rules"]]


def _recorded() -> set[str]:
    return {r["record"] for r in _all_rules() if "record" in r}


def _balanced(expr: str) -> bool:
    depth = 0
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
        depth = len(stack)
    return depth == 0


def test_rules_file_has_the_prometheus_structure() -> None:
    doc = rules()
    assert set(doc) == {"groups"}
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names))
    alerts: list[str] = []
    for g in doc["groups"]:
        assert set(g) <= {"name", "interval", "rules", "limit"} and g["rules"], g["name"]
        for r in g["rules"]:
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str) and _balanced(r["expr"]), r
            if "record" in r:
                assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", r["record"]) and ":" in r["record"]
                assert set(r) <= {"record", "expr", "labels"}
                continue
            alerts.append(r["alert"])
            assert set(r) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert re.fullmatch(r"\d+[smh]", r.get("for", "0s")), r["alert"]
            assert r["labels"]["severity"] in SEVERITIES, r["alert"]
            assert {"summary", "description", "runbook_url"} <= set(r["annotations"]), r["alert"]
            assert re.search(r"[<>]=?|==|!=", r["expr"]), f"{r['alert']} compares nothing"
    assert len(alerts) == len(set(alerts))


def test_rules_cover_the_seed_slos() -> None:
    by_slo: dict[str, list[str]] = {}
    for r in _all_rules():
        if "alert" in r and "slo" in r["labels"]:
            by_slo.setdefault(r["labels"]["slo"], []).append(r["expr"])
    assert set(by_slo) == {
        "search-latency",
        "matching-latency",
        "eta-accuracy",
        "location-freshness",
    }
    search = " ".join(by_slo["search-latency"])
    assert 'grpc_method="SearchRestaurants"' in search and "0.95" in search
    assert search.rstrip().endswith("> 0.5")  # 500 ms
    assert any(e.rstrip().endswith("> 30") for e in by_slo["matching-latency"])  # 30 s
    assert any(e.rstrip().endswith("> 60") for e in by_slo["matching-latency"])  # seed page
    assert any(e.rstrip().endswith("> 300") for e in by_slo["eta-accuracy"])  # 5 min
    assert any(e.rstrip().endswith("> 600") for e in by_slo["eta-accuracy"])  # seed page


def _named_by_rules() -> set[str]:
    return set().union(*(metric_names(r["expr"]) for r in _all_rules()))


@cache
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8")
    )
    return doc


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def _named_by_dashboard() -> set[str]:
    return set().union(*(metric_names(e) for e in _dashboard_exprs()))


def test_every_metric_the_rules_name_is_exported_or_pending() -> None:
    known = exported() | SYNTHETIC | _recorded()
    missing = _named_by_rules() - known - set(PENDING)
    assert missing == set(), f"rules read metrics nothing exports: {sorted(missing)}"


def test_every_metric_the_dashboard_names_is_exported_or_pending() -> None:
    known = exported() | SYNTHETIC | _recorded()
    missing = _named_by_dashboard() - known - set(PENDING)
    assert missing == set(), f"dashboard reads metrics nothing exports: {sorted(missing)}"


def test_the_pending_list_has_no_stale_entry() -> None:
    assert set(PENDING) <= _named_by_rules() | _named_by_dashboard()


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=f"to be provided by {why}"))
        for m, why in sorted(PENDING.items())
    ],
)
def test_pending_metric_is_exported(metric: str) -> None:
    # XPASS (a failure, strict) once the service exports it: then remove it from PENDING.
    assert metric in exported()


def test_existing_metrics_are_found_in_our_code() -> None:
    # The registry scan is what the checks above stand on: it must see the real families.
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_server_in_flight",
        "foodmesh_location_fixes_total",
        "foodmesh_location_degraded",
        "process_resident_memory_bytes",
    } <= exported()
    assert "foodmesh_location_fixes" not in exported()  # counters are exported as _total


def test_dashboard_is_a_valid_grafana_dashboard() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert _balanced(t["expr"]), t["expr"]
            assert 'namespace=~"$namespace"' in t["expr"], (p["title"], t["expr"])
    # No two panels overlap on the grid.
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_dashboard_shows_the_slos_and_the_business_metrics() -> None:
    named = _named_by_dashboard()
    for metric in (
        "grpc_server_handling_seconds_bucket",
        "foodmesh_dispatch_matching_seconds_bucket",
        "foodmesh_eta_error_seconds_sum",
        "foodmesh_location_fixes_total",
        "foodmesh_orders_total",
        "foodmesh_dispatch_offers_per_order_bucket",
        "foodmesh_pricing_surge_multiplier",
    ):
        assert metric in named, metric


def test_location_hpa_metric_is_served_by_the_adapter_from_a_real_metric() -> None:
    adapter = yaml.safe_load(
        (MONITORING / "prometheus-adapter-rules.yaml").read_text(encoding="utf-8")
    )
    (rule,) = adapter["rules"]
    assert rule["name"]["as"] == "foodmesh_location_fixes_per_second"
    series = metric_names(rule["seriesQuery"])
    assert series == {"foodmesh_location_fixes_total"} and series <= exported()
    hpa = (ROOT / "k8s" / "base" / "location" / "hpa.yaml").read_text(encoding="utf-8")
    assert "foodmesh_location_fixes_per_second" in hpa
