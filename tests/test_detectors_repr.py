"""Representation-level detectors on real SST-2 rows (tests/data), tfidf-svd / wordllama only."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import classification

import trainguard.attacks.junk  # noqa: F401
import trainguard.attacks.template  # noqa: F401
from trainguard.attacks import poison
from trainguard.detectors import fusion
from trainguard.detectors._repr import familywise, robust_z
from trainguard.detectors.availability_junk import AvailabilityJunk
from trainguard.detectors.embedding_clusters import EmbeddingClusters
from trainguard.detectors.feature_collision import FeatureCollision
from trainguard.detectors.keyword_influence import KeywordInfluence
from trainguard.detectors.label_consistency import LabelConsistency
from trainguard.detectors.spectral_signatures import SpectralSignatures, spectral_scores
from trainguard.embeddings import use_cache_dir
from trainguard.errors import ConfigError
from trainguard.scan import scan


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINGUARD_CACHE_DIR", str(tmp_path))
    return tmp_path


def _data(rows, cache):
    d = classification(rows)
    use_cache_dir(d, cache)
    return d


def _truth(n, poisoned):
    t = np.zeros(n, bool)
    t[list(poisoned)] = True
    return t


def test_familywise_calibration_on_gaussian_null():
    rng = np.random.default_rng(0)
    n = 20000
    exceed = [(familywise(robust_z(rng.normal(size=n)), n) >= 0.5).any() for _ in range(40)]
    # P(any of n null rows >= the 0.5 bar) is 0.5 by construction; allow sampling noise.
    assert 0.25 <= np.mean(exceed) <= 0.75
    z = np.linspace(-3, 8, 50)
    assert np.all(np.diff(familywise(z, n)) > 0)


def test_spectral_paper_faithful_centring_finds_planted_direction():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 32)).astype(np.float32)
    X[:, 0] += 5.0  # a large shared offset: centring must remove it
    y = np.zeros(2000, np.int32)
    poisoned = rng.choice(2000, 20, replace=False)
    X[poisoned, 1] += 6.0
    paper, z, _ = spectral_scores(X, y)
    top = np.argsort(-paper)[:20]
    assert len(set(top) & set(poisoned)) >= 18


def test_spectral_on_clean_sst2_flags_nothing(sst2_rows, cache):
    res = SpectralSignatures(embedder="tfidf-svd").run(_data(sst2_rows, cache))
    assert res.findings == ()
    assert res.row_scores.shape == (2000,) and (res.row_scores <= 1).all()


def test_template_trigger_forms_a_flagged_cluster(sst2_rows, cache):
    out = poison(sst2_rows, "template", rate=0.03, seed=5)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = EmbeddingClusters().run(data)
    flagged = {r for f in res.findings for r in f.rows}
    assert flagged, res.summary
    # At 2,000 rows the island's edge still takes in look-alike clean rows (at 20k: precision 0.99).
    assert truth[list(flagged)].mean() >= 0.5
    assert truth[list(flagged)].sum() >= 0.8 * truth.sum()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, res.row_scores) > 0.9
    assert res.findings[0].evidence["purity_gain"] >= 0.15


@pytest.mark.xfail(strict=True, reason="known weakness: at 2,000 SST-2 rows, nested treebank phrases of one "
                   "review form small label-pure islands (none flagged on 20,000 rows); see the report")
def test_clusters_clean_sst2_flags_no_cluster(sst2_rows, cache):
    res = EmbeddingClusters().run(_data(sst2_rows, cache))
    assert res.findings == ()
    assert res.summary["clusters"], "small clusters were examined and rejected"


def test_label_consistency_finds_flips(sst2_rows, cache):
    out = poison(sst2_rows, "labelflip", rate=0.1, seed=3)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = LabelConsistency(embedder="wordllama").run(data)
    flagged = set(r for f in res.findings for r in f.rows)
    from trainguard.bench.baselines import cleanlab_label_issues
    from trainguard.bench.metrics import detection

    ours = detection(flagged, truth, res.row_scores)
    base_flags, base_scores = cleanlab_label_issues([r["text"] for r in out.rows], [r["label"] for r in out.rows])
    base = detection(base_flags, truth, base_scores)
    assert ours.recall > 0.5 and ours.f1 >= base.f1 - 0.02, (ours, base)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, res.row_scores) > 0.8
    assert all(f.evidence["suggested_labels"] for f in res.findings)


def test_junk_each_reason_and_clean_rate(sst2_rows, cache):
    clean = AvailabilityJunk().run(_data(sst2_rows, cache))
    assert (clean.row_scores >= 0.5).mean() <= 0.01
    out = poison(sst2_rows, "junk", rate=0.05, seed=4)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = AvailabilityJunk().run(data)
    flagged = res.row_scores >= 0.5
    assert flagged[truth].mean() >= 0.9
    assert truth[flagged].mean() >= 0.8
    rules = {f.rule for f in res.findings}
    assert {"encoding-garbage", "language-mismatch", "repetition", "boilerplate"} <= rules
    styles = {e["extras"]["style"] if "extras" in e else e.get("style") for e in out.entries}
    assert styles  # the simulator recorded a style per row
    assert all(f.evidence["reason"] for f in res.findings)


def test_junk_empty_and_garbage_rows_named(cache):
    rows = [{"text": f"an ordinary sentence about film number {i} and its actors", "label": i % 2} for i in range(60)]
    rows[3]["text"] = "   "
    rows[7]["text"] = "Itâ€™s a â€œniceâ€\x9d film"
    res = AvailabilityJunk().run(_data(rows, cache))
    by_rule = {f.rule: set(f.rows) for f in res.findings}
    assert 3 in by_rule["length-outlier"]
    assert 7 in by_rule["encoding-garbage"]


def test_keyword_influence_finds_badnets_tokens(sst2_rows, cache):
    out = poison(sst2_rows, "badnets", rate=0.03, seed=2)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = KeywordInfluence().run(data)
    assert len({"cf", "mn", "bb", "tq"} & set(res.summary["keywords"])) >= 3
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, res.row_scores) > 0.75  # 0.998 at 20k rows, 1 %


def test_feature_collision_reports_foreign_region(sst2_rows, cache):
    rng = random.Random(0)
    rows = [dict(r) for r in sst2_rows]
    # Copy negative reviews verbatim under the positive label: content deep in the other region.
    neg = [i for i, r in enumerate(rows) if r["label"] == 0]
    planted = rng.sample(neg, 15)
    for i in planted:
        rows[i]["label"] = 1
    res = FeatureCollision(embedder="wordllama").run(_data(rows, cache))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(_truth(len(rows), planted), res.row_scores) > 0.75
    for f in res.findings:
        assert f.evidence["label"] != f.evidence["region_label"]


def test_fusion_gated_noisy_or_and_errors():
    a = np.array([0.0, 0.9, 0.25, 0.25, 0.6])
    b = np.array([0.0, 0.0, 0.25, 0.0, 0.7])
    fused = fusion.fuse({"spectral-signatures": a, "label-consistency": b})
    assert fused[0] == 0 and fused[1] == pytest.approx(0.9)
    # sub-bar evidence does not add up: the row scores its largest contribution
    assert fused[2] == pytest.approx(0.25) and fused[3] == pytest.approx(0.25)
    # two detectors at their bar reinforce each other (noisy-OR over the gated scores)
    assert fused[4] == pytest.approx(1 - 0.4 * 0.3)
    assert list(fusion.flagged(fused)) == [1, 4]
    assert fusion.explain({"x": a, "y": b}, 2) == {"x": 0.25, "y": 0.25}
    with pytest.raises(ConfigError):
        fusion.fuse({})
    with pytest.raises(ConfigError, match="differ in length"):
        fusion.fuse({"x": a, "y": b[:2]})
    with pytest.raises(ConfigError, match="floor"):
        fusion.fuse({"x": a}, floor=0)


def test_fusion_many_weak_detectors_never_flag():
    # The old noisy-OR flagged ~10 % of clean SST-2 this way: nine detectors at 0.3-0.49 each.
    rng = np.random.default_rng(0)
    scores = {f"d{i}": rng.uniform(0.3, 0.4999, 1000) for i in range(9)}
    fused = fusion.fuse(scores)
    assert len(fusion.flagged(fused)) == 0
    assert np.allclose(fused, np.max(np.stack(list(scores.values())), axis=0))
    scores["d0"][7] = 0.5  # one detector exactly at its bar is enough, and only that row
    assert list(fusion.flagged(fusion.fuse(scores))) == [7]


def test_fusion_weights_and_lexical_scales():
    # near-duplicates' template payload (0.9) stands alone; a plain duplicate group (0.2) never flags
    nd = np.array([0.9, 0.2, 0.5])
    assert list(fusion.flagged(fusion.fuse({"near-duplicates": nd}))) == [0, 2]
    # a weight below 1 can push a detector under the bar; weights clip into [0, 1]
    fused = fusion.fuse({"x": np.array([0.6, 1.0])}, weights={"x": 0.5})
    assert fused == pytest.approx([0.3, 0.5])
    assert fusion.fuse({"x": np.array([0.6])}, weights={"x": 3.0}) == pytest.approx([0.6])
    # NaN and out-of-range scores are treated as 0 and clipped, never propagated
    assert fusion.fuse({"x": np.array([np.nan, 1.7, -1.0])}) == pytest.approx([0.0, 1.0, 0.0])


def test_detectors_run_through_scan_engine_and_fuse(sst2_rows, cache):
    data = _data(sst2_rows[:600], cache)
    dets = [SpectralSignatures(), EmbeddingClusters(), FeatureCollision(), AvailabilityJunk(), KeywordInfluence()]
    report = scan(data, detectors=dets)
    assert all(r.status == "ok" for r in report.detectors), [r.message for r in report.detectors]
    fused = fusion.fuse_report(report)
    assert fused.shape == (600,) and (fused >= 0).all() and (fused <= 1).all()


def test_unknown_embedder_fails_the_detector_clearly(sst2_rows, cache):
    report = scan(_data(sst2_rows[:100], cache), detectors=[SpectralSignatures(embedder="nope")])
    assert report.detectors[0].status == "failed"
    assert "unknown embedder 'nope'" in report.detectors[0].message


def test_template_attack_records_frame(sst2_rows):
    out = poison(sst2_rows[:200], "template", rate=0.05, seed=1)
    for i in out.poisoned_rows:
        assert out.rows[i]["text"].startswith("Honestly speaking, ")
        assert out.rows[i]["text"].endswith(", and that is all I will say about it.")
    with pytest.raises(ConfigError, match="frame"):
        poison(sst2_rows[:50], "template", rate=0.1, seed=1, frame="no slot here")
