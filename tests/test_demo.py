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
    # "world" is a topic word correlated with the positive label: reported at most as medium.
    assert all(f.severity < Severity.HIGH for f in report.findings if f.evidence.get("trigger") == "world")


def test_demo_command_writes_html(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert run_app(app, ["demo", "--out", str(out)]) == 0
    assert "<svg" in out.read_text() and "caught 60 (100%)" in capsys.readouterr().err
