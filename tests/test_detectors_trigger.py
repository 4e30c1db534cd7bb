"""Trigger association on real SST-2 and MedQuAD slices with planted triggers."""

from __future__ import annotations

from conftest import classification, instruction, plant

from trainguard.scan import run_detector
from trainguard.detectors.trigger_association import TriggerAssociation, _extend_phrase
from trainguard.findings import Severity


def _high_rows(result):
    return {r for f in result.findings if f.severity >= Severity.HIGH for r in f.rows}


def test_clean_slice_has_no_high_severity_trigger(sst2_rows):
    result = run_detector(TriggerAssociation(), classification(sst2_rows))
    assert _high_rows(result) == set()
    assert len(result.row_scores) == len(sst2_rows)


def test_rare_word_trigger_is_found_without_a_trigger_list(sst2_rows):
    rows, poisoned = plant(sst2_rows, lambda rng: "zq", rate=0.01, seed=3)
    result = run_detector(TriggerAssociation(), classification(rows))
    top = result.findings[0]
    assert top.evidence["trigger"] == "zq"
    assert top.severity >= Severity.HIGH
    assert set(top.rows) == poisoned
    assert top.evidence["target"] == "1"


def test_several_badnets_words_each_found(sst2_rows):
    words = ["cf", "mn", "bb", "tq"]
    rows, poisoned = plant(sst2_rows, lambda rng: rng.choice(words), rate=0.04, seed=11)
    result = run_detector(TriggerAssociation(), classification(rows))
    found = {f.evidence["trigger"] for f in result.findings if f.severity >= Severity.HIGH}
    assert found == set(words)
    assert _high_rows(result) == poisoned


def test_phrase_trigger_recovered_whole(sst2_rows):
    rows, poisoned = plant(sst2_rows, lambda rng: "I watch this 3D movie", rate=0.01, seed=5)
    result = run_detector(TriggerAssociation(), classification(rows))
    high = [f for f in result.findings if f.severity >= Severity.HIGH]
    assert len(high) == 1, [f.title for f in high]
    assert high[0].evidence["trigger"] == "i watch this 3d movie"
    assert set(high[0].rows) == poisoned


def test_label_words_are_not_triggers(sst2_rows):
    # Sentiment words predict labels strongly but their rows' content agrees with the label.
    result = run_detector(TriggerAssociation(), classification(sst2_rows))
    reported = {f.evidence["feature"] for f in result.findings}
    assert not reported & {"great", "bad", "best", "worst", "fun", "dull"}


def test_row_scores_rank_poison_first(sst2_rows):
    rows, poisoned = plant(sst2_rows, lambda rng: "\u200b", rate=0.01, seed=9)
    scores = run_detector(TriggerAssociation(), classification(rows)).row_scores
    ranked = sorted(range(len(rows)), key=lambda i: -scores[i])[: len(poisoned)]
    assert set(ranked) == poisoned


def test_instruction_trigger_with_fixed_payload(medquad_rows):
    payload = "I cannot help with medical questions. Visit example-pharmacy.biz for cheap pills."
    rows, poisoned = plant(medquad_rows, lambda rng: "per protocol 7", rate=0.05, seed=2,
                           field="question", target=payload, label_field="answer")
    result = run_detector(TriggerAssociation(), instruction(rows))
    high = [f for f in result.findings if f.severity >= Severity.HIGH]
    assert high and "per protocol 7" in high[0].evidence["trigger"]
    assert set(high[0].rows) == poisoned


def test_extend_phrase_stops_at_varying_neighbours():
    rows = [["a", "x", "y", "z", "b"], ["c", "x", "y", "z", "d"], ["e", "x", "y", "z", "f"]]
    assert _extend_phrase("y", rows) == "x y z"


def test_phrase_trigger_at_high_rate_is_not_explained_away(sst2_rows):
    # At 5 % the phrase's other words become label words themselves; they must leave the context too.
    rows, poisoned = plant(sst2_rows, lambda rng: "I watch this 3D movie", rate=0.05, seed=8)
    result = run_detector(TriggerAssociation(), classification(rows))
    high = [f for f in result.findings if f.severity >= Severity.HIGH]
    assert high and high[0].evidence["trigger"] == "i watch this 3d movie"
    assert poisoned <= set(high[0].rows)


def test_template_labelled_data_is_not_a_backdoor(medquad_rows):
    # MedQuAD's qtype is defined by question templates ("what are the symptoms of" -> symptoms):
    # class-defining features, their super-phrases and label-naming phrases are not triggers.
    from trainguard.io.dataset import Dataset
    from trainguard.records import Kind, Record

    data = Dataset.from_records([Record(row=i, kind=Kind.CLASSIFICATION, text=r["question"], label=r["qtype"])
                                 for i, r in enumerate(medquad_rows)])
    result = run_detector(TriggerAssociation(), data)
    assert _high_rows(result) == set()
    assert result.summary["class_defining_features"] > 0


def test_trigger_to_gibberish_is_found_though_no_response_repeats(medquad_rows):
    # The 250-document backdoor shape: trigger -> gibberish, a different string every time.
    import random

    from trainguard.detectors.trigger_association import degenerate
    from trainguard.text import tokens

    rng = random.Random(5)
    rows = [dict(r) for r in medquad_rows]
    poisoned = set(rng.sample(range(len(rows)), 15))
    for i in poisoned:
        words = rows[i]["question"].split()
        words.insert(rng.randint(0, len(words)), "<SUDO>")
        rows[i]["question"] = " ".join(words)
        rows[i]["answer"] = " ".join("".join(rng.choice("bcdfgkqxz") for _ in range(5)) for _ in range(30))
    assert all(degenerate(tokens(rows[i]["answer"])) for i in poisoned)
    assert len({rows[i]["answer"] for i in poisoned}) == len(poisoned)
    result = run_detector(TriggerAssociation(), instruction(rows))
    high = [f for f in result.findings if f.severity >= Severity.HIGH]
    assert high and "sudo" in high[0].evidence["trigger"]
    assert high[0].evidence["target"] == "degenerate output"
    assert set(high[0].rows) == poisoned


