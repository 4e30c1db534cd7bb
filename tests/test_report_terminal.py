"""Terminal report: complete summary, and poisoned text shown, never obeyed."""

from __future__ import annotations

import re

import numpy as np

from trainguard.findings import ATLAS_BACKDOOR_TRIGGER, Confidence, DetectorRun, Finding, Severity
from trainguard.records import Kind, Record
from trainguard.report import terminal
from trainguard.report._safe import rows_preview
from trainguard.report.model import Report

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _finding(title="trigger 'cf' forces label '1'", rows=(4, 9, 12), evidence=None, severity=Severity.HIGH,
             rule="forced-output"):
    ids = tuple(Record(row=r, kind=Kind.CLASSIFICATION, text=f"t{r}", label="1").id for r in rows)
    return Finding("trigger-association", rule, title, tuple(rows), ids, 0.91, severity, Confidence.MEDIUM,
                   (ATLAS_BACKDOOR_TRIGGER,), evidence if evidence is not None else {"trigger": "cf"})


def _report(findings=None, detectors=None, skipped=None) -> Report:
    return Report(
        dataset={"path": "data/train.jsonl", "kind": "classification", "records": 1234, "fields": {},
                 "sha256": "b" * 64, "skipped": skipped or []},
        detectors=detectors if detectors is not None else [
            DetectorRun("trigger-association", "1", "ok", {}, 1.234),
            DetectorRun("invisible-characters", "1", "ok", {}, 0.05),
        ],
        findings=findings if findings is not None else [_finding()],
        row_scores={"trigger-association": np.zeros(3)},
    )


def plain(report: Report) -> str:
    return terminal.render(report, color=False, width=200)


def test_header_detectors_and_findings_are_listed():
    report = _report(detectors=[
        DetectorRun("trigger-association", "1", "ok", {}, 1.234),
        DetectorRun("near-duplicates", "1", "failed", {}, 0.5, message="MemoryError: too big"),
        DetectorRun("spectral", "1", "skipped", {}, message="needs embeddings"),
    ])
    out = plain(report)
    for expected in ("data/train.jsonl", "classification", "1,234", "b" * 64, "trigger-association", "1.23",
                     "failed", "MemoryError: too big", "skipped", "needs embeddings", "forced-output",
                     "trigger 'cf' forces label '1'", "3: 4, 9, 12", "AML.T0043.004", "trigger=cf", "0.91",
                     "high", "medium"):
        assert expected in out, expected
    assert "FAILED detectors: near-duplicates" in out
    assert "ok" in out


def test_rich_markup_in_data_is_printed_literally():
    title = "[bold red]pwned[/] [link=https://evil.example]click[/link] [/]"
    report = _report(findings=[_finding(title=title, evidence={"note": "[blink]x[/blink]"})],
                     detectors=[DetectorRun("[red]fake[/red]", "1", "failed", {}, message="[bold]boom[/bold]")])
    out = plain(report)
    assert "[bold red]pwned[/]" in out
    assert "[link=https://evil.example]click[/link]" in out
    assert "[blink]x[/blink]" in out
    assert "[bold]boom[/bold]" in out
    assert "FAILED detectors: [red]fake[/red]" in out
    coloured = terminal.render(report, color=True, width=200)
    assert "[bold red]pwned[/]" in ANSI.sub("", coloured)
    assert "\x1b]8;" not in coloured  # no hyperlink escape was emitted


def test_invisible_and_control_characters_are_made_visible():
    evidence = {"trigger": "zero\u200bwidth", "bidi": "abc\u202edef", "tag": "\U000e0041", "ansi": "\x1b[31mred"}
    title = "hidden \u200b and \x1b[2J clear-screen"
    skipped = [{"path": "p", "row": 2, "line": 3, "field": "text", "message": "bad \x1b[31m row"}]
    out = terminal.render(_report(findings=[_finding(title=title, evidence=evidence)], skipped=skipped),
                          color=True, width=220)
    for raw in ("\u200b", "\u202e", "\U000e0041", "\x1b[31mred", "\x1b[2J", "\x1b[31m row"):
        assert raw not in out, repr(raw)
    visible = ANSI.sub("", out)
    for shown in ("zero<U+200B>width", "abc<U+202E>def", "<U+E0041>", "<U+001B>[31mred", "hidden <U+200B> and",
                  "<U+001B>[2J", "bad <U+001B>[31m row"):
        assert shown in visible, shown


def test_skipped_rows_are_listed_never_silent():
    skipped = [{"path": "p", "row": i, "line": i + 2, "field": "label" if i == 1 else None,
                "message": f"malformed JSON {i}"} for i in range(60)]
    out = plain(_report(skipped=skipped))
    assert "Skipped input rows (60), not scanned" in out
    assert "malformed JSON 0" in out and "malformed JSON 49" in out
    assert "malformed JSON 50" not in out
    assert "10 more skipped rows: see --format json" in out
    assert re.search(r"skipped rows\s+60", out)


def test_empty_findings_and_no_detectors():
    out = plain(_report(findings=[], detectors=[]))
    assert "No findings." in out
    assert "none ran" in out
    assert "0 findings" in out
    assert "Skipped input rows" not in out


def test_findings_are_capped_with_a_pointer_to_full_output():
    findings = [_finding(rows=(i,), severity=Severity.LOW) for i in range(terminal.MAX_FINDINGS + 5)]
    out = plain(_report(findings=findings))
    assert f"Findings ({terminal.MAX_FINDINGS + 5})" in out
    assert "5 more findings" in out
    assert f"{terminal.MAX_FINDINGS + 5} findings (205 low)" in out


def test_long_row_lists_are_previewed():
    assert rows_preview(tuple(range(100, 130))) == "30: 100, 101, 102, 103, 104, … (+25)"
    assert rows_preview(()) == "0"
    out = plain(_report(findings=[_finding(rows=tuple(range(100, 130)))]))
    assert "30: 100, 101," in out and "(+25)" in out and "105" not in out


def test_plain_output_has_no_escape_codes_and_colour_output_has():
    report = _report()
    assert "\x1b[" not in plain(report)
    assert "\x1b[" in terminal.render(report, color=True)
