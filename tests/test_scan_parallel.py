"""Detectors in several processes (`scan(jobs=...)`, `trainguard scan --jobs`): the same report as one process,
failures isolated per detector (also a process that dies), and "auto" only where forking is safe."""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading

import pytest

from conftest import DATA, cli, write_jsonl
from trainguard.attacks import poison
from trainguard.detectors.base import Detector
from trainguard.errors import ConfigError
from trainguard.findings import Alert, Confidence, DetectorResult, DetectorStatus, Severity
from trainguard.records import Kind
from trainguard.report import render
from trainguard.scan import PARALLEL_MIN_ROWS, _groups, build_detectors, resolve_jobs, scan

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="parallel scans fork")


def _comparable(report) -> dict:
    """The whole JSON report but its time stamp and the detectors' timings."""
    d = json.loads(render(report, "json"))
    d.pop("created", None)
    for run in d["detectors"]:
        run.pop("seconds", None)
    return {"report": d, "scores": {k: v.tolist() for k, v in report.row_scores.items()}}


@pytest.fixture
def forkable(monkeypatch):
    """Earlier tests in this process may have loaded torch or left a thread running, which makes `scan` refuse to
    fork; these tests' children run only light detectors, so they fork anyway (a `_Dies` run in-process would end
    pytest itself)."""
    monkeypatch.setattr(importlib.import_module("trainguard.scan"), "_fork_is_safe", lambda: True)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, sst2_rows):
    rows = poison(sst2_rows, "badnets", count=20, seed=3).rows
    rows = poison(rows, "format", count=25, seed=2, target=0).rows
    return write_jsonl(tmp_path_factory.mktemp("par") / "sst2.jsonl", rows)


@pytest.mark.usefixtures("forkable")
def test_two_processes_give_the_same_report_as_one(planted):
    one = scan(planted)
    two = scan(planted, jobs=2)
    assert one.findings and any(f.severity >= Severity.HIGH for f in one.findings)
    assert _comparable(two) == _comparable(one)


class _Marker(Detector):
    name = "test-marker"
    kinds = frozenset(Kind)

    def run(self, data):
        return DetectorResult(tuple(Alert("m", "marked", (p,), 0.9, Severity.HIGH, Confidence.HIGH)
                                    for p, r in enumerate(data) if "film" in r.text))


class _Raises(Detector):
    name = "test-raises"
    kinds = frozenset(Kind)

    def run(self, data):
        raise ValueError("broken on purpose")


class _Dies(Detector):
    name = "test-dies"
    kinds = frozenset(Kind)

    def run(self, data):
        os._exit(3)  # a crash no exception handler sees (a segfault, the OOM killer)


@pytest.mark.usefixtures("forkable")
def test_a_failing_or_dying_detector_fails_alone(planted):
    rep = scan(planted, detectors=[_Marker(), _Raises(), _Dies(), _Marker()], jobs=2)
    status = {(i, r.name): (r.status, r.message) for i, r in enumerate(rep.detectors)}
    assert status[(0, "test-marker")][0] == DetectorStatus.OK and status[(3, "test-marker")][0] == DetectorStatus.OK
    assert status[(1, "test-raises")] == (DetectorStatus.FAILED, "ValueError: broken on purpose")
    assert status[(2, "test-dies")][0] == DetectorStatus.FAILED
    assert "stopped (exit code 3)" in status[(2, "test-dies")][1]
    assert len(rep.findings) == 2 * sum("film" in json.loads(line)["text"] for line in planted.read_text().splitlines())


def _refuse_to_load():
    raise RuntimeError("this object cannot be read back")


class _Unreadable:
    """Pickles, but cannot be unpickled (whatever pickling support another library installed for exceptions)."""

    def __init__(self, *, needed):
        self.needed = needed

    def __reduce__(self):
        return _refuse_to_load, ()


class _BadSummary(Detector):
    name = "test-bad-summary"
    kinds = frozenset(Kind)

    def run(self, data):
        return DetectorResult((), None, {"oops": _Unreadable(needed=1)})


@pytest.mark.usefixtures("forkable")
def test_an_outcome_that_does_not_come_back_fails_its_detector_not_the_scan(planted):
    rep = scan(planted, detectors=[_BadSummary(), _Marker()], jobs=2)
    runs = {r.name: r for r in rep.detectors}
    assert runs["test-bad-summary"].status == DetectorStatus.FAILED
    assert "could not be read back" in runs["test-bad-summary"].message
    assert runs["test-marker"].status == DetectorStatus.OK


def test_detectors_sharing_an_artefact_run_in_one_process():
    dets = build_detectors()
    todo = list(range(len(dets)))
    by_name = {dets[i].name: g for g in _groups(dets, todo) for i in g}
    assert by_name["safety-bypass"] == by_name["covert-finetuning"]  # one "llm-safety:scores" between them
    assert len(by_name["shortcut"]) == 1 and sorted(i for g in _groups(dets, todo) for i in g) == todo


def test_auto_is_one_process_where_forking_is_not_worth_it_or_not_safe(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)  # earlier tests may leave threads (a Dask client)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert resolve_jobs("auto", PARALLEL_MIN_ROWS - 1, 4) == 1
    assert resolve_jobs("auto", PARALLEL_MIN_ROWS, 1) == 1
    assert resolve_jobs("auto", PARALLEL_MIN_ROWS, 4) == 2
    assert resolve_jobs(3, 10, 2) == 2 and resolve_jobs(1, 10**6, 4) == 1
    monkeypatch.setattr(sys, "platform", "darwin")  # fork is unsafe with macOS system frameworks: not by default
    assert resolve_jobs("auto", PARALLEL_MIN_ROWS, 4) == 1 and resolve_jobs(2, 10, 4) == 2
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert resolve_jobs("auto", PARALLEL_MIN_ROWS, 4) == 1 and resolve_jobs(2, 10, 4) == 1  # a thread could hold a lock
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setitem(sys.modules, "torch", object())  # a used OpenMP pool deadlocks a forked child
    assert resolve_jobs("auto", PARALLEL_MIN_ROWS, 4) == 1 and resolve_jobs(2, 10, 4) == 1
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(ConfigError):
            resolve_jobs(bad, 10, 4)


@pytest.mark.usefixtures("forkable")
def test_cli_jobs(capsys, planted):
    code, out, _ = cli(capsys, "scan", planted, "-f", "json", "--jobs", "2", "-q")
    code1, out1, _ = cli(capsys, "scan", planted, "-f", "json", "--jobs", "1", "-q")
    assert code == code1 == 1
    assert json.loads(out)["findings"] == json.loads(out1)["findings"]
    code, _, err = cli(capsys, "scan", planted, "--shard-rows", "500", "--jobs", "2")
    assert code == 2 and "a --shard-rows scan uses --scheduler" in err  # never silently ignored
    for bad in ("0", "two", "\u00b2"):
        code, _, err = cli(capsys, "scan", DATA / "sst2_sample.jsonl", "--jobs", bad)
        assert code == 2 and "--jobs must be a positive integer or auto" in err
