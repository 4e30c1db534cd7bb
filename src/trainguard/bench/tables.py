"""Markdown tables for benchmark results (docs/benchmarks.md is built from these)."""

from __future__ import annotations

from typing import Any


def _f(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def foundation_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Data: `{results['data']}` ({results['rows']:,} rows), seed {results['seed']}.",
        f"Command: `{results.get('command', '')}`",
        "",
        "Operating point: rows in high-severity findings. AUROC: per-row scores.",
        "",
        "| attack | rate | poisoned | detector | precision | recall | F1 | AUROC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        rows = dict(run["detectors"])
        if "cleanlab" in run:
            rows["cleanlab find_label_issues (baseline)"] = run["cleanlab"]
        for name, m in rows.items():
            if "precision" not in m:
                lines.append(f"| {run['attack']} | {run['rate']:.3%} | {run['poisoned']} | {name} | {m.get('status')} | | | |")
                continue
            lines.append(f"| {run['attack']} | {run['rate']:.3%} | {run['poisoned']} | {name} | {_f(m['precision'])} "
                         f"| {_f(m['recall'])} | {_f(m['f1'])} | {_f(m['auroc'])} |")
    c = results["clean"]
    lines += ["", f"Unpoisoned set: {c['high_severity_rows']} rows in high-severity findings "
                  f"({c['high_severity_share']:.3%}); findings by severity: {c['findings_by_severity']}."]
    if "speed" in results:
        s = results["speed"]
        lines += ["", f"Speed ({s['cpus']} cores): scan {s['scan_records_per_second']:,} records/s "
                      f"(load + scan {s['load_and_scan_records_per_second']:,} records/s), peak RSS "
                      f"{s['peak_rss_mb']:.0f} MB; per detector seconds: {s['per_detector_seconds']}."]
    return "\n".join(lines) + "\n"


def foundation_summary(results: dict[str, Any]) -> str:
    """One row per attack and rate: all detectors together, the trigger detectors, and cleanlab."""
    head = "| attack | rate | poisoned | trainguard P / R / AUROC |"
    rule = "|---|---|---|---|"
    with_baseline = any("cleanlab" in run for run in results["runs"])
    if with_baseline:
        head += " trigger-association P / R / AUROC | invisible-characters P / R | cleanlab P / R / AUROC |"
        rule += "---|---|---|"
    lines = [head, rule]
    for run in results["runs"]:
        d = run["detectors"]
        cells = [run["attack"], f"{run['rate']:.1%}", str(run["poisoned"]), _pra(d["trainguard (all)"])]
        if with_baseline:
            inv = d["invisible-characters"]
            cells += [_pra(d["trigger-association"]), f"{_f(inv['precision'])} / {_f(inv['recall'])}",
                      _pra(run["cleanlab"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pra(m: dict[str, Any]) -> str:
    return f"{_f(m['precision'])} / {_f(m['recall'])} / {_f(m['auroc'])}"
