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


def test_spectre_and_early_loss_baselines_rank_what_they_claim_to():
    """The issue-12 baselines (SPECTRE, ABL's early-loss isolation) on cases they must get right."""
    import numpy as np

    from trainguard.bench.baselines import early_loss_scores, spectre_scores

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 64))
    y = rng.integers(0, 2, 2000)
    y[:40] = 1
    X[:40] += 8 * np.eye(64)[3]  # a separated cluster inside class 1
    s = spectre_scores(X, y)
    assert set(np.argsort(-s)[:40].tolist()) == set(range(40))
    clean = spectre_scores(rng.normal(size=(2000, 64)), y)
    assert np.isin(np.argsort(-clean)[:40], np.arange(40)).mean() < 0.2  # no planted rows: no preference
    # a clean-label shortcut ("zq" only ever with label 1) is fitted first: its rows have the lowest loss
    texts = [f"{w} movie {'zq' if i < 30 else ''}".strip() for i, w in enumerate(rng.choice(["good", "bad", "odd"], 600))]
    labels = ["1" if i < 30 else str(int(rng.integers(0, 2))) for i in range(600)]
    e = early_loss_scores(texts, labels)
    assert np.isin(np.argsort(-e)[:30], np.arange(30)).mean() >= 0.8
