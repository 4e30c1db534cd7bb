"""Representation-level detectors on real SST-2 rows (tests/data), tfidf-svd / wordllama only."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import classification

import trainguard.attacks.junk  # noqa: F401
import trainguard.attacks.template  # noqa: F401
from trainguard.scan import run_detector
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
    res = run_detector(SpectralSignatures(embedder="tfidf-svd"), _data(sst2_rows, cache))
    assert res.findings == []
    assert res.row_scores.shape == (2000,) and (res.row_scores <= 1).all()


def test_template_trigger_forms_a_flagged_cluster(sst2_rows, cache):
    out = poison(sst2_rows, "template", rate=0.03, seed=5)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = run_detector(EmbeddingClusters(), data)
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
    res = run_detector(EmbeddingClusters(), _data(sst2_rows, cache))
    assert res.findings == []
    assert res.summary["clusters"], "small clusters were examined and rejected"


def test_label_consistency_finds_flips(sst2_rows, cache):
    out = poison(sst2_rows, "labelflip", rate=0.1, seed=3)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = run_detector(LabelConsistency(embedder="wordllama"), data)
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
    clean = run_detector(AvailabilityJunk(), _data(sst2_rows, cache))
    assert (clean.row_scores >= 0.5).mean() <= 0.01
    out = poison(sst2_rows, "junk", rate=0.05, seed=4)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = run_detector(AvailabilityJunk(), data)
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
    res = run_detector(AvailabilityJunk(), _data(rows, cache))
    by_rule = {f.rule: set(f.rows) for f in res.findings}
    assert 3 in by_rule["length-outlier"]
    assert 7 in by_rule["encoding-garbage"]


def test_keyword_influence_finds_badnets_tokens(sst2_rows, cache):
    # 6 %: on 2,000 rows a trigger needs a few confident reversals (min_flips) before it is reported.
    out = poison(sst2_rows, "badnets", rate=0.06, seed=2)
    data = _data(out.rows, cache)
    truth = _truth(len(data), out.poisoned_rows)
    res = run_detector(KeywordInfluence(), data)
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
    res = run_detector(FeatureCollision(embedder="wordllama"), _data(rows, cache))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(_truth(len(rows), planted), res.row_scores) > 0.75
    for f in res.findings:
        if f.rule == "foreign-region":
            assert f.evidence["label"] != f.evidence["region_label"]


def test_feature_collision_finds_clean_label_trigger_words(sst2_rows, cache):
    # Clean-label: tokens added only to rows already labelled with the target; no label is wrong.
    out = poison(sst2_rows, "cleanlabel", rate=0.05, seed=3)
    data = _data(out.rows, cache)
    res = run_detector(FeatureCollision(), data)
    from sklearn.metrics import roc_auc_score

    words = set(res.summary["label_forcing_words"])
    assert len({"cf", "mn", "bb", "tq"} & words) >= 3, words
    assert roc_auc_score(_truth(len(data), out.poisoned_rows), res.row_scores) > 0.9
    hits = [f for f in res.findings if f.rule == "content-free-association"]
    assert hits and all(f.evidence["label_share_of_word"] >= 0.9 for f in hits if f.evidence["word"] in {"cf", "mn"})


def test_fusion_inverts_the_familywise_map_and_keeps_one_bar():
    n = 5000
    z = np.array([-1.0, 0.0, 2.0, 3.0, 4.0, 5.0])
    e = fusion.significance(familywise(z, n), n)
    from scipy.special import ndtr

    assert e[2:] == pytest.approx(-np.log10(1 - ndtr(z[2:])), rel=1e-3)
    assert np.all(np.diff(e) > 0)  # strictly monotone: the ranking survives
    # a detector exactly at its own bar fuses to the bar; below stays below, above stays above
    fused = fusion.fuse({"spectral-signatures": np.array([0.5, 0.49, 0.51, 0.0])})
    assert fused[0] == pytest.approx(0.5, abs=1e-6)
    assert fused[1] < 0.5 < fused[2]
    assert list(fusion.flagged(fused)) == [0, 2]


def test_fusion_sub_bar_scores_of_gated_detectors_are_not_evidence():
    # keyword-influence's 0.45 (a non-decisive keyword) must not outrank a row label-consistency doubts
    n = 1000
    z = np.zeros(n)
    z[:4] = [0.0, 2.5, 0.5, 0.0]
    lc = familywise(z, n)
    kw = np.zeros(n)
    kw[[0, 3]] = [0.45, 0.9]
    fused = fusion.fuse({"label-consistency": lc, "keyword-influence": kw})
    assert fused[1] > fused[0] and fused[1] < 0.5  # ranked by label-consistency below the bar
    assert fused[3] == pytest.approx(0.9, abs=1e-6) and fused[3] == fused.max()  # a gated detector at its bar
    assert fusion.attribution({"label-consistency": lc, "keyword-influence": kw})[:4] == [
        "label-consistency", "label-consistency", "label-consistency", "keyword-influence"]


def test_fusion_ranking_is_the_ranked_detectors_own_despite_noise():
    # label flips: the fused AUROC must be label-consistency's, not dragged down by nine noisy detectors
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 4000
    truth = np.zeros(n, bool)
    truth[:200] = True
    z = rng.normal(size=n) + 2.0 * truth
    scores = {"label-consistency": familywise(z, n)}
    scores.update({f"d{i}": rng.uniform(0.0, 0.4999, n) for i in range(9)})
    fused = fusion.fuse(scores)
    assert roc_auc_score(truth, fused) == pytest.approx(roc_auc_score(truth, z), abs=1e-3)
    assert truth[fusion.flagged(fused)].all()  # nine sub-bar detectors never add up to a flag


def test_fusion_weights_errors_and_bad_values():
    x = np.array([0.6, 1.0, 0.3])
    assert fusion.fuse({"x": x}, weights={"x": 0.0}) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert fusion.fuse({"x": x}, weights={"x": 3.0}) == pytest.approx(fusion.fuse({"x": x}))  # clipped to 1
    assert fusion.fuse({"x": np.array([np.nan, 1.7, -1.0])}) == pytest.approx([0.0, 1.0, 0.0], abs=1e-9)
    assert fusion.explain({"x": x, "y": x[::-1]}, 2) == {"y": 0.6, "x": 0.3}
    with pytest.raises(ConfigError):
        fusion.fuse({})
    with pytest.raises(ConfigError, match="differ in length"):
        fusion.fuse({"x": x, "y": x[:2]})
    with pytest.raises(ConfigError, match="threshold"):
        fusion.fuse({"x": x}, threshold=0)


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


def test_fusion_ignores_a_detector_over_its_bar_on_most_rows():
    # a lexical detector that flags a dataset's template structure (most rows) adds no evidence
    lc = familywise(np.array([0.0, 6.0, 0.0, 0.0, 0.0]), 5)
    trig = np.array([0.9, 0.0, 0.9, 0.9, 0.9])
    fused = fusion.fuse({"label-consistency": lc, "trigger-association": trig})
    assert list(fusion.flagged(fused)) == [1]


def test_label_consistency_agreeing_rows_stay_under_the_bar_on_separable_data():
    # MedQuAD-like: the bulk at P(label) ~ 1, so a row at P = 0.9 is "extreme" on the MAD scale,
    # but the model still agrees with its label: not a dispute. Disputed rows still rank above it.
    from trainguard.detectors.label_consistency import capped_dispute_z

    n = 2000
    p = np.full(n, 0.9999)
    p[:5] = 0.9  # agreeing, far from the bulk
    p[5:8] = 0.3  # disputed
    log_odds = np.log((1 - p) / p) + np.random.default_rng(0).normal(0, 1e-3, n)
    agrees = p > 0.5
    z = capped_dispute_z(log_odds, agrees, n)
    s = familywise(z, n)
    assert (s[:5] < 0.5).all() and (s[5:8] >= 0.5).all()
    assert s[5:8].min() > s[:5].max() > s[8:].max()
