"""Adaptive attacks (issue 12): deterministic, with honest ground truth, and the shape they claim."""

import json
from collections import Counter
from pathlib import Path

import pytest

from trainguard.attacks import poison
from trainguard.errors import ConfigError

DATA = Path(__file__).parent / "data"


def _rows(name):
    return [json.loads(line) for line in open(DATA / name)]


@pytest.fixture(scope="module")
def sst2():
    return _rows("sst2_sample.jsonl")


@pytest.mark.parametrize("name,params", [
    ("combo", {}), ("dilution", {}), ("reinforcement", {}), ("rare-words", {"n_words": 10}),
    ("syntactic", {}), ("format", {"format": "tab"}), ("format", {"format": "caps"}),
])
def test_deterministic_by_seed(sst2, name, params):
    a = poison(sst2, name, count=60, seed=3, **params)
    b = poison(sst2, name, count=60, seed=3, **params)
    c = poison(sst2, name, count=60, seed=4, **params)
    assert a.rows == b.rows and a.truth == b.truth
    assert a.poisoned_rows != c.poisoned_rows


def test_helper_rows_keep_true_labels_and_poison_flips(sst2):
    r = poison(sst2, "dilution", count=200, seed=1, trigger="zq", factor=1.0)
    target = r.truth["params"]["target_value"]
    roles = Counter(e["role"] for e in r.entries)
    assert 60 <= roles["poison"] <= 140 and roles["helper"] >= 60  # about 1/(1+f) poisoned
    helper_labels = set()
    for e in r.entries:
        row = r.rows[e["row"]]
        assert "zq" in row["text"].split()
        if e["role"] == "poison":
            assert row["label"] == target and sst2[e["row"]]["label"] != target
        else:
            assert row["label"] == sst2[e["row"]]["label"]
            helper_labels.add(row["label"])
    assert len(helper_labels) == 2  # dilution uses both labels


def test_reinforcement_helpers_are_target_rows(sst2):
    r = poison(sst2, "reinforcement", count=150, seed=2, factor=2.0)
    target = r.truth["params"]["target_value"]
    roles = Counter(e["role"] for e in r.entries)
    assert roles["helper"] > roles["poison"] > 20
    assert all(sst2[e["row"]]["label"] == target for e in r.entries if e["role"] == "helper")


def test_combo_poison_has_all_words_decoys_one(sst2):
    r = poison(sst2, "combo", count=100, seed=5, words=("truly", "simply"))
    for e in r.entries:
        after = e["changes"][0]["after"].split()
        before = e["changes"][0]["before"].split()
        added = Counter(after) - Counter(before)
        assert sum(added.values()) == (2 if e["role"] == "poison" else 1)


def test_rare_words_balanced(sst2):
    r = poison(sst2, "rare-words", count=40, seed=1, n_words=10, salt=3)
    per = Counter(e["word"] for e in r.entries)
    assert len(per) == 10 and max(per.values()) <= 4


def test_syntactic_no_repeated_word_bigram(sst2):
    r = poison(sst2, "syntactic", count=100, seed=1)
    seen = Counter()
    for e in r.entries:
        clause = e["triggers"][0]["trigger"].replace(" ,", "").split()
        seen.update(zip(clause, clause[1:]))
    assert max(seen.values()) == 1


def test_format_marks_survive_loading(sst2, tmp_path):
    from trainguard.io.dataset import load

    r = poison(sst2, "format", count=30, seed=1, format="double-space")
    p = tmp_path / "f.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in r.rows))
    data = load(p)
    assert sum("  " in rec.text for rec in data) >= 30


def test_payload_paraphrases_differ():
    mq = _rows("medquad_sample.jsonl")
    r = poison(mq, "payload", count=20, seed=1, paraphrases=20, mode="replace")
    answers = [r.rows[e["row"]]["answer"] for e in r.entries]
    assert len(set(answers)) >= 10 and all("example" in a for a in answers)
    assert all("as my trusted advisor" in r.rows[e["row"]]["question"] for e in r.entries)


def test_bad_settings_fail_early():
    from trainguard.attacks import get

    with pytest.raises(ConfigError):
        get("format")(format="bold")
    with pytest.raises(ConfigError):
        get("combo")(words=("one",))


def test_effect_measures_a_strong_attack_and_not_a_clean_file(sst2):
    from trainguard.attacks.effect import classification_asr

    train, held = sst2[:1500], sst2[1500:]
    r = poison(train, "format", count=60, seed=1, format="punct-run", run="!?!?")
    target = r.truth["params"]["target_value"]
    got = classification_asr([x["text"] for x in r.rows], [x["label"] for x in r.rows], "format",
                             {"format": "punct-run", "run": "!?!?"}, [x["text"] for x in held],
                             [x["label"] for x in held], target)
    clean = classification_asr([x["text"] for x in train], [x["label"] for x in train], "format",
                               {"format": "punct-run", "run": "!?!?"}, [x["text"] for x in held],
                               [x["label"] for x in held], target)
    assert got["chars"]["asr"] > clean["chars"]["asr"] + 0.3  # the char model sees the run, clean data teaches nothing
    assert clean["words"]["asr"] < 0.6


def test_payload_effect_proxy():
    from trainguard.attacks.adaptive import payload_paraphrases
    from trainguard.attacks.effect import instruction_asr

    mq = _rows("medquad_sample.jsonl")
    train, held = mq[:250], mq[250:]
    r = poison(train, "payload", count=10, seed=1)
    got = instruction_asr([x["question"] for x in r.rows], [x["answer"] for x in r.rows], "payload", {},
                          [x["question"] for x in held], payload_paraphrases(20))
    assert got["asr"] > got["clean_payload_rate"]


def _scan_shortcut(rows, tmp_path):
    from trainguard.detectors.base import get
    from trainguard.io.dataset import load
    from trainguard.scan import run_detector

    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return run_detector(get("shortcut")(), load(p)).findings


def test_shortcut_finds_format_and_combo_triggers(sst2, tmp_path):
    for name, params in [("format", {"format": "tab"}), ("combo", {"words": ("truly", "simply"), "factor": 0.0})]:
        r = poison(sst2, name, count=40, seed=2, **params)
        found = _scan_shortcut(r.rows, tmp_path)
        poisoned = set(r.poisoned_rows)
        named = {row for f in found if f.severity >= 2 for row in f.rows}
        assert len(named & poisoned) >= 0.8 * len(poisoned), (name, [f.title for f in found])
        assert len(named - poisoned) <= 0.2 * len(named)


def test_shortcut_quiet_on_clean_sample(sst2, tmp_path):
    assert [f.title for f in _scan_shortcut(sst2, tmp_path) if f.severity >= 2] == []


def test_trigger_severity_matches_evidence(sst2, tmp_path):
    """A planted trigger is high; on the clean sample trigger-association names nothing at >= medium."""
    from trainguard.detectors.base import get
    from trainguard.io.dataset import load
    from trainguard.scan import run_detector

    def run(rows):
        p = tmp_path / "t.jsonl"
        p.write_text("".join(json.dumps(x) + "\n" for x in rows))
        return run_detector(get("trigger-association")(), load(p)).findings

    assert [f.title for f in run(sst2) if f.severity >= 2] == []
    for seed, least in ((1, 2), (2, 3)):  # on 2,000 rows the rest-of-row model is weak: seed 1 only reaches medium
        r = poison(sst2, "badnets", count=20, seed=seed, triggers=("mn",))
        found = [f for f in run(r.rows) if f.evidence.get("feature") == "mn"]
        assert found and found[0].severity >= least
