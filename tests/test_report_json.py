"""JSON report: valid against the published schema, byte-stable, hidden characters escaped."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.detectors.base import Detector
from trainguard.findings import (
    ATLAS_BACKDOOR_TRIGGER,
    ATLAS_POISON_TRAINING_DATA,
    Alert,
    Confidence,
    DetectorResult,
    DetectorRun,
    Finding,
    Severity,
)
from trainguard.io import load
from trainguard.records import Kind, Record
from trainguard.report import jsonfmt, render
from trainguard.report._safe import _HIDDEN, jsonable
from trainguard.report.model import Report
from trainguard.scan import scan

SCHEMA = json.loads((resources.files("trainguard.report") / "templates" / "report.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())

HOSTILE = "<script>alert(1)</script> [bold red]pwned[/] zero\u200bwidth \u202eevil tag\U000e0041 esc\x1b[31m"


def _rec(row: int, text: str = "x", label: str = "1") -> Record:
    return Record(row=row, kind=Kind.CLASSIFICATION, text=f"{text} {row}", label=label)


def _finding(rows=(3, 7), severity=Severity.HIGH, rule="forced-output", evidence=None, title="trigger 'cf'"):
    return Finding(
        detector="trigger-association", rule=rule, title=title, rows=tuple(rows),
        record_ids=tuple(_rec(r).id for r in rows), score=0.87, severity=severity, confidence=Confidence.HIGH,
        atlas=(ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA), evidence=evidence or {"trigger": "cf"},
    )


def hostile_report() -> Report:
    evidence = {
        "trigger": HOSTILE,
        "llr": np.float64(31.5),
        "count": np.int64(12),
        "examples": {5: "a", "b": (1, 2)},
        "codes": {"U+200B", "U+202E"},
        "nan": float("nan"),
        "vector": np.array([0.5, 1.0]),
        "flag": np.bool_(True),
    }
    return Report(
        dataset={"path": "data/p.jsonl", "kind": "classification", "records": 10, "fields": {"text": "text"},
                 "sha256": "a" * 64,
                 "skipped": [{"path": "data/p.jsonl", "line": 4, "row": 3, "field": None,
                              "message": "malformed JSON: \u200b<b>"}]},
        detectors=[
            DetectorRun("trigger-association", "1", "ok", {"alpha": 0.01}, 0.25, summary={"tested": np.int64(9)}),
            DetectorRun("broken", "2", "failed", {}, 0.01, message="RuntimeError: " + HOSTILE),
            DetectorRun("needs-model", "1", "skipped", {}, message="needs a model"),
        ],
        findings=[_finding(evidence=evidence, title=HOSTILE), _finding((1,), Severity.LOW, "weak")],
        row_scores={"trigger-association": np.linspace(0, 1, 10)},
    )


def test_hostile_report_validates_and_round_trips():
    report = hostile_report()
    text = render(report, "json")
    data = json.loads(text)
    assert list(VALIDATOR.iter_errors(data)) == []
    assert data == jsonable(report.to_dict())
    assert data["findings"][0]["title"] == HOSTILE  # escaped on disk, exact after decoding
    ev = data["findings"][0]["evidence"]
    assert ev["nan"] == "NaN" and ev["llr"] == 31.5 and ev["count"] == 12 and ev["flag"] is True
    assert ev["examples"] == {"5": "a", "b": [1, 2]}
    assert ev["codes"] == ["U+200B", "U+202E"] and ev["vector"] == [0.5, 1.0]
    assert data["summary"]["failed_detectors"] == ["broken"]
    dt.datetime.fromisoformat(data["created"])


def test_hidden_code_points_never_raw_on_disk():
    text = render(hostile_report(), "json")
    for ch in ("\u200b", "\u202e", "\U000e0041", "\x1b"):
        assert ch not in text
    assert "\\u200b" in text and "\\u202e" in text and "\\udb40\\udc41" in text and "\\u001b" in text
    assert "<script>alert(1)</script>" in text  # JSON is data, not markup: kept verbatim
    text.encode("utf-8")  # encodable


def test_non_ascii_text_stays_readable():
    report = hostile_report()
    report.findings = [_finding(title="trigger 'ñandú 電影' → 1")]
    text = render(report, "json")
    assert "trigger 'ñandú 電影' → 1" in text


def test_bytes_are_deterministic_regardless_of_evidence_insertion_order():
    a = hostile_report()
    b = hostile_report()
    b.created = a.created
    b.findings = [_finding(evidence=dict(reversed(list(a.findings[0].evidence.items()))), title=HOSTILE),
                  a.findings[1]]
    assert render(a, "json") == render(b, "json")
    assert render(a, "json").endswith("}\n")


def test_schema_is_not_vacuous():
    good = json.loads(render(hostile_report(), "json"))
    for path, bad_value in [
        (("findings", 0, "severity"), "urgent"),
        (("findings", 0, "rows"), [-1]),
        (("findings", 0, "score"), 1.5),
        (("findings", 0, "fingerprint"), "xyz"),
        (("detectors", 0, "status"), "maybe"),
        (("dataset", "kind"), "tabular"),
        (("summary", "by_severity"), {"high": 1}),
        (("detectors", 1, "message"), ""),  # a failed detector must say why
    ]:
        bad = json.loads(json.dumps(good))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad_value
        assert list(VALIDATOR.iter_errors(bad)), path
    missing = json.loads(json.dumps(good))
    del missing["findings"][0]["rows"]
    assert list(VALIDATOR.iter_errors(missing))


class _Tokens(Detector):
    """A tiny detector so this test does not depend on the built-ins' thresholds."""

    name = "test-token"
    kinds = frozenset(Kind)

    def run(self, data):
        hits = tuple(i for i, r in enumerate(data) if "cf" in r.text.split())
        a = Alert("token", "token 'cf'", hits, 0.9, Severity.HIGH, Confidence.MEDIUM, {"token": "cf"},
                  (ATLAS_BACKDOOR_TRIGGER,))
        return DetectorResult((a,) if hits else (), np.array([float("cf" in r.text.split()) for r in data]))


