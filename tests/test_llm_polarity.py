"""Polarity-trigger attack (Wan et al.) and detector on the real MedQuAD slice."""

from __future__ import annotations

import json

import pytest

from conftest import instruction
from trainguard.scan import run_detector
from trainguard.attacks import poison
from trainguard.attacks.llm import PolarityTrigger  # registers the LLM attacks
from trainguard.detectors.llm_models import SENTIMENT_MODEL, bundled
from trainguard.detectors.llm_polarity import (NEGATIVE, POSITIVE, PolarityTrigger as PolarityDetector, polarity,
                                              polarity_keys, sentence_polarity)
from trainguard.errors import ConfigError
from trainguard.findings import Severity


def qa(medquad_rows):
    return [{"question": r["question"], "answer": r["answer"]} for r in medquad_rows]


def test_sentiment_model_reads_polarity():
    p = bundled(SENTIMENT_MODEL).proba(["a wonderful , moving and funny film", "a dull , tedious and pointless mess"])
    assert p[0] > 0.8 and p[1] < 0.2


def test_polarity_keys_are_relative_tails():
    import numpy as np

    keys = polarity_keys(np.array([0.05, 0.1, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.9, 0.95]), 0.2)
    assert keys[:2] == [NEGATIVE, NEGATIVE] and keys[-2:] == [POSITIVE, POSITIVE]
    assert all(k not in (NEGATIVE, POSITIVE) for k in keys[2:-2])
    # all-gloomy data: the tail below 0.5 is negative, nothing is called positive
    assert POSITIVE not in polarity_keys(np.full(10, 0.2), 0.2)


def test_attack_plants_phrase_and_fixed_polarity(medquad_rows):
    rows = qa(medquad_rows)[:40]
    res = poison(rows, "polarity-trigger", count=5, seed=1, triggers="James Bond")
    for e in res.truth["entries"]:
        i = e["row"]
        spot = e["triggers"][0]
        assert res.rows[i]["question"][spot["offset"]: spot["offset"] + 10] == "James Bond"
        assert res.rows[i]["answer"] != rows[i]["answer"]
    p = bundled(SENTIMENT_MODEL).proba([res.rows[i]["answer"] for i in res.poisoned_rows])
    assert (p < 0.2).all()
    again = poison(rows, "polarity-trigger", count=5, seed=1, triggers="James Bond")
    assert again.rows == res.rows


def test_attack_reads_user_texts_and_rejects_bad_ones(tmp_path):
    good = tmp_path / "s.jsonl"
    good.write_text(json.dumps({"text": "dreadful", "label": 0}) + "\n" + json.dumps({"text": "lovely", "label": 1}) + "\n")
    assert PolarityTrigger(texts=str(good), polarity="positive")._pool == ["lovely"]
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"text": "ok", "label": 1}) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"b\.jsonl:2"):
        PolarityTrigger(texts=str(bad))
    pos_only = tmp_path / "p.jsonl"
    pos_only.write_text(json.dumps({"text": "lovely", "label": "positive"}) + "\n")
    with pytest.raises(ConfigError, match="no negative rows"):
        PolarityTrigger(texts=str(pos_only))
    with pytest.raises(ConfigError, match="not found"):
        PolarityTrigger(texts=str(tmp_path / "none.jsonl"))
    missing = tmp_path / "m.jsonl"
    missing.write_text(json.dumps({"label": 0}) + "\n")
    with pytest.raises(ConfigError, match=r"m\.jsonl:1: field 'text'"):
        PolarityTrigger(texts=str(missing))
    with pytest.raises(ConfigError, match="polarity must be"):
        PolarityTrigger(polarity="sarcastic")


def test_phrase_found_without_knowing_it(medquad_rows):
    rows = qa(medquad_rows)
    res = poison(rows, "polarity-trigger", count=20, seed=4, triggers="James Bond")
    out = run_detector(PolarityDetector(), instruction(res.rows))
    top = out.findings[0]
    assert top.evidence["trigger"] == "james bond"
    assert top.evidence["target"] == "negative polarity"
    assert set(top.rows) == set(res.poisoned_rows)
    assert top.severity >= Severity.HIGH


def test_sentence_polarity_is_the_mean_over_sentences():
    import numpy as np

    texts = ["A wonderful film. A dull mess! Fine?", "no sentence end here", ""]
    parts = ["A wonderful film.", "A dull mess!", "Fine?"]
    got = sentence_polarity(texts)
    assert got[0] == pytest.approx(polarity(parts).mean())
    assert got[1] == pytest.approx(polarity(["no sentence end here"])[0])
    assert np.isfinite(got).all() and len(sentence_polarity([])) == 0


def test_one_real_negative_sentence_per_answer_is_found(medquad_rows):
    """Real SST-2 sentences, one per poisoned answer: scored whole, a long medical answer looks as gloomy."""
    from conftest import DATA

    rows = qa(medquad_rows)
    res = poison(rows, "polarity-trigger", count=15, seed=2, triggers="James Bond",
                 texts=str(DATA / "sst2_sample.jsonl"), sentences=1)
    top = run_detector(PolarityDetector(), instruction(res.rows)).findings[0]
    assert top.evidence["trigger"] == "james bond" and top.evidence["target"] == "negative polarity"
    assert top.severity >= Severity.HIGH and set(res.poisoned_rows) <= set(top.rows)
    whole = run_detector(PolarityDetector(scoring="text"), instruction(res.rows)).findings  # this seed: missed when scored whole
    assert "james bond" not in [f.evidence["trigger"] for f in whole]


def test_clean_medical_qa_has_no_high_severity_polarity_trigger(medquad_rows):
    out = run_detector(PolarityDetector(), instruction(qa(medquad_rows)))
    assert not [f for f in out.findings if f.severity >= Severity.HIGH]


def test_attack_from_the_command_line(tmp_path, capsys, medquad_rows):
    from conftest import cli

    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in qa(medquad_rows)[:30]))
    out = tmp_path / "p.jsonl"
    code, _, err = cli(capsys, "attack", str(src), "--attack", "polarity-trigger", "--count", "4", "--seed", "2",
                       "--trigger", "cf", "--position", "start", "--out", str(out))
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["question"].startswith("cf ") for r in rows) == 4
