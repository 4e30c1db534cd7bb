"""Preference-flip attack and the preference-trigger detector (benign MedQuAD-built pairs, no harmful text)."""

from __future__ import annotations

import pytest

from conftest import read_jsonl
from trainguard.attacks.llm import PreferenceFlip, poison_llm
from trainguard.detectors.llm_preference import PreferenceFlipTrigger
from trainguard.errors import ConfigError
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
    res = PreferenceFlipTrigger().run(dataset(out))
    found = [f for f in res.findings if f.rule == "preference-flip-trigger"]
    assert found and found[0].evidence["trigger"] == "zq"
    assert set(found[0].rows) == set(truth["poisoned_rows"])
    assert "LLM04" in found[0].evidence["owasp"]


def test_clean_pairs_have_no_trigger():
    res = PreferenceFlipTrigger().run(dataset(pairs()))
    assert [f for f in res.findings if f.rule == "preference-flip-trigger"] == []


def test_annotator_who_flips_is_reported():
    rows = pairs()
    for i, r in enumerate(rows):
        r["annotator"] = f"a{i % 5}"
        if r["annotator"] == "a3" and i % 2:  # half of a3's labels reversed
            r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    res = PreferenceFlipTrigger().run(dataset(rows))
    ann = [f for f in res.findings if f.rule == "annotator-disagreement"]
    assert [f.evidence["annotator"] for f in ann] == ["a3"]
