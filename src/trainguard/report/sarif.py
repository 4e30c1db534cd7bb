"""SARIF 2.1.0, for code-scanning dashboards (GitHub, Azure DevOps, VS Code).

One run; one rule per `detector/rule` seen in the findings; one result per
finding. Locations point at the dataset file. SARIF regions are lines; a
finding carries the source line of each row when the reader knew it (the
engine stamps `Finding.lines` from `Record.line`), so `region.startLine` comes
from the scan itself and the file is never re-opened. Without a line (JSON
arrays, Parquet, compressed input, an old report) the row is in
`logicalLocations` (`rows[N]`) and in `properties.rows`, never guessed from
row + 1.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

from trainguard.findings import DetectorStatus, Finding
from trainguard.report._safe import ATLAS_URL, SARIF_LEVEL, SECURITY_SEVERITY, jsonable, visible
from trainguard.report.jsonfmt import dumps
from trainguard.report.model import DatasetInfo, Report

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://trainguard.dev"
FINGERPRINT_KEY = "trainguard/v1"
MAX_LOCATIONS = 50  # per result; the full list is in properties.rows
SRCROOT = "%SRCROOT%"


def rule_id(f: Finding) -> str:
    return f"{f.detector}/{f.rule}"


def to_sarif(report: Report, base: str | Path | None = None, resolve_lines: bool = True) -> dict[str, Any]:
    """The SARIF log as a dict. `base`: directory URIs are made relative to (default: cwd)."""
    base_dir = Path(base) if base is not None else Path.cwd()
    artifact = _artifact(report.dataset, base_dir)
    lines = _row_lines(report.findings) if resolve_lines and artifact and not artifact["compressed"] else {}
    rules, index = _rules(report.findings)
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "trainguard", "version": report.tool_version, "semanticVersion": report.tool_version,
            "informationUri": INFORMATION_URI, "rules": rules,
        }},
        "invocations": [_invocation(report, artifact)],
        "results": [_result(f, index, artifact, lines) for f in report.findings],
        "properties": {
            "dataset": {k: v for k, v in report.dataset.to_dict().items() if k != "skipped"},
            "skippedRows": len(report.dataset.skipped),
            "created": report.created,
        },
    }
    if artifact:
        run["artifacts"] = [artifact["artifact"]]
        if artifact.get("originalUriBaseIds"):
            run["originalUriBaseIds"] = artifact["originalUriBaseIds"]
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def render(report: Report, base: str | Path | None = None, resolve_lines: bool = True) -> str:
    return dumps(to_sarif(report, base, resolve_lines)) + "\n"


def _rules(findings: Iterable[Finding]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    grouped: dict[str, list[Finding]] = {}
    for f in findings:
        grouped.setdefault(rule_id(f), []).append(f)
    rules, index = [], {}
    for rid in sorted(grouped):
        fs = grouped[rid]
        first = fs[0]
        top = max(f.severity for f in fs)
        atlas = sorted({a for f in fs for a in f.atlas})
        about = visible(_describe(first.detector))
        short_text = visible(f"{first.detector}: {first.rule.replace('-', ' ')}")
        links = "\n".join(f"- {a}: {ATLAS_URL.format(a)}" for a in map(visible, atlas))
        help_text = (f"{about + ' ' if about else ''}Rule `{visible(first.rule)}` of detector "
                     f"`{visible(first.detector)}`. Each result lists the dataset rows (0-based record positions) "
                     "it concerns; review them before training. Severity varies per result; the default level "
                     "is the highest seen in this run.")
        rule: dict[str, Any] = {
            "id": rid,
            "name": "".join(p.capitalize() for p in rid.replace("/", "-").split("-") if p),
            "shortDescription": {"text": short_text},
            "fullDescription": {"text": about or short_text},
            "help": {"text": help_text + (f"\nMITRE ATLAS:\n{links}" if links else ""),
                     "markdown": help_text + (f"\n\nMITRE ATLAS:\n{links}" if links else "")},
            "defaultConfiguration": {"level": SARIF_LEVEL[top]},
            "properties": {
                "tags": ["security", "data-poisoning", first.detector, *atlas],
                "security-severity": SECURITY_SEVERITY[top],
                "precision": _precision(fs),
            },
        }
        if atlas:
            rule["helpUri"] = ATLAS_URL.format(atlas[0])
        index[rid] = len(rules)
        rules.append(rule)
    return rules, index


def _precision(fs: list[Finding]) -> str:
    # SARIF/GitHub precision vocabulary, from the best confidence seen.
    return {1: "low", 2: "medium", 3: "high"}[int(max(f.confidence for f in fs))]


def _describe(detector: str) -> str:
    """A registered detector's own description; reports from plug-ins still render without it."""
    try:
        from trainguard.detectors.base import registry

        cls = registry().get(detector)
    except Exception:  # noqa: BLE001 - a broken plug-in must not stop the report; the text is cosmetic
        return ""
    return str(getattr(cls, "description", "") or "") if cls else ""


