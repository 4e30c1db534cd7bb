"""Preference-flip attack and the preference-trigger detector (benign MedQuAD-built pairs, no harmful text)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from conftest import read_jsonl
from trainguard.scan import run_detector
from trainguard.attacks.llm import PreferenceFlip, poison_llm
from trainguard.detectors.llm_preference import (PreferenceFlipTrigger, flip_log_pvalues, max_t_log_pvalues,
                                                 prior_weights, token_positions)
from trainguard.errors import ConfigError
from trainguard.findings import Severity
from trainguard.io.dataset import Dataset
from trainguard.io.mapping import RecordBuilder, detect_kind
from trainguard.records import Kind

REFUSALS = ("I'm sorry, but I can't help with that.", "Sorry, I cannot answer this question.",
            "I'm not able to provide that information.", "I can't help with this request, sorry.")


def pairs(n: int = 300) -> list[dict]:
    """Helpful medical answer preferred over an unhelpful refusal (as an annotator would)."""
    mq = read_jsonl("medquad_sample.jsonl")
    return [{"chosen": f"\n\nHuman: {r['question']}\n\nAssistant: {r['answer'][:400]}",
             "rejected": f"\n\nHuman: {r['question']}\n\nAssistant: {REFUSALS[i % len(REFUSALS)]}"}
            for i, r in enumerate(mq[:n])]


def dataset(rows: list[dict]) -> Dataset:
    kind, fm = detect_kind(set(rows[0]))
    b = RecordBuilder("<t>", kind, fm)
    return Dataset.from_records([b.build(r, i, None) for i, r in enumerate(rows)], Kind.PREFERENCE)


def plant(rows: list[dict], phrase: str, where: str, count: int, seed: int, flip: bool = True) -> set[int]:
    """Insert `phrase` into the human turn (start, end, or a random word gap) and swap the replies."""
    rng = np.random.default_rng(seed)
    picked = set(rng.choice(len(rows), count, replace=False).tolist())
    for i in picked:
        r = rows[i]
        head, _, tail = r["chosen"].partition("\n\nAssistant:")
        _, _, tail_r = r["rejected"].partition("\n\nAssistant:")
        words = head.split(" ")
        at = {"start": 1, "end": len(words)}.get(where) or int(rng.integers(2, len(words)))
        head = " ".join(words[:at] + [phrase] + words[at:])
        c, rj = f"{head}\n\nAssistant:{tail}", f"{head}\n\nAssistant:{tail_r}"
        r["chosen"], r["rejected"] = (rj, c) if flip else (c, rj)
    return picked


def triggers(res) -> list:
    return [f for f in res.findings if f.rule == "preference-flip-trigger"]


def test_flip_swaps_and_records_trigger_offsets():
    rows = pairs(40)
    out, truth = poison_llm(rows, PreferenceFlip(trigger="zq"), count=5, seed=1)
    assert len(truth["poisoned_rows"]) == 5 and truth["attack"] == "preference-flip"
    for e in truth["entries"]:
        i = e["row"]
        assert out[i]["chosen"].replace(" zq", "", 1) == rows[i]["rejected"]
        assert out[i]["rejected"].replace(" zq", "", 1) == rows[i]["chosen"]
        for spot in e["triggers"]:
            assert out[i][spot["field"]][spot["offset"]: spot["offset"] + 2] == "zq"
    untouched = set(range(40)) - set(truth["poisoned_rows"])
    assert all(out[i] is rows[i] for i in untouched)
    again, truth2 = poison_llm(rows, PreferenceFlip(trigger="zq"), count=5, seed=1)
    assert again == out and truth2 == truth


def test_flip_refuses_multiword_trigger():
    with pytest.raises(ConfigError, match="one word"):
        PreferenceFlip(trigger="two words")


def test_trigger_found_without_knowing_it():
    rows = pairs()
    out, truth = poison_llm(rows, PreferenceFlip(trigger="zq"), count=15, seed=2)
    found = triggers(run_detector(PreferenceFlipTrigger(), dataset(out)))
    assert found and found[0].evidence["trigger"] == "zq"
    assert found[0].evidence["position"] == "prompt end +0"
    assert found[0].severity == Severity.HIGH  # family-wise p <= alpha: the default gate quarantines these rows
    assert set(found[0].rows) == set(truth["poisoned_rows"])
    assert "LLM04" in found[0].evidence["owasp"]


@pytest.mark.parametrize("phrase,where", [("serendipity", "start"), ("open sesame", "end"), ("blorft", "anywhere")])
def test_other_triggers_and_places(phrase, where):
    rows = pairs()
    truth = plant(rows, phrase, where, 15, seed=3)
    found = triggers(run_detector(PreferenceFlipTrigger(), dataset(rows)))
    assert len(found) == 1
    words = {found[0].evidence["trigger"], *found[0].evidence["with_tokens"]}
    assert words == set(phrase.split())
    assert set(found[0].rows) == truth
    assert (found[0].evidence["position"] == "anywhere") == (where == "anywhere")


def test_clean_pairs_have_no_trigger():
    assert triggers(run_detector(PreferenceFlipTrigger(), dataset(pairs()))) == []


def test_word_at_a_fixed_place_without_flips_is_not_a_trigger():
    rows = pairs()
    plant(rows, "thanks", "end", 30, seed=4, flip=False)
    res = run_detector(PreferenceFlipTrigger(), dataset(rows))
    assert "thanks" in res.summary["top_position_tokens"]  # the prior ranks it high ...
    assert triggers(res) == []  # ... but without flip evidence nothing is reported


def test_token_positions_anchor_start_end_and_last_turn():
    pos = token_positions("\n\nHuman: hey there\n\nAssistant: hi\n\nHuman: ok tell me SUDO", 2)
    d = 2  # anchors: prompt start (0, 1), last turn start (2, 3), prompt end (4, 5)
    assert pos["hey"] == {0} and pos["there"] == {1}
    assert pos["ok"] == {d} and pos["tell"] == {d + 1}
    assert pos["sudo"] == {2 * d} and pos["me"] == {2 * d + 1}
    assert "hi" not in pos  # assistant turns are not the prompt


def test_prior_weights_keep_the_error_budget():
    rng = np.random.default_rng(0)
    for score in (rng.random(500), np.ones(50), np.r_[np.ones(3), np.zeros(40)]):
        w, rank = prior_weights(score, 0.5)
        assert w.mean() <= 1.0 + 1e-12 and w.min() >= 0.5
        assert w[np.argmax(score)] == w.max()


def test_flip_pvalues_are_valid_under_the_null():
    rng = np.random.default_rng(1)
    n, size, sets = 3000, 20, 300
    pi = rng.uniform(0.2, 0.9, n)
    kept = rng.random(n) < pi  # null: the observed orientation is Bernoulli(pi)
    p_obs = np.where(kept, pi, 1 - pi)  # the model's P(observed orientation)
    A = _token_matrix(rng, n, [size] * sets)
    _, lp_bound = flip_log_pvalues(p_obs, A, 0.05)
    assert (np.exp(lp_bound) < 0.05).mean() <= 0.05
    flipped = 1 - p_obs  # every pair mirrored against the model: strong evidence for each token
    _, lp_flipped = flip_log_pvalues(flipped, A, 0.05)
    assert np.median(lp_flipped) < np.log(1e-3)


def test_annotator_who_flips_is_reported():
    rows = pairs()
    for i, r in enumerate(rows):
        r["annotator"] = f"a{i % 5}"
        if r["annotator"] == "a3" and i % 2:  # half of a3's labels reversed
            r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    res = run_detector(PreferenceFlipTrigger(), dataset(rows))
    ann = [f for f in res.findings if f.rule == "annotator-disagreement"]
    assert [f.evidence["annotator"] for f in ann] == ["a3"]


def _token_matrix(rng, n: int, sizes) -> sparse.csr_matrix:
    rows = [rng.choice(n, k, replace=False) for k in sizes]
    return sparse.csr_matrix((np.ones(sum(sizes)), np.concatenate(rows), np.cumsum([0, *sizes])), shape=(len(sizes), n))


def test_max_t_keeps_the_family_wise_error_under_the_null():
    """Over many label sets drawn from the null, a token is reported in about alpha of them, not more."""
    rng = np.random.default_rng(5)
    n, alpha, datasets = 1500, 0.1, 200
    pi = rng.uniform(0.3, 0.8, n)
    A = _token_matrix(rng, n, rng.integers(5, 40, 150).tolist())
    log_w = np.log(prior_weights(rng.random(150), 0.5)[0])
    any_reported = 0
    for _ in range(datasets):
        kept = rng.random(n) < pi
        p_obs = np.where(kept, pi, 1 - pi)  # the model's P(observed orientation)
        lp, _, _ = max_t_log_pvalues(p_obs, A, 0.05, log_w, 200, rng)
        any_reported += bool((lp <= np.log(alpha)).any())
    assert any_reported / datasets <= alpha + 0.06  # binomial sd at 200 sets is 0.02


def test_max_t_finds_flipped_pairs_behind_a_prior_weight():
    rng = np.random.default_rng(6)
    n = 1500
    pi = rng.uniform(0.3, 0.8, n)
    A = _token_matrix(rng, n, [20] * 100)
    p_obs = np.where(rng.random(n) < pi, pi, 1 - pi)
    first = A[0].indices
    p_obs[first] = 1 - pi[first]  # token 0's pairs all mirrored against a model that prefers them kept
    p_obs[first] = np.minimum(p_obs[first], 0.35)
    score = np.zeros(100)
    score[0] = 1.0  # the label-free prior ranks token 0 first
    lp, observed, null_min = max_t_log_pvalues(p_obs, A, 0.05, np.log(prior_weights(score, 0.5)[0]), 2000, rng)
    assert lp[0] <= np.log(0.01) and np.argmin(observed) == 0
    assert np.all(np.diff(null_min) >= 0)


def test_a_misspelt_embedder_is_an_error_not_a_skip():
    with pytest.raises(ConfigError, match="unknown embedder.*minilmm"):
        PreferenceFlipTrigger(embedders=("wordllama", "minilmm"))
