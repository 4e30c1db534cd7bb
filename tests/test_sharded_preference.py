"""preference-trigger in sharded scans (issue 14): the same findings, row scores and summary as the in-memory
scan on real data (benign MedQuAD-built pairs with a planted flip trigger and an annotator who flips half of
their labels), at shard sizes that split the planted rows.

Every per-pair value is computed pair by pair (MiniLM one text at a time on one torch thread), and the sharded
scans embed into a cache of their own, so the equality is of recomputed values, not of cached ones."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_sharded_equals_memory, run_pickled_in_halves, write_jsonl
from test_llm_preference import pairs
from trainguard.attacks.llm import PreferenceFlip, poison_llm
from trainguard.errors import ConfigError
from trainguard.findings import DetectorStatus, Severity
from trainguard.scan import scan
from trainguard.sharded import scan_sharded

PT = "preference-trigger"
N = 150  # pairs: each of the two scans that embed afresh embeds their 150 distinct answers with MiniLM


def _same(sharded, whole, shards=None):
    assert_sharded_equals_memory(sharded, whole, PT, shards)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """150 pairs: 12 flipped behind the trigger 'zq' (prompt end), and annotator a3 flips every other label."""
    rows, truth = poison_llm(pairs(N), PreferenceFlip(trigger="zq"), count=12, seed=2)
    trigger = set(truth["poisoned_rows"])
    rows = [dict(r, annotator=f"a{i % 5}") for i, r in enumerate(rows)]
    for i, r in enumerate(rows):
        if r["annotator"] == "a3" and i % 2 and i not in trigger:
            r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    path = write_jsonl(tmp_path_factory.mktemp("pref") / "pairs.jsonl", rows)
    return path, trigger, {i for i in range(len(rows)) if i % 5 == 3}


@pytest.fixture(scope="module")
def whole(planted, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # embeddings computed afresh, not read from another test's cache
        mp.setenv("TRAINGUARD_CACHE_DIR", str(tmp_path_factory.mktemp("memory-cache")))
        return scan(planted[0], detectors=[PT])


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    """The sharded scans' embedding cache: never the in-memory scan's, so their vectors are recomputed."""
    return str(tmp_path_factory.mktemp("sharded-cache"))


def test_the_planted_trigger_and_annotator_are_found_in_memory(planted, whole):
    _, trigger, a3 = planted
    found = {f.rule: f for f in whole.findings}
    assert found["preference-flip-trigger"].evidence["trigger"] == "zq"
    assert set(found["preference-flip-trigger"].rows) == trigger
    assert found["preference-flip-trigger"].severity is Severity.HIGH
    assert found["annotator-disagreement"].evidence["annotator"] == "a3" and set(found["annotator-disagreement"].rows) == a3
    assert whole.detectors[0].summary["preference_models"]["wordllama"] == "used"


@pytest.mark.parametrize("shard_rows", [7, 64, 1000])
def test_sharded_equals_in_memory(planted, whole, own_cache, monkeypatch, shard_rows):
    path, trigger, _ = planted
    shards = -(-N // shard_rows)
    assert shards == 1 or len({r // shard_rows for r in trigger}) > 1
    monkeypatch.setenv("TRAINGUARD_CACHE_DIR", own_cache)
    _same(scan_sharded(path, detectors=[PT], shard_rows=shard_rows), whole, shards)


def test_settings_reach_the_shards(planted, own_cache, monkeypatch):
    """Fewer reply tokens, deeper anchors, one embedder: the map reads the settings too."""
    monkeypatch.setenv("TRAINGUARD_CACHE_DIR", own_cache)
    settings = {PT: {"reply_tokens": 12, "positions": 4, "embedders": ["wordllama"], "min_rows": 4, "folds": 3}}
    whole = scan(planted[0], detectors=[PT], settings=settings)
    assert whole.findings
    _same(scan_sharded(planted[0], detectors=[PT], settings=settings, shard_rows=41), whole)


def test_too_few_pairs_is_skipped_as_in_memory(tmp_path, own_cache, monkeypatch):
    monkeypatch.setenv("TRAINGUARD_CACHE_DIR", own_cache)
    path = write_jsonl(tmp_path / "few.jsonl", pairs(15))
    (a,) = scan(path, detectors=[PT]).detectors
    (b,) = scan_sharded(path, detectors=[PT], shard_rows=4).detectors
    assert a.status is b.status is DetectorStatus.SKIPPED
    assert a.message == b.message == "needs at least 20 pairs"


def test_an_embedder_fitted_on_the_data_fails_closed_when_split(tmp_path):
    """tfidf-svd is fitted on the texts it is given: one shard is the whole data, several are not."""
    path = write_jsonl(tmp_path / "p.jsonl", pairs(60))
    settings = {PT: {"embedders": ["tfidf-svd"]}}
    (whole,) = scan(path, detectors=[PT], settings=settings).detectors
    (one,) = scan_sharded(path, detectors=[PT], settings=settings, shard_rows=100).detectors
    (split,) = scan_sharded(path, detectors=[PT], settings=settings, shard_rows=30).detectors
    assert whole.status is one.status is DetectorStatus.OK
    assert {k: v for k, v in one.summary.items() if k != "shards"} == whole.summary
    assert split.status is DetectorStatus.FAILED and "tfidf-svd" in split.message


def test_summaries_survive_pickling(planted, whole, own_cache, monkeypatch):
    monkeypatch.setenv("TRAINGUARD_CACHE_DIR", own_cache)
    result, rounds = run_pickled_in_halves(PT, planted[0], 67)
    assert rounds == 0
    np.testing.assert_array_equal(result.row_scores, whole.row_scores[PT])
    assert result.summary == whole.detectors[0].summary


def test_minilm_vectors_depend_on_the_text_alone(one_torch_thread):
    """One text at a time on one torch thread: the same vector alone, in any batch, whatever torch's threads."""
    from trainguard.detectors.llm_preference import _OneTextAtATime
    from trainguard.embeddings import get_embedder

    try:
        emb = _OneTextAtATime(get_embedder("minilm"))
    except ConfigError as e:
        pytest.skip(str(e))
    import torch

    texts = [p["chosen"].split("Assistant: ")[1][:120 + 40 * (i % 5)] for i, p in enumerate(pairs(12))]
    batch = emb.embed(texts)
    torch.set_num_threads(2)  # restored by the fixture
    alone = np.vstack([emb.embed([t]) for t in reversed(texts)])[::-1]
    assert np.array_equal(batch, alone)
    assert torch.get_num_threads() == 2  # the pin is undone


def test_in_process_dask_matches(planted, whole, own_cache, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setenv("TRAINGUARD_CACHE_DIR", own_cache)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        _same(scan_sharded(planted[0], detectors=[PT], shard_rows=50, client=client), whole, 3)