def _result(f: Finding, index: dict[str, int], artifact: dict | None, lines: dict[int, int]) -> dict[str, Any]:
    rid = rule_id(f)
    locs = [_location(row, artifact, lines) for row in f.rows[:MAX_LOCATIONS]]
    result: dict[str, Any] = {
        "ruleId": rid,
        "ruleIndex": index[rid],
        "level": SARIF_LEVEL[f.severity],
        "kind": "fail",
        "message": {"text": visible(f.title)},
        "locations": locs[:1],
        "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
        "rank": round(f.score * 100, 2),
        "properties": {
            "severity": str(f.severity),
            "confidence": str(f.confidence),
            "score": round(f.score, 6),
            "rows": list(f.rows),
            "record_ids": list(f.record_ids),
            "atlas": list(f.atlas),
            "detector_version": f.detector_version,
            "evidence": jsonable(f.evidence),
        },
    }
    if len(locs) > 1:
        result["relatedLocations"] = [dict(loc, id=i, message={"text": f"row {row}"})
                                      for i, (loc, row) in enumerate(zip(locs[1:], f.rows[1:]), 1)]
    if not f.rows:
        result["locations"] = [_location(None, artifact, lines)]
    return result


def _location(row: int | None, artifact: dict | None, lines: dict[int, int]) -> dict[str, Any]:
    loc: dict[str, Any] = {}
    if artifact:
        phys: dict[str, Any] = {"artifactLocation": dict(artifact["location"], index=0)}
        if row is not None and row in lines:
            phys["region"] = {"startLine": lines[row]}
        loc["physicalLocation"] = phys
    if row is not None:
        loc["logicalLocations"] = [{"name": f"row {row}", "fullyQualifiedName": f"rows[{row}]", "kind": "element"}]
    return loc


def _artifact(dataset: DatasetInfo, base_dir: Path) -> dict[str, Any] | None:
    """artifactLocation for the dataset: relative to `base_dir` under %SRCROOT% when inside it."""
    raw = dataset.path
    if not raw or raw.startswith("<"):
        return None
    path = Path(raw)
    out: dict[str, Any] = {}
    absolute = Path(os.path.abspath(path))
    try:
        rel = absolute.relative_to(os.path.abspath(base_dir))
        location = {"uri": urllib.parse.quote(rel.as_posix()), "uriBaseId": SRCROOT}
        out["originalUriBaseIds"] = {SRCROOT: {"uri": Path(os.path.abspath(base_dir)).as_uri() + "/"}}
    except ValueError:
        location = {"uri": absolute.as_uri()}
    art: dict[str, Any] = {"location": location, "roles": ["analysisTarget"]}
    if dataset.sha256:
        art["hashes"] = {"sha-256": dataset.sha256}
    out.update(location=location, artifact=art, compressed=_is_gzip(raw))
    return out


def _row_lines(findings: Iterable[Finding]) -> dict[int, int]:
    """Row -> 1-based physical line, from the lines the engine stamped on the findings."""
    return {r: line for f in findings for r, line in zip(f.rows, f.lines) if line is not None}


def _is_gzip(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return path.lower().endswith(".gz")


def _invocation(report: Report, artifact: dict | None) -> dict[str, Any]:
    notes = []
    for d in report.detectors:
        if d.status is DetectorStatus.FAILED:
            notes.append({"level": "error", "descriptor": {"id": d.name},
                          "message": {"text": visible(f"detector {d.name} failed: {d.message}")}})
        elif d.status in (DetectorStatus.SKIPPED, DetectorStatus.DISABLED):
            # Disabled: it applies but was turned off, so the data went unchecked for it (a warning).
            notes.append({"level": "note" if d.status is DetectorStatus.SKIPPED else "warning",
                          "descriptor": {"id": d.name},
                          "message": {"text": visible(f"detector {d.name} {d.status}: {d.message}")}})
    for e in report.dataset.skipped:
        note: dict[str, Any] = {"level": "warning", "descriptor": {"id": "skipped-row"},
                                "message": {"text": visible(_skip_text(e))}}
        if artifact:
            phys: dict[str, Any] = {"artifactLocation": dict(artifact["location"], index=0)}
            if e.get("line") and not artifact["compressed"]:
                phys["region"] = {"startLine": int(e["line"])}
            note["locations"] = [{"physicalLocation": phys}]
        notes.append(note)
    return {
        "executionSuccessful": not report.failed,
        "toolExecutionNotifications": notes,
        "properties": {"detectors": [jsonable(d.to_dict()) for d in report.detectors]},
    }


def _skip_text(e: dict[str, Any]) -> str:
    where = [f"row {e['row']}" if e.get("row") is not None else "", f"field {e['field']!r}" if e.get("field") else ""]
    where_s = ", ".join(w for w in where if w)
    message = e.get("message", "")
    return f"skipped input row ({where_s}): {message}" if where_s else f"skipped input: {message}"


__all__ = ["to_sarif", "render", "rule_id"]
