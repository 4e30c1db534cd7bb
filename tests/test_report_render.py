"""The `render`/`write` front door, and the CLI writing every format."""

from __future__ import annotations

import json

import pytest

from trainguard.cli import app
from trainguard.cli._common import run_app
from trainguard.errors import ConfigError
from trainguard.findings import ATLAS_BACKDOOR_TRIGGER, Confidence, DetectorRun, Finding, Severity
from trainguard.records import Kind, Record
from trainguard.report import FORMATS, render, write
from trainguard.report.model import Report


def _report(path="<memory>") -> Report:
    rows = (1, 4)
    ids = tuple(Record(row=r, kind=Kind.CLASSIFICATION, text=f"t{r}", label="1").id for r in rows)
    f = Finding("trigger-association", "forced-output", "trigger 'cf'", rows, ids, 0.9, Severity.HIGH,
                Confidence.HIGH, (ATLAS_BACKDOOR_TRIGGER,), {"trigger": "cf"})
    return Report(dataset={"path": path, "kind": "classification", "records": 5, "fields": {}, "sha256": None,
                           "skipped": []},
                  detectors=[DetectorRun("trigger-association", "1", "ok", {}, 0.1)], findings=[f])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_and_writes(tmp_path, fmt):
    report = _report()
    text = render(report, fmt)
    assert "forced-output" in text
    out = write(report, fmt, tmp_path / f"r.{fmt}")
    written = out.read_text(encoding="utf-8")
    assert "forced-output" in written and "\x1b[" not in written
    if fmt in ("json", "sarif"):
        assert written == text
        json.loads(written)


def test_unknown_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown report format 'xml'"):
        render(_report(), "xml")
    with pytest.raises(ConfigError, match="expected one of: table, json, sarif, html"):
        write(_report(), "xml", tmp_path / "r.xml")
    assert not (tmp_path / "r.xml").exists()


def test_write_refuses_to_overwrite_the_scanned_dataset(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a", "label": 1}\n', encoding="utf-8")
    before = data.read_bytes()
    with pytest.raises(ConfigError, match="refusing to write the report over the scanned dataset"):
        write(_report(str(data)), "json", data)
    assert data.read_bytes() == before


def test_unwritable_destination_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot write the html report"):
        write(_report(), "html", tmp_path / "missing-dir" / "r.html")


def test_cli_writes_each_format(tmp_path, sst2_rows):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sst2_rows[:300]) + "{oops\n", encoding="utf-8")
    for fmt in FORMATS:
        out = tmp_path / f"report.{fmt}"
        try:
            code = run_app(app, ["scan", str(data), "--format", fmt, "--out", str(out), "--on-error", "skip", "-q",
                                 "--fail-on", "critical"])
        except SystemExit as e:  # typer exits in standalone mode
            code = e.code
        assert code in (0, 1), fmt
        text = out.read_text(encoding="utf-8")
        assert "malformed JSON" in text or fmt == "sarif" and "skipped input row (row 300)" in text, fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_status_is_shown_in_every_format(fmt):
    import dataclasses

    from trainguard.findings import DetectorStatus

    runs = [DetectorRun(f"det-{s.value}", "1", s, {}, message="" if s is DetectorStatus.OK else f"why {s.value}")
            for s in DetectorStatus]
    text = render(dataclasses.replace(_report(), detectors=runs), fmt)
    for s in DetectorStatus:
        assert f"det-{s.value}" in text, (fmt, s)
        if s is not DetectorStatus.OK:
            assert f"why {s.value}" in text, (fmt, s)
    if fmt == "json":
        assert [d["status"] for d in json.loads(text)["detectors"]] == [s.value for s in DetectorStatus]


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError):
        DetectorRun("x", "1", "fine", {})
