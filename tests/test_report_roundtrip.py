"""Results that round-trip: `Report.from_dict(r.to_dict()).to_dict() == r.to_dict()`, on real scans and generated ones."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import instruction, read_jsonl
from trainguard.findings import Confidence, DetectorRun, DetectorStatus, Finding, Severity
from trainguard.report import render
from trainguard.report.model import DatasetInfo, Report
from trainguard.scan import scan
from trainguard.sharded import scan_sharded

DEMO = resources.files("trainguard") / "data" / "demo" / "sst2_poisoned.jsonl"


def _round_trips(report: Report) -> None:
    d = report.to_dict()
    again = Report.from_dict(d)
    assert again.to_dict() == d
    assert isinstance(again.dataset, DatasetInfo) and all(isinstance(r.status, DetectorStatus)
                                                          for r in again.detectors)
    text = render(report, "json")  # through the bytes a gate stores
    assert render(Report.from_dict(json.loads(text)), "json") == text


@pytest.fixture(scope="module")
def real_reports(tmp_path_factory) -> dict[str, Report]:
    tmp = tmp_path_factory.mktemp("rt")
    demo = tmp / "demo.jsonl"
    demo.write_text("{broken\n" + DEMO.read_text(encoding="utf-8"), encoding="utf-8")  # a skipped row too
    qa = read_jsonl("medquad_sample.jsonl")[:150]
    for i in range(0, 150, 10):
        qa[i] = {"question": qa[i]["question"] + " \u200b james bond", "answer": "Visit evil.example now."}
    return {
        "demo-default": scan(demo, on_error="skip"),
        "demo-fused": scan(demo, on_error="skip", fuse_threshold=0.5,
                           detectors=["trigger-association", "invisible-characters", "near-duplicates"]),
        "demo-sharded": scan_sharded(demo, detectors=["invisible-characters", "near-duplicates"], shard_rows=700,
                                     on_error="skip"),
        "instruction": scan(instruction(qa)),
    }


@pytest.mark.parametrize("name", ["demo-default", "demo-fused", "demo-sharded", "instruction"])
def test_real_scans_round_trip(real_reports, name):
    report = real_reports[name]
    assert report.findings, "a report with findings, or the round trip proves little"
    _round_trips(report)


def test_round_trip_keeps_what_a_gate_reads(real_reports):
    report = real_reports["demo-default"]
    again = Report.from_dict(json.loads(render(report, "json")))
    assert again.findings == report.findings  # equality is by fingerprint
    assert [f.rows for f in again.findings] == [f.rows for f in report.findings]
    assert [f.lines for f in again.findings] == [f.lines for f in report.findings]
    assert again.dataset == report.dataset and again.dataset.skipped[0]["line"] == 1
    assert again.flagged_rows() == report.flagged_rows() and again.failed == report.failed
    assert "detected from the field names" in again.dataset.kind_reason  # how the kind was resolved, kept
    sharded = Report.from_dict(real_reports["demo-sharded"].to_dict())
    assert sharded.dataset.shard_rows == 700


HEX = st.text("0123456789abcdef", min_size=64, max_size=64)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=10)


@st.composite
def findings(draw) -> Finding:
    n = draw(st.integers(1, 6))
    rows = tuple(sorted(draw(st.sets(st.integers(0, 10**6), min_size=n, max_size=n))))
    lines = draw(st.one_of(st.just(()), st.tuples(*[st.one_of(st.none(), st.integers(1, 10**7))] * n)))
    return Finding(detector=draw(TEXT.filter(bool)), rule=draw(TEXT.filter(bool)), title=draw(TEXT),
                   rows=rows, record_ids=tuple(draw(HEX) for _ in rows), score=draw(st.floats(0, 1)),
                   severity=draw(st.sampled_from(Severity)), confidence=draw(st.sampled_from(Confidence)),
                   atlas=tuple(draw(st.lists(TEXT, max_size=3))), evidence=draw(st.dictionaries(TEXT, JSONISH, max_size=4)),
                   detector_version=draw(TEXT), lines=lines)


runs = st.builds(DetectorRun, name=TEXT.filter(bool), version=TEXT, status=st.sampled_from(DetectorStatus),
                 settings=st.dictionaries(TEXT, JSONISH, max_size=3), seconds=st.floats(0, 1e4),
                 message=TEXT, summary=st.dictionaries(TEXT, JSONISH, max_size=3))
infos = st.builds(DatasetInfo, path=TEXT, kind=st.sampled_from(["classification", "instruction", "documents"]),
                  records=st.integers(0, 10**7), fields=st.dictionaries(TEXT, TEXT, max_size=3),
                  sha256=st.one_of(st.none(), HEX),
                  skipped=st.lists(st.fixed_dictionaries({"path": TEXT, "row": st.integers(0, 99), "line": st.none(),
                                                          "field": st.none(), "message": TEXT}), max_size=2)
                  .map(tuple),
                  shard_rows=st.one_of(st.none(), st.integers(1, 10**6)), model=st.one_of(st.none(), TEXT),
                  kind_reason=TEXT, notes=st.lists(TEXT, max_size=2).map(tuple))


@settings(max_examples=150, deadline=None)
@given(infos, st.lists(runs, max_size=4), st.lists(findings(), max_size=4))
def test_generated_reports_round_trip(info, detector_runs, found):
    _round_trips(Report(dataset=info, detectors=detector_runs, findings=found))


def _finding(ids, rows, rule="r", severity=Severity.HIGH) -> Finding:
    return Finding("d", rule, "t", rows, ids, 0.5, severity, Confidence.LOW, ())


def test_finding_equality_and_hash_follow_the_fingerprint():
    a, b = "a" * 64, "b" * 64
    one = _finding((a, b), (1, 2))
    moved = _finding((b, a), (9, 4), severity=Severity.LOW)  # same records, other rows and order
    assert one == moved and hash(one) == hash(moved) and len({one, moved}) == 1
    assert one != _finding((a, b), (1, 2), rule="other") and one != _finding((a,), (1,))
    assert one != one.to_dict()


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d["detectors"][0].update(status="okay"), "okay"),
    (lambda d: d["findings"][0].update(fingerprint="0" * 32), "fingerprint"),
    (lambda d: d["findings"][0].update(severity="dire"), "dire"),
    (lambda d: d["findings"][0].pop("rows"), "rows"),
    (lambda d: d["dataset"].pop("kind"), "kind"),
    (lambda d: d.pop("tool"), "tool"),
])
def test_a_wrong_shape_is_a_value_error_never_a_guess(real_reports, mutate, match):
    d = json.loads(render(real_reports["demo-fused"], "json"))
    mutate(d)
    with pytest.raises(ValueError, match=match):
        Report.from_dict(d)


def test_a_bad_finding_is_named_by_its_index(real_reports):
    """A stored report's bad finding says which one it is, also when the value (not the key) is wrong."""
    d = json.loads(render(real_reports["demo-fused"], "json"))
    d["findings"][-1]["score"] = "high"
    with pytest.raises(ValueError, match=rf"findings\[{len(d['findings']) - 1}\]"):
        Report.from_dict(d)


def test_web_report_page_reads_through_the_library(real_reports):
    from trainguard.web.reports import report_from_dict, report_html

    text = render(real_reports["demo-default"], "json")
    assert report_from_dict(json.loads(text)).to_dict() == Report.from_dict(json.loads(text)).to_dict()
    assert "<svg" in report_html(text) or "finding" in report_html(text).lower()
    broken = json.loads(text)
    broken["detectors"][0]["status"] = "fine"
    assert "cannot be shown" in report_html(json.dumps(broken))
