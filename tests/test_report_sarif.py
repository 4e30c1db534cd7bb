"""SARIF 2.1.0: structure, level mapping, rules, fingerprints and provable line numbers."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from trainguard.detectors.base import Detector
from trainguard.findings import (
    Alert,
    ATLAS_BACKDOOR_TRIGGER,
    ATLAS_POISON_TRAINING_DATA,
    Confidence,
    DetectorResult,
    DetectorRun,
    Finding,
    Severity,
)
from trainguard.io import load
from trainguard.records import Kind, Record
from trainguard.report import render, sarif
from trainguard.report.model import Report
from trainguard.scan import scan

# The parts of the official SARIF 2.1.0 schema (sarif-schema-2.1.0.json) that
# viewers rely on, restated compactly: required keys, enums and value ranges.
_MESSAGE = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
_ARTIFACT_LOCATION = {"type": "object", "properties": {"uri": {"type": "string", "format": "uri-reference"},
                                                       "uriBaseId": {"type": "string"},
                                                       "index": {"type": "integer", "minimum": -1}}}
_LOCATION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": -1},
        "physicalLocation": {"type": "object", "required": ["artifactLocation"], "properties": {
            "artifactLocation": _ARTIFACT_LOCATION,
            "region": {"type": "object", "properties": {"startLine": {"type": "integer", "minimum": 1}}},
        }},
        "logicalLocations": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "fullyQualifiedName": {"type": "string"}, "kind": {"type": "string"}}}},
        "message": _MESSAGE,
    },
}
_LEVEL = {"enum": ["none", "note", "warning", "error"]}
_MULTIFORMAT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"},
                                                                        "markdown": {"type": "string"}}}
SARIF_SUBSET = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object",
            "required": ["tool"],
            "properties": {
                "tool": {"type": "object", "required": ["driver"], "properties": {"driver": {
                    "type": "object", "required": ["name"],
                    "properties": {
                        "name": {"type": "string"}, "version": {"type": "string"},
                        "informationUri": {"type": "string", "format": "uri"},
                        "rules": {"type": "array", "uniqueItems": True, "items": {
                            "type": "object", "required": ["id"],
                            "properties": {
                                "id": {"type": "string"}, "name": {"type": "string"},
                                "shortDescription": _MULTIFORMAT, "fullDescription": _MULTIFORMAT,
                                "help": _MULTIFORMAT, "helpUri": {"type": "string", "format": "uri"},
                                "defaultConfiguration": {"type": "object", "properties": {"level": _LEVEL}},
                                "properties": {"type": "object", "properties": {
                                    "tags": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}}},
                            }}},
                    }}}},
                "artifacts": {"type": "array", "items": {"type": "object", "properties": {
                    "location": _ARTIFACT_LOCATION, "hashes": {"type": "object"}}}},
                "invocations": {"type": "array", "items": {
                    "type": "object", "required": ["executionSuccessful"],
                    "properties": {"executionSuccessful": {"type": "boolean"},
                                   "toolExecutionNotifications": {"type": "array", "items": {
                                       "type": "object", "required": ["message"],
                                       "properties": {"message": _MESSAGE, "level": _LEVEL,
                                                      "locations": {"type": "array", "items": _LOCATION}}}}}}},
                "results": {"type": "array", "items": {
                    "type": "object", "required": ["message"],
                    "properties": {
                        "ruleId": {"type": "string"}, "ruleIndex": {"type": "integer", "minimum": -1},
                        "level": _LEVEL, "kind": {"enum": ["notApplicable", "pass", "fail", "review", "open",
                                                           "informational"]},
                        "message": _MESSAGE,
                        "locations": {"type": "array", "items": _LOCATION},
                        "relatedLocations": {"type": "array", "items": _LOCATION},
                        "partialFingerprints": {"type": "object", "additionalProperties": {"type": "string"}},
                        "rank": {"type": "number", "minimum": -1, "maximum": 100},
                        "properties": {"type": "object"},
                    }}},
            },
        }},
    },
}
VALIDATOR = jsonschema.Draft202012Validator(SARIF_SUBSET, format_checker=jsonschema.FormatChecker())


def _ids(rows):
    return tuple(Record(row=r, kind=Kind.CLASSIFICATION, text=f"t{r}", label="1").id for r in rows)


def _f(detector="trigger-association", rule="forced-output", rows=(1, 2), severity=Severity.HIGH,
       title="trigger 'cf'", atlas=(ATLAS_BACKDOOR_TRIGGER,), score=0.8):
    return Finding(detector, rule, title, tuple(rows), _ids(rows), score, severity, Confidence.HIGH, atlas,
                   {"k": "v"})


def _report(findings, path="<memory>", sha=None, detectors=None, skipped=None):
    return Report(
        dataset={"path": path, "kind": "classification", "records": 10, "fields": {}, "sha256": sha,
                 "skipped": skipped or []},
        detectors=detectors or [DetectorRun("trigger-association", "1", "ok", {}, 0.1)],
        findings=findings,
    )


def _run(report, **kw):
    log = json.loads(sarif.render(report, **kw))
    assert list(VALIDATOR.iter_errors(log)) == []
    return log["runs"][0]


def test_levels_rules_and_fingerprints():
    findings = [
        _f(severity=Severity.CRITICAL), _f(rows=(3,), severity=Severity.MEDIUM),
        _f("invisible-characters", "zero-width", (4,), Severity.HIGH, atlas=(ATLAS_POISON_TRAINING_DATA,
                                                                            ATLAS_BACKDOOR_TRIGGER)),
        _f("near-duplicates", "duplicate-group", (5, 6), Severity.LOW, atlas=()),
        _f("near-duplicates", "note", (7,), Severity.INFO, atlas=()),
    ]
    run = _run(_report(findings))
    levels = [r["level"] for r in run["results"]]
    assert levels == ["error", "warning", "error", "note", "note"]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted({f"{f.detector}/{f.rule}" for f in findings})
    by_id = {r["id"]: r for r in rules}
    assert by_id["trigger-association/forced-output"]["defaultConfiguration"]["level"] == "error"
    assert by_id["near-duplicates/duplicate-group"]["defaultConfiguration"]["level"] == "note"
    tags = by_id["invisible-characters/zero-width"]["properties"]["tags"]
    assert ATLAS_POISON_TRAINING_DATA in tags and ATLAS_BACKDOOR_TRIGGER in tags
    assert by_id["invisible-characters/zero-width"]["helpUri"].startswith("https://atlas.mitre.org/techniques/")
    for rule in rules:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
    for f, res in zip(findings, run["results"]):
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"] == f"{f.detector}/{f.rule}"
        assert res["partialFingerprints"] == {"trainguard/v1": f.fingerprint}
        assert res["properties"]["rows"] == list(f.rows)
        assert res["properties"]["score"] == pytest.approx(f.score)
        assert res["properties"]["confidence"] == "high"
        assert res["rank"] == pytest.approx(80.0)
    driver = run["tool"]["driver"]
    assert driver["name"] == "trainguard" and driver["version"] and driver["informationUri"]


def test_in_memory_data_has_logical_locations_only():
    run = _run(_report([_f(rows=(3, 8))]))
    res = run["results"][0]
    assert res["locations"] == [{"logicalLocations": [{"name": "row 3", "fullyQualifiedName": "rows[3]",
                                                       "kind": "element"}]}]
    assert res["relatedLocations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "rows[8]"
    assert "artifacts" not in run


class _Marked(Detector):
    name = "test-marked"
    kinds = frozenset(Kind)

    def run(self, data):
        hits = tuple(i for i, r in enumerate(data) if "MARK" in r.text)
        a = Alert("mark", "marked row", hits, 0.7, Severity.HIGH, Confidence.HIGH, {}, (ATLAS_BACKDOOR_TRIGGER,))
        return DetectorResult((a,), np.zeros(len(data)))


def _write_jsonl(path: Path) -> list[str]:
    lines = ["", json.dumps({"text": "plain one", "label": "a"}), "",
             json.dumps({"text": "MARK two", "label": "b"}), "{broken", "   ",
             json.dumps({"text": "three MARK", "label": "a"}), json.dumps({"text": "four", "label": "b"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_start_line_comes_from_the_file_when_provable(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    lines = _write_jsonl(path)
    monkeypatch.chdir(tmp_path)
    report = scan(load("data.jsonl", on_error="skip"), detectors=[_Marked()])
    run = _run(report)
    res = run["results"][0]
    assert res["properties"]["rows"] == [1, 3]  # record positions: blank lines skipped, the broken one counts
    locs = res["locations"] + res["relatedLocations"]
    got = [loc["physicalLocation"]["region"]["startLine"] for loc in locs]
    expected = [i + 1 for i, line in enumerate(lines) if "MARK" in line]
    assert got == expected == [4, 7]  # row + 1 would have been wrong
    art = locs[0]["physicalLocation"]["artifactLocation"]
    assert art == {"uri": "data.jsonl", "uriBaseId": "%SRCROOT%", "index": 0}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    assert run["artifacts"][0]["hashes"]["sha-256"] == report.dataset.sha256
    notes = run["invocations"][0]["toolExecutionNotifications"]
    skipped = [n for n in notes if n["descriptor"]["id"] == "skipped-row"]
    assert len(skipped) == 1 and skipped[0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 5
    assert "row 2" in skipped[0]["message"]["text"]

    # Lines come from the scan (Record.line, stamped on the finding), never from re-reading the file:
    # they describe the bytes whose sha256 the artifact records, even once the file is gone.
    assert report.findings[0].lines == (4, 7)
    path.unlink()
    res = _run(report)["results"][0]
    got = [loc["physicalLocation"]["region"]["startLine"] for loc in res["locations"] + res["relatedLocations"]]
    assert got == [4, 7]
    assert res["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "rows[1]"
    # A finding without lines (an old stored report, Parquet) gets logical locations only.
    no_lines = dataclasses.replace(report, findings=[dataclasses.replace(report.findings[0], lines=())])
    res = _run(no_lines)["results"][0]
    assert all("region" not in loc["physicalLocation"] for loc in res["locations"] + res["relatedLocations"])


def test_no_start_line_for_gzip_or_unverifiable_files(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "MARK", "label": "a"}) + "\n" + json.dumps({"text": "x", "label": "b"}) + "\n")
    report = scan(load(path), detectors=[_Marked()])
    res = _run(report, base=tmp_path)["results"][0]
    assert "region" not in res["locations"][0]["physicalLocation"]
    assert _run(report, base=tmp_path, resolve_lines=False)["results"][0]["locations"] == res["locations"]


def test_path_outside_base_gets_absolute_file_uri(tmp_path):
    path = tmp_path / "my data.jsonl"
    _write_jsonl(path)
    report = scan(load(path, on_error="skip"), detectors=[_Marked()])
    other = tmp_path / "elsewhere"
    other.mkdir()
    run = _run(report, base=other)
    uri = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == path.as_uri() and "%20" in uri
    assert "originalUriBaseIds" not in run
    rel = _run(report, base=tmp_path)["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert rel == "my%20data.jsonl"


def test_failed_detector_marks_execution_unsuccessful():
    report = _report([], detectors=[DetectorRun("a", "1", "ok", {}), DetectorRun("b", "1", "failed", {},
                                    message="ValueError: x\u200b"), DetectorRun("c", "1", "skipped", {},
                                                                                   message="needs labels")])
    run = _run(report)
    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is False
    notes = {n["descriptor"]["id"]: n for n in inv["toolExecutionNotifications"]}
    assert notes["b"]["level"] == "error" and "ValueError: x<U+200B>" in notes["b"]["message"]["text"]
    assert notes["c"]["level"] == "note"
    assert run["results"] == [] and run["tool"]["driver"]["rules"] == []
    assert _run(_report([]))["invocations"][0]["executionSuccessful"] is True


def test_hidden_characters_in_messages_are_visible_and_escaped_on_disk():
    report = _report([_f(title="trigger '\u200bcf\U000e0041' <script>")])
    text = render(report, "sarif")
    assert "\u200b" not in text and "\U000e0041" not in text
    msg = json.loads(text)["runs"][0]["results"][0]["message"]["text"]
    assert msg == "trigger '<U+200B>cf<U+E0041>' <script>"


def test_locations_are_capped_but_rows_complete():
    rows = tuple(range(200))
    res = _run(_report([_f(rows=rows)]))["results"][0]
    assert len(res["locations"]) == 1 and len(res["relatedLocations"]) == sarif.MAX_LOCATIONS - 1
    assert res["properties"]["rows"] == list(rows)
    assert [loc["id"] for loc in res["relatedLocations"]] == list(range(1, sarif.MAX_LOCATIONS))