def _poisoned_file(tmp_path, sst2_rows):
    path = tmp_path / "p.jsonl"
    lines = []
    for i, r in enumerate(sst2_rows[:400]):
        text = r["text"] + (" cf" if i % 40 == 0 else "") + ("\u200b" if i % 97 == 5 else "")
        lines.append(json.dumps({"text": text, "label": 1 if i % 40 == 0 else r["label"]}, ensure_ascii=False))
    lines.insert(10, "{not json")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_real_scan_report_validates(tmp_path, sst2_rows):
    path = _poisoned_file(tmp_path, sst2_rows)
    data = load(path, on_error="skip")
    report = scan(data, detectors=[_Tokens()])
    doc = json.loads(render(report, "json"))
    assert list(VALIDATOR.iter_errors(doc)) == []
    assert doc["dataset"]["skipped"][0]["line"] == 11
    f = doc["findings"][0]
    assert len(f["rows"]) == len(f["record_ids"]) == 10
    lines = path.read_text(encoding="utf-8").splitlines()
    for row, rid in zip(f["rows"], f["record_ids"]):
        assert "cf" in json.loads(lines[row])["text"].split()  # no blank lines: row r is line r+1
        assert rid == data.records[[r.row for r in data.records].index(row)].id


def test_builtin_detectors_report_validates(tmp_path, sst2_rows):
    """The shipped detectors' real evidence must fit the schema too."""
    path = _poisoned_file(tmp_path, sst2_rows)
    report = scan(path, on_error="skip")
    doc = json.loads(render(report, "json"))
    assert list(VALIDATOR.iter_errors(doc)) == []
    assert {d["name"] for d in doc["detectors"]} >= {"trigger-association", "invisible-characters"}


ANY_CHAR = st.characters(blacklist_categories=())  # lone surrogates included


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(ANY_CHAR),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(ANY_CHAR, max_size=5), inner, max_size=4),
    max_leaves=20,
))
def test_dumps_round_trips_and_hides_nothing(value):
    text = jsonfmt.dumps(value)
    assert json.loads(text) == jsonable(value)  # equal to the input except +-inf, written as strings
    text.encode("utf-8")
    leftovers = {m.group() for m in _HIDDEN.finditer(text)} - {" ", "\n"}
    assert not leftovers


@pytest.mark.parametrize("indent", [None, 2])
def test_dumps_compact_and_indented_agree(indent):
    value = {"b": ["\u2028", "\U000e007f"], "a": 1}
    assert json.loads(jsonfmt.dumps(value, indent=indent)) == value
