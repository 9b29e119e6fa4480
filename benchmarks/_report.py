"""Writes the benchmarks' latest figures into docs/performance.md from their ``--json`` output.

Each benchmark prints one JSON object with ``--json`` (its name, the date, the machine, the raw
baseline, ours, and a ``ratio`` object). Keep those objects under ``docs/figures/<name>.json``;
this renders every ratio of every file into the table between the markers of
docs/performance.md, with the command, the date and the machine it was measured on:

    python benchmarks/roads.py --json > docs/figures/roads.json
    python benchmarks/_report.py docs/figures/*.json --write docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- figures:begin (benchmarks/_report.py writes this table) -->"
END = "<!-- figures:end -->"

__all__ = ["BEGIN", "END", "render", "replace_section"]


def _machine(m: dict[str, Any]) -> str:
    load = m.get("loadavg_at_start")
    at = f", load {load[0]:.1f} at start" if isinstance(load, list) and load else ""
    return f"{m.get('cpus', '?')} vCPUs, {m.get('cpu', '?')}, Python {m.get('python', '?')}{at}"


def _flatten(prefix: str, value: Any) -> list[tuple[str, float]]:
    if isinstance(value, dict):
        out: list[tuple[str, float]] = []
        for k, v in sorted(value.items()):
            out += _flatten(f"{prefix}.{k}" if prefix else k, v)
        return out
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [(prefix, float(value))]
    return []


def render(results: list[dict[str, Any]]) -> str:
    """The markdown table of every ratio of ``results`` (one row each)."""
    lines = [
        BEGIN,
        "",
        "| benchmark | figure (ours / raw baseline of the same run) | ratio | measured | machine |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in sorted(results, key=lambda r: str(r.get("benchmark", ""))):
        name = str(r.get("benchmark", "?"))
        when = str(r.get("date") or r.get("machine", {}).get("date", "?"))[:16].replace("T", " ")
        machine = _machine(r.get("machine", {}))
        for key, value in _flatten("", r.get("ratio", {})):
            lines.append(
                f"| `python benchmarks/{name}.py` | {key} | {value:g} | {when} | {machine} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def replace_section(doc: str, section: str) -> str:
    """``doc`` with the text between the markers replaced (appended when there are none)."""
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + section + tail
    return doc.rstrip("\n") + "\n\n" + section + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="JSON outputs of the benchmarks")
    ap.add_argument("--write", type=Path, help="the document to update (else print the table)")
    args = ap.parse_args(argv)
    results = []
    for f in args.files:
        try:
            results.append(json.loads(f.read_text()))
        except (OSError, ValueError) as exc:
            print(f"report: {f}: {exc}", file=sys.stderr)
            return 1
    section = render(results)
    if args.write is None:
        print(section)
        return 0
    args.write.write_text(replace_section(args.write.read_text(), section))
    print(f"report: {len(results)} benchmarks written into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
