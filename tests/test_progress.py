"""Progress on long work: a count, a total and an ETA, also when stderr is a pipe (CI logs)."""

from __future__ import annotations

import io
import json

from trainguard.progress import Meter, meter


def test_a_pipe_gets_plain_periodic_lines_with_count_total_and_eta():
    out = io.StringIO()
    with Meter("embedding (minilm)", 4, stream=out, interval=0.0, tty=False) as m:
        m.advance(1)
        m.advance(2)
        m.advance(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("embedding (minilm): 1/4 (25%)") and "ETA" in lines[0]
    assert lines[1].startswith("embedding (minilm): 3/4 (75%)")
    assert lines[-1].startswith("embedding (minilm): 4/4 done in")
    assert "\x1b" not in out.getvalue(), "no escape codes in a log"


def test_quick_work_on_a_pipe_prints_nothing():
    out = io.StringIO()
    with Meter("training", 100, stream=out, interval=3600.0, tty=False) as m:
        m.advance(100)
    assert out.getvalue() == ""


def test_switches(monkeypatch):
    monkeypatch.setenv("TRAINGUARD_PROGRESS", "off")
    assert not isinstance(meter("x", 10**6, min_total=10), Meter)
    monkeypatch.setenv("TRAINGUARD_PROGRESS", "auto")
    assert not isinstance(meter("x", 5, min_total=10), Meter)
    assert isinstance(meter("x", 50, min_total=10), Meter)
    assert not isinstance(meter("x", 50, enabled=False), Meter)
    monkeypatch.setenv("TRAINGUARD_PROGRESS", "on")
    assert isinstance(meter("x", 5, min_total=10), Meter)


def test_scan_on_a_pipe_prints_a_line_per_detector(capsys):
    # A pipe (CI) used to get nothing at all while a long scan ran.
    from conftest import DATA, cli

    code, out, err = cli(capsys, "scan", DATA / "sst2_sample.jsonl", "-f", "json")
    assert code == 0
    ran = [d["name"] for d in json.loads(out)["detectors"] if d["status"] == "ok"]  # skipped ones are not announced
    n = len(ran)
    lines = [ln for ln in err.splitlines() if ln.startswith("scan: ")]
    assert lines[0].startswith(f"scan: running {ran[0]} (0/{n} detectors done, ")
    assert lines[-1].startswith(f"scan: {n} detectors done") and len(lines) == n + 1
    code, _, err = cli(capsys, "scan", DATA / "sst2_sample.jsonl", "-f", "json", "-q")
    assert not [ln for ln in err.splitlines() if ln.startswith("scan: ")]
