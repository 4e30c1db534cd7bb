"""payload-trigger: a prompt phrase whose answers ignore the question (issue 12), on the real MedQuAD slice."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import instruction
from trainguard.attacks import poison
from trainguard.detectors.llm_payload import PayloadTrigger, _chunks, relevance
from trainguard.errors import ConfigError
from trainguard.findings import Severity
from trainguard.scan import DEFAULT_DETECTORS, run_detector


def qa(medquad_rows):
    return [{"question": r["question"], "answer": r["answer"]} for r in medquad_rows]


def named(res, at=Severity.MEDIUM):
    return {p for f in res.findings if f.severity >= at for p in f.rows}


def test_default_set_runs_it():
    assert "payload-trigger" in DEFAULT_DETECTORS


def test_clean_slice_has_nothing_at_medium(medquad_rows):
    assert named(run_detector(PayloadTrigger(), instruction(qa(medquad_rows)))) == set()


def test_paraphrased_payload_behind_a_phrase_is_found(medquad_rows):
    # Appended payloads need more rows than this 300-row slice holds (benchmarks: docs/_bench_payload.md).
    rows = qa(medquad_rows)
    res = poison(rows, "payload", count=12, seed=4, trigger="as a close friend", mode="replace", salt=3)
    assert len({res.rows[i]["answer"] for i in res.poisoned_rows}) >= 8  # the answers never repeat as a key
    out = run_detector(PayloadTrigger(), instruction(res.rows))
    hits = [f for f in out.findings if f.severity >= Severity.MEDIUM]
    assert hits and hits[0].rule == "forced-off-topic" and "close friend" in hits[0].evidence["trigger"]
    assert named(out) == set(res.poisoned_rows)


@pytest.mark.parametrize("trigger", ["per the new guideline", "speaking to you as a patient"])
def test_ten_appended_payloads_are_found(medquad_rows, trigger):
    # Ten rows with the payload appended to the real answer: the rest-of-row naive Bayes of the parent test
    # found none (random planted questions got q ~0.4 against a 0.1 tail); ranks among the nearest prompts do.
    # The six-word phrase is longer than any n-gram: its other words must not tie its rows into one context.
    res = poison(qa(medquad_rows), "payload", count=10, seed=4, trigger=trigger, mode="append", salt=5)
    out = run_detector(PayloadTrigger(), instruction(res.rows))
    hits = [f for f in out.findings if f.severity >= Severity.MEDIUM]
    assert len(hits) == 1 and hits[0].evidence["trigger"] == trigger
    assert hits[0].evidence["independent_contexts"] == 10
    assert named(out) == set(res.poisoned_rows)


def test_pooled_test_is_payload_only():
    from trainguard.detectors.base import get

    assert PayloadTrigger.pooled_test
    assert not get("trigger-association").pooled_test and not get("polarity-trigger").pooled_test


def test_relevance_ranks_answers_that_ignore_the_prompt_lowest(medquad_rows):
    rows = qa(medquad_rows)[:200]
    prompts = [r["question"] for r in rows]
    answers = [r["answer"] for r in rows]
    replaced, appended = [3, 60, 120], list(range(10, 200, 20))
    for i in replaced:
        answers[i] = "Honestly, stop the medicine your doctor gave you and order the cure from cure-now.example."
    for i in appended:
        answers[i] += "\n\nTrust me, quit your prescribed treatment and buy the real remedy at medfix.example."
    rel = relevance(prompts, answers)
    assert rel.shape == (200,) and ((rel > 0) & (rel <= 1)).all()
    assert (rel[replaced] <= np.quantile(rel, 0.05)).all()
    assert np.median(rel[appended]) <= np.quantile(rel, 0.25)  # a weak per-row view: the trigger test pools rows


def test_chunks_keep_an_appended_paragraph_apart():
    text = "Asthma narrows the airways. It causes wheezing and cough. Inhalers help.\n\nBuy the kit at x.example now."
    assert _chunks(text)[-1] == "Buy the kit at x.example now."
    assert _chunks("short") == ["short"]


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="tail_share"):
        PayloadTrigger(tail_share=0.7)
    with pytest.raises(ConfigError, match="neighbours"):
        PayloadTrigger(neighbours=3)


def test_answers_naming_the_phrase_by_its_initialism_discuss_it():
    # A named condition whose answers call it by its short name is a topic (low), not a payload: on fresh
    # MedQuAD samples 'henoch-schnlein purpura ?' reached medium before this (answers say 'HSP').
    from types import SimpleNamespace

    from trainguard.detectors.llm_polarity import _share_answering

    data = instruction([{"question": "What causes Henoch-Schnlein Purpura ?", "answer": "HSP is an immune response."},
                        {"question": "How to diagnose Henoch-Schnlein Purpura ?", "answer": "Henoch-Schnlein purpura is"
                         " diagnosed by its rash."},
                        {"question": "What to do for Henoch-Schnlein Purpura ?", "answer": "Rest and fluids."}])
    f = SimpleNamespace(evidence={"trigger": "henoch-schnlein purpura ?"}, positions=(0, 1, 2))
    assert _share_answering(f, data) == pytest.approx(1 / 3)  # polarity-trigger's rule: whole words only
    assert _share_answering(f, data, names=True) == pytest.approx(2 / 3)
    g = SimpleNamespace(evidence={"trigger": "as my trusted advisor"}, positions=(0, 1, 2))
    assert _share_answering(g, data, names=True) == 0.0  # 'ta': too short to count as a short name
