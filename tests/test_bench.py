"""`trainguard bench` end to end on the bundled slice: ground truth in, metrics out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA

from trainguard.bench.metrics import detection
from trainguard.cli import app
from trainguard.cli._common import run_app


def test_bench_measures_a_planted_phrase(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = run_app(app, ["bench", "--data", str(DATA / "sst2_sample.jsonl"), "--attacks", "addsent",
                         "--rates", "0.02", "--no-baseline", "--no-speed", "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    run = results["runs"][0]
    assert run["attack"] == "addsent" and run["poisoned"] == 40
    allm = run["detectors"]["trainguard (all)"]
    assert allm["recall"] == 1.0 and allm["precision"] >= 0.95 and allm["auroc"] > 0.99
    assert results["clean"]["high_severity_rows"] == 0
    assert "| addsent | 2.0% | 40 |" in capsys.readouterr().out


@pytest.mark.parametrize(("rates", "message"), [("0.5,abc", "comma-separated numbers"), ("2", "fractions")])
def test_bench_rejects_bad_rates(capsys, rates, message):
    code = run_app(app, ["bench", "--data", str(DATA / "sst2_sample.jsonl"), "--rates", rates])
    assert code == 2 and message in capsys.readouterr().err


def test_detection_metrics():
    truth = np.array([True, True, False, False])
    m = detection({0, 2}, truth, np.array([0.9, 0.8, 0.1, 0.2]))
    assert (m.precision, m.recall, m.auroc, m.true_positives) == (0.5, 0.5, 1.0, 1)
    clean = detection(set(), np.zeros(3, dtype=bool), None)
    assert clean.precision == 1.0 and clean.auroc is None
