"""The bundled demo: every planted row caught at high severity, nothing else (a golden test)."""

from __future__ import annotations

import json
from importlib import resources

from trainguard.cli import app
from trainguard.cli._common import run_app
from trainguard.findings import Severity
from trainguard.scan import scan


def test_demo_findings_match_the_planted_truth():
    base = resources.files("trainguard") / "data" / "demo"
    truth = json.loads((base / "sst2_poisoned.truth.json").read_text())
    with resources.as_file(base / "sst2_poisoned.jsonl") as path:
        report = scan(path)
    assert report.flagged_rows(Severity.HIGH) == set(truth["poisoned_rows"])
    triggers = {f.evidence.get("trigger") for f in report.findings if f.severity >= Severity.HIGH}
    assert {"cf", "i watch this 3d movie"} <= triggers
    # "world" is a natural word correlated with the positive label (its rows' other words agree, 2 of its 26 rows
    # are negative): not an alert (issue 12; it was medium). No false finding at any severity a user is alerted at.
    assert all(f.severity < Severity.MEDIUM for f in report.findings if f.evidence.get("trigger") == "world")
    assert report.flagged_rows(Severity.MEDIUM) == set(truth["poisoned_rows"])


def test_demo_command_writes_html(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert run_app(app, ["demo", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "<svg" in out.read_text() and "caught 60 (100%)" in err
    assert "false alarms 0 at medium or above (0 at high)" in " ".join(err.split())


def test_demo_summary_counts_false_alarms_at_medium():
    # Issue 12: the line said "false alarms 0" while a medium finding alerted on 24 clean rows.
    from trainguard.cli.scan import demo_summary

    line = demo_summary(planted={1, 2, 3}, high={1, 2, 3}, medium_or_above={1, 2, 3, 7, 8})
    assert "caught 3 (100%) at high" in line and "false alarms 2 at medium or above (0 at high)" in line