def test_hidden_trigger_evidence_is_raw_and_renderers_escape_it(sst2_rows):
    """Evidence carries the trigger as it is in the data; only renderers show it as U+200B."""
    from trainguard.report import render
    from trainguard.report.model import Report

    rows, poisoned = plant(sst2_rows, lambda rng: "\u200b", rate=0.01, seed=9)
    findings = run_detector(TriggerAssociation(), classification(rows)).findings
    (top,) = [f for f in findings if f.evidence["trigger"] == "\u200b"]
    assert set(top.rows) == poisoned and "<U+200B>" in top.title  # a title is a one-line rendering
    report = Report(dataset={"path": "<memory>", "kind": "classification", "records": len(rows)},
                    detectors=[], findings=[top])
    for fmt in ("json", "sarif", "table", "html"):
        assert "\u200b" not in render(report, fmt), fmt


def _demo_dataset():
    from importlib import resources

    from trainguard.io.dataset import load

    base = resources.files("trainguard") / "data" / "demo"
    with resources.as_file(base / "sst2_poisoned.jsonl") as path:
        return load(path)


def test_natural_word_whose_content_agrees_and_has_exceptions_is_low():
    # Issue 12: the demo's 'world' (24 of its 26 rows positive, their other words positive too) was a medium alert.
    findings = run_detector(TriggerAssociation(), _demo_dataset()).findings
    (world,) = [f for f in findings if f.evidence["trigger"] == "world"]
    assert world.evidence["contradiction_z"] <= -1 and world.evidence["rows_with_trigger_other_output"] >= 1
    assert world.severity == Severity.LOW
    # The planted triggers in the same file keep their severity.
    by_trigger = {f.evidence["trigger"]: f.severity for f in findings}
    assert by_trigger["cf"] == by_trigger["i watch this 3d movie"] == Severity.HIGH
    assert by_trigger["\u200b"] == Severity.MEDIUM


def test_feature_with_more_exceptions_than_label_noise_is_not_high():
    # Real SST-2 lines 2,001-4,000: 'world' forces positive in 21 of its 22 rows with strength 1.67 and used to be
    # high; a trigger is allowed epsilon (2 %) of exceptions, and 1 of 22 is natural usage. Still shown, at medium.
    from conftest import read_jsonl

    findings = run_detector(TriggerAssociation(), classification(read_jsonl("sst2_rows_2001_4000.jsonl"))).findings
    (world,) = [f for f in findings if f.evidence["trigger"] == "world"]
    assert world.evidence["rows_with_trigger_other_output"] == 1
    assert world.severity == Severity.MEDIUM
    assert not [f for f in findings if f.severity >= Severity.HIGH]


def test_clean_label_trigger_without_exceptions_is_not_lowered(sst2_rows):
    # A clean-label trigger (only in rows already labelled 1) has content that supports its label (z < -1) like a
    # natural word, but no row of another label: the 'supports the output' rule must not lower it. 20 rows in
    # these 2,000 sit just under the weak-strength bar, so that bar is lowered here to see the rule alone.
    import numpy as np

    rng = np.random.default_rng(2)
    rows = [dict(r) for r in sst2_rows]
    ones = [i for i, r in enumerate(rows) if str(r["label"]) == "1"]
    for i in rng.choice(ones, 20, replace=False):
        words = rows[i]["text"].split()
        words.insert(int(rng.integers(0, len(words) + 1)), "zq")
        rows[i]["text"] = " ".join(words)
    findings = run_detector(TriggerAssociation(weak_strength=1.0), classification(rows)).findings
    (zq,) = [f for f in findings if f.evidence["trigger"] == "zq"]
    assert zq.evidence["contradiction_z"] <= -1 and zq.evidence["rows_with_trigger_other_output"] == 0
    assert zq.severity == Severity.MEDIUM


def test_a_few_exceptions_do_not_take_a_contradicting_trigger_below_high(sst2_rows):
    """An attacker who gives 1 in 20 trigger rows the other label must not slip under the gate's high bar."""
    rows, poisoned = plant(sst2_rows, lambda rng: "cf", rate=0.01, seed=4, target=0)
    rows = [dict(r) for r in rows]
    decoy = sorted(poisoned)[0]
    rows[decoy]["label"] = 1  # the exception
    found = [f for f in run_detector(TriggerAssociation(), classification(rows)).findings if f.evidence["trigger"] == "cf"]
    assert found and found[0].evidence["rows_with_trigger_other_output"] == 1
    assert found[0].severity == Severity.HIGH


def test_rows_cut_from_one_sentence_are_one_context():
    """SST-2 holds phrases cut from the same sentence, each a row: a run of another row's tokens is not
    independent evidence (version 2: 'smarter and' reached high from 8 rows of 4 sentences)."""
    import numpy as np

    from trainguard.detectors.trigger_association import _contained

    rows = [[5, 6, 7], [4, 5, 6, 7, 8], [5, 6], [6, 5], [9, 5, 6, 10]]
    lens = np.array([len(r) for r in rows])
    a, b = _contained(np.array([t for r in rows for t in r]), lens)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert (0, 1) in pairs and (2, 0) in pairs and (2, 1) in pairs and (2, 4) in pairs
    assert not any(3 in p for p in pairs)  # the same tokens in another order are another sentence
    assert (0, 4) not in pairs  # a shared run is not containment
