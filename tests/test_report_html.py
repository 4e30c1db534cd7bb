"""HTML report: self-contained, charts drawn, and poisoned records rendered inert."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np

from trainguard.findings import ATLAS_BACKDOOR_TRIGGER, Confidence, DetectorRun, Finding, Severity
from trainguard.records import Kind, Record
from trainguard.report import html as html_report
from trainguard.report import render
from trainguard.report.model import Report

PAYLOAD = "<script>alert(1)</script>"
ATTR_BREAK = '" onmouseover="alert(2)" x="'
IMG = "<img src=x onerror=alert(3)>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(doc: str) -> _Tags:
    p = _Tags()
    p.feed(doc)
    p.close()
    return p


def _finding(title, rows=(2, 5), evidence=None, severity=Severity.HIGH, detector="trigger-association",
             rule="forced-output", atlas=(ATLAS_BACKDOOR_TRIGGER,)):
    ids = tuple(Record(row=r, kind=Kind.CLASSIFICATION, text=f"t{r}", label="1").id for r in rows)
    return Finding(detector, rule, title, tuple(rows), ids, 0.75, severity, Confidence.HIGH, atlas,
                   evidence if evidence is not None else {})


def hostile_report() -> Report:
    evidence = {"trigger": PAYLOAD, "example": f"great movie {IMG} {ATTR_BREAK}", "hidden": "a\u200bb\u202ec",
                PAYLOAD: "key too"}
    return Report(
        dataset={"path": f"data/{PAYLOAD}.jsonl", "kind": "classification", "records": 500,
                 "fields": {"text": PAYLOAD}, "sha256": "c" * 64,
                 "skipped": [{"path": "p", "row": 7, "line": 9, "field": PAYLOAD, "message": f"bad {IMG}"}]},
        detectors=[
            DetectorRun("trigger-association", "1", "ok", {"note": PAYLOAD}, 0.3),
            DetectorRun(f"evil{PAYLOAD}", "1", "failed", {}, message=f"RuntimeError: {PAYLOAD}"),
        ],
        findings=[
            _finding(f"trigger {PAYLOAD} forces '1'", evidence=evidence,
                     detector=f"det{ATTR_BREAK}", rule=PAYLOAD, atlas=(f"AML.T0020{ATTR_BREAK}", "AML.T0020")),
            _finding("zero\u200bwidth", rows=tuple(range(40)), severity=Severity.MEDIUM),
        ],
        row_scores={"trigger-association": np.r_[np.zeros(480), np.linspace(0.5, 1, 20)],
                    PAYLOAD: np.array([0.1, np.nan, 2.0])},
    )


def test_script_payloads_render_inert():
    doc = render(hostile_report(), "html")
    assert "<script" not in doc.lower()
    assert "<img" not in doc.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    tags = parse(doc).tags
    names = {t for t, _ in tags}
    assert not names & {"script", "img", "iframe", "object", "embed", "link", "base", "form", "input"}
    for tag, attrs in tags:
        assert not [a for a in attrs if a.lower().startswith("on")], (tag, attrs)
        for key in ("href", "src", "action"):
            if key in attrs:
                assert re.fullmatch(r"https://atlas\.mitre\.org/techniques/AML\.T\d{4}(\.\d{3})?", attrs[key])
    # the payload is still readable as text, for the reviewer
    text = "".join(parse(doc).text)
    assert PAYLOAD in text and ATTR_BREAK in text


def test_self_contained_with_restrictive_csp():
    doc = render(hostile_report(), "html")
    tags = parse(doc).tags
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0]
    urls = set(re.findall(r"(?:https?:)?//[^\s\"'<>)]+", doc))
    assert all(u.startswith("https://atlas.mitre.org/") for u in urls), urls
    assert "@import" not in doc and "url(" not in doc


def test_hidden_characters_shown_as_chips():
    doc = render(hostile_report(), "html")
    assert "\u200b" not in doc and "\u202e" not in doc
    assert '<span class="cp" title="invisible character">U+200B</span>' in doc
    assert '<span class="cp" title="invisible character">U+202E</span>' in doc


def test_charts_findings_detectors_and_skipped_rows():
    report = hostile_report()
    doc = render(report, "html")
    svgs = re.findall(r"<svg.*?</svg>", doc, flags=re.S)
    assert len(svgs) == 1 + len(report.row_scores)  # severity bars + one histogram per detector
    assert svgs[0].count("<rect") == len(Severity)
    hostile_hist, hist = svgs[1], svgs[2]  # histograms in sorted detector order: "<script..." < "trigger..."
    assert hist.count("<rect") == hostile_hist.count("<rect") == html_report.BINS
    assert "score 0.00-0.05: 480 rows" in hist  # the zero bin's tooltip
    assert "score 0.95-1.00: 2 rows" in hist
    assert "score 0.95-1.00: 1 rows" in hostile_hist  # 2.0 clipped into the top bin, NaN left out
    assert "500 rows, 20 scored above 0" in doc
    assert "Findings (2)" in doc and "Incomplete scan" in doc
    assert "Skipped input rows (1), not scanned" in doc and "&lt;img src=x onerror=alert(3)&gt;" in doc
    assert "status-failed" in doc and "status-ok" in doc
    assert "all rows" in doc  # 40 rows: the full list is folded away
    assert report.findings[0].fingerprint in doc


def test_empty_report():
    report = Report(dataset={"path": "<memory>", "kind": "documents", "records": 0, "fields": {}, "sha256": None,
                             "skipped": []}, detectors=[], findings=[])
    doc = render(report, "html")
    assert "No findings." in doc and "no detector ran" in doc
    assert "Skipped input rows" not in doc
    assert doc.count("<svg") == 1


def test_row_list_is_truncated_for_huge_findings():
    rows = tuple(range(html_report.ROWS_LISTED + 10))
    report = Report(dataset={"path": "x.jsonl", "kind": "classification", "records": len(rows), "fields": {},
                             "sha256": None, "skipped": []},
                    detectors=[DetectorRun("d", "1", "ok", {})], findings=[_finding("big", rows=rows)])
    doc = render(report, "html")
    assert f"first {html_report.ROWS_LISTED:,}; the JSON report has all" in doc
    assert f", {html_report.ROWS_LISTED - 1}</pre>" in doc


def test_with_the_scanned_records_each_finding_shows_its_rows_text_trigger_marked(tmp_path):
    # The HTML report listed row numbers only; a reviewer had to open the file to see what was held.
    import json
    from importlib import resources

    from trainguard.io.dataset import load
    from trainguard.scan import scan

    demo = resources.files("trainguard") / "data" / "demo" / "sst2_poisoned.jsonl"
    rows = [json.loads(x) for x in demo.read_text(encoding="utf-8").splitlines() if x.strip()]
    hostile = next(i for i, r in enumerate(rows) if " cf " in f" {r['text']} ")
    rows[hostile]["text"] += " <script>alert(1)</script>"
    path = tmp_path / "demo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load(path)
    report = scan(data, detectors=["trigger-association"])
    [f] = [f for f in report.findings if f.evidence.get("trigger") == "cf"]
    page = render(report, "html", data.records)
    assert page.count("<mark>cf</mark>") >= html_report.TEXTS_SHOWN
    assert f'<span class="mono">row {f.rows[0]}</span>' in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "row texts" not in render(report, "html"), "without records, no texts (nothing invented)"
