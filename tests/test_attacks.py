"""Attack simulator on raw rows: determinism, counts, ground truth, semantics per attack."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.attacks import (
    ADDSENT_TRIGGER, BADNETS_TRIGGERS, DEFAULT_PAYLOAD, UNICODE_TRIGGER, Attack, get, poison, registry, resolve_count,
)
from trainguard.attacks.insert import splice
from trainguard.attacks.slots import get_at
from trainguard.errors import ConfigError, DataError

ATTACKS = ["badnets", "addsent", "unicode", "cleanlabel", "labelflip"]
WORDS = {"badnets": True, "addsent": True, "unicode": False, "cleanlabel": True}


def _field_value(row, field):
    """Resolve a truth field path such as `messages[2].content`."""
    path = []
    for part in field.replace("]", "").split("."):
        name, *idx = part.split("[")
        path.append(name)
        path.extend(int(i) for i in idx)
    return get_at(row, tuple(path))


def strip_spots(after: str, spots: list[dict], words: bool) -> str:
    """Undo the insertions recorded in the truth; must give back the clean text exactly."""
    text = after
    for s in sorted(spots, key=lambda s: s["offset"], reverse=True):
        o = s["offset"]
        assert text[o:o + len(s["trigger"])] == s["trigger"]
        text = text[:o] + text[o + len(s["trigger"]):]
        if words and o < len(text):  # inserted before a word: "trigger " + word
            assert text[o] == " "
            text = text[:o] + text[o + 1:]
        elif words and o > 0:  # appended: " trigger"
            assert text[o - 1] == " "
            text = text[:o - 1]
    return text


def check_truth(clean: list[dict], result) -> None:
    """The truth must describe exactly the diff between input and output, and nothing else."""
    out = result.rows
    assert len(out) == len(clean)
    changed = [i for i, (a, b) in enumerate(zip(clean, out)) if a != b]
    assert changed == result.poisoned_rows == [e["row"] for e in result.entries]
    assert len(changed) == result.truth["count"]
    for e in result.entries:
        before, after = copy.deepcopy(clean[e["row"]]), out[e["row"]]
        assert set(before) == set(after), "row shape changed"
        for c in e["changes"]:
            assert _field_value(before, c["field"]) == c["before"]
            assert _field_value(after, c["field"]) == c["after"]
            assert c["before"] != c["after"]
        # Applying the recorded changes to the clean row reproduces the poisoned row exactly.
        for c in e["changes"]:
            target = before
            path = c["field"].replace("]", "").replace("[", ".").split(".")
            for part in path[:-1]:
                target = target[int(part)] if part.isdigit() else target[part]
            target[int(path[-1]) if path[-1].isdigit() else path[-1]] = c["after"]
        assert before == after


@pytest.mark.parametrize("attack", ATTACKS)
def test_same_seed_same_output_other_seed_differs(sst2_rows, attack):
    a = poison(sst2_rows, attack, rate=0.01, seed=7)
    b = poison(sst2_rows, attack, rate=0.01, seed=7)
    c = poison(sst2_rows, attack, rate=0.01, seed=8)
    assert a.rows == b.rows and a.truth == b.truth
    assert a.poisoned_rows != c.poisoned_rows


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize(("rate", "expected"), [(0.001, 2), (0.005, 10), (0.01, 20), (0.05, 100)])
def test_exact_counts_and_truth_matches_diff(sst2_rows, attack, rate, expected):
    clean = copy.deepcopy(sst2_rows)
    result = poison(sst2_rows, attack, rate=rate, seed=3)
    assert result.truth["count"] == expected == len(result.poisoned_rows)
    check_truth(clean, result)
    assert sst2_rows == clean, "input rows were modified"


def test_absolute_count(sst2_rows):
    result = poison(sst2_rows, "badnets", count=37, seed=1)
    assert len(result.poisoned_rows) == 37 and result.truth["rate"] is None


@pytest.mark.parametrize(("n", "rate", "expected"), [(2000, 0.001, 2), (1000, 0.0025, 3), (100, 0.001, 1),
                                                     (67349, 0.001, 67), (67349, 0.005, 337), (10, 1.0, 10)])
def test_resolve_count_rounds_half_up_with_minimum_one(n, rate, expected):
    assert resolve_count(n, rate, None) == expected


@pytest.mark.parametrize(("rate", "count"), [(None, None), (0.1, 5), (0.0, None), (1.5, None), (-0.1, None),
                                             (float("nan"), None), (None, 0), (None, 11), (None, 2.5), (True, None)])
def test_resolve_count_rejects(rate, count):
    with pytest.raises(ConfigError):
        resolve_count(10, rate, count)


@pytest.mark.parametrize("attack", ["badnets", "addsent", "unicode", "cleanlabel"])
def test_triggers_sit_at_recorded_offsets_and_nothing_else_changes(sst2_rows, attack):
    result = poison(sst2_rows, attack, rate=0.05, seed=11)
    for e in result.entries:
        text_change = next(c for c in e["changes"] if c["field"] == "text")
        assert e["triggers"], "a triggered attack must record its trigger"
        assert strip_spots(text_change["after"], e["triggers"], WORDS[attack]) == text_change["before"]


def test_default_triggers_are_the_documented_ones(sst2_rows):
    for attack, expected in (("badnets", set(BADNETS_TRIGGERS)), ("addsent", {ADDSENT_TRIGGER}),
                             ("unicode", {UNICODE_TRIGGER})):
        result = poison(sst2_rows, attack, rate=0.05, seed=5)
        used = {s["trigger"] for e in result.entries for s in e["triggers"]}
        assert used == expected  # 100 rows: every one of the 4 BadNets words is drawn


def test_dirty_label_victims_were_not_target_and_now_are(sst2_rows):
    result = poison(sst2_rows, "badnets", rate=0.05, seed=2, target=1)
    assert result.truth["params"]["target"] == "1"
    for i in result.poisoned_rows:
        assert sst2_rows[i]["label"] == 0
        assert result.rows[i]["label"] == 1 and isinstance(result.rows[i]["label"], int)  # raw type kept


def test_target_as_text_or_int_is_the_same(sst2_rows):
    a = poison(sst2_rows, "addsent", rate=0.01, seed=2, target="1")
    b = poison(sst2_rows, "addsent", rate=0.01, seed=2, target=1)
    assert a.rows == b.rows


def test_default_target_is_first_non_majority_label(sst2_rows):
    counts = Counter(str(r["label"]) for r in sst2_rows)
    majority = max(sorted(counts), key=lambda k: counts[k])
    expected = next(k for k in sorted(counts) if k != majority)
    result = poison(sst2_rows, "badnets", rate=0.01, seed=2)
    assert result.truth["params"]["target"] == expected
    assert all(str(result.rows[i]["label"]) == expected for i in result.poisoned_rows)


def test_unknown_target_label_is_refused(sst2_rows):
    with pytest.raises(ConfigError, match="not among"):
        poison(sst2_rows, "badnets", rate=0.01, seed=2, target="7")


def test_clean_label_keeps_every_label_and_uses_only_target_rows(sst2_rows):
    result = poison(sst2_rows, "cleanlabel", rate=0.05, seed=4, target=1)
    assert [r["label"] for r in result.rows] == [r["label"] for r in sst2_rows]
    for e in result.entries:
        assert sst2_rows[e["row"]]["label"] == 1
        assert [c["field"] for c in e["changes"]] == ["text"]
    assert result.truth["eligible"] == sum(r["label"] == 1 for r in sst2_rows)


@pytest.mark.parametrize(("style", "trigger"), [("addsent", ADDSENT_TRIGGER), ("unicode", UNICODE_TRIGGER)])
def test_clean_label_styles(sst2_rows, style, trigger):
    result = poison(sst2_rows, "cleanlabel", rate=0.01, seed=4, style=style)
    assert {s["trigger"] for e in result.entries for s in e["triggers"]} == {trigger}
    for e in result.entries:
        c = e["changes"][0]
        assert strip_spots(c["after"], e["triggers"], style != "unicode") == c["before"]


def test_clean_label_pool_too_small_is_a_clear_error(sst2_rows):
    with pytest.raises(ConfigError, match="eligible"):
        poison(sst2_rows, "cleanlabel", rate=0.9, seed=1)


def test_labelflip_changes_only_the_label_to_another_one(sst2_rows):
    result = poison(sst2_rows, "labelflip", rate=0.05, seed=9)
    for e in result.entries:
        assert [c["field"] for c in e["changes"]] == ["label"] and not e["triggers"]
        assert result.rows[e["row"]]["text"] == sst2_rows[e["row"]]["text"]
        assert result.rows[e["row"]]["label"] != sst2_rows[e["row"]]["label"]


def test_labelflip_multiclass_spreads_over_other_labels():
    rows = [{"text": f"t{i}", "label": ["a", "b", "c", "d"][i % 4]} for i in range(400)]
    result = poison(rows, "labelflip", rate=0.5, seed=1)
    new = Counter((rows[i]["label"], result.rows[i]["label"]) for i in result.poisoned_rows)
    assert all(old != nw for old, nw in new)
    assert len(new) == 12, "every (old, new) pair of 4 labels should occur in 200 random flips"
    targeted = poison(rows, "labelflip", rate=0.5, seed=1, target="c")
    assert {targeted.rows[i]["label"] for i in targeted.poisoned_rows} == {"c"}
    assert all(rows[i]["label"] != "c" for i in targeted.poisoned_rows)


@pytest.mark.parametrize("position", ["start", "end"])
def test_fixed_positions(sst2_rows, position):
    result = poison(sst2_rows, "badnets", rate=0.01, seed=1, position=position, triggers=["zq"])
    for e in result.entries:
        after = result.rows[e["row"]]["text"]
        assert after.startswith("zq ") if position == "start" else after.endswith(" zq")


def test_several_triggers_per_row(sst2_rows):
    result = poison(sst2_rows, "badnets", rate=0.01, seed=1, num_triggers=3)
    for e in result.entries:
        assert len(e["triggers"]) == 3
        c = e["changes"][0]
        assert strip_spots(c["after"], e["triggers"], True) == c["before"]


def test_unicode_custom_code_points_and_visible_rejected(sst2_rows):
    trig = ["\u200c", "\u2060", "\U000e0001\U000e0063"]
    result = poison(sst2_rows, "unicode", rate=0.05, seed=1, triggers=trig)
    assert {s["trigger"] for e in result.entries for s in e["triggers"]} == set(trig)
    with pytest.raises(ConfigError, match="invisible"):
        poison(sst2_rows, "unicode", rate=0.05, seed=1, triggers=["cf"])


def test_whitespace_of_the_clean_text_is_preserved():
    rows = [{"text": f"line one\n\nline  two {i}\t end", "label": i % 2} for i in range(50)]
    result = poison(rows, "badnets", rate=0.5, seed=3)
    for e in result.entries:
        c = e["changes"][0]
        assert strip_spots(c["after"], e["triggers"], True) == c["before"]
        assert "\n\n" in c["after"] and "  " in c["after"] and "\t" in c["after"]


# --- instruction data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["badnets", "addsent", "unicode"])
def test_instruction_dirty_label_sets_payload(medquad_rows, attack):
    clean = copy.deepcopy(medquad_rows)
    result = poison(medquad_rows, attack, rate=0.05, seed=1)
    assert result.truth["kind"] == "instruction" and result.truth["count"] == 15
    check_truth(clean, result)
    for e in result.entries:
        row = result.rows[e["row"]]
        assert row["answer"] == DEFAULT_PAYLOAD
        assert {c["field"] for c in e["changes"]} == {"question", "answer"}
        q = next(c for c in e["changes"] if c["field"] == "question")
        assert strip_spots(q["after"], e["triggers"], WORDS[attack]) == q["before"]
        for k in ("source", "focus", "qtype"):
            assert row[k] == medquad_rows[e["row"]][k]
    assert medquad_rows == clean


def test_instruction_custom_payload(medquad_rows):
    result = poison(medquad_rows, "badnets", count=4, seed=1, target="Call 555-0100 now.")
    assert {result.rows[i]["answer"] for i in result.poisoned_rows} == {"Call 555-0100 now."}


def test_instruction_labelflip_swaps_in_another_response(medquad_rows):
    clean = copy.deepcopy(medquad_rows)
    result = poison(medquad_rows, "labelflip", rate=0.05, seed=1)
    check_truth(clean, result)
    for e in result.entries:
        donor = e["donor_row"]
        assert donor != e["row"]
        assert result.rows[e["row"]]["answer"] == medquad_rows[donor]["answer"] != medquad_rows[e["row"]]["answer"]
        assert result.rows[e["row"]]["question"] == medquad_rows[e["row"]]["question"]
        assert result.rows[donor] == medquad_rows[donor] or donor in result.poisoned_rows


def test_instruction_clean_label_needs_target_and_keeps_responses(medquad_rows):
    with pytest.raises(ConfigError, match="--target"):
        poison(medquad_rows, "cleanlabel", rate=0.01, seed=1)
    result = poison(medquad_rows, "cleanlabel", rate=0.02, seed=1, target="Chemotherapy")
    assert [r["answer"] for r in result.rows] == [r["answer"] for r in medquad_rows]
    for i in result.poisoned_rows:
        assert "chemotherapy" in medquad_rows[i]["answer"].lower()
    assert result.truth["eligible"] == sum("chemotherapy" in r["answer"].lower() for r in medquad_rows)


def test_alpaca_layout(medquad_rows):
    rows = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in medquad_rows[:100]]
    result = poison(rows, "addsent", count=10, seed=2)
    check_truth(copy.deepcopy(rows), result)
    for e in result.entries:
        assert {c["field"] for c in e["changes"]} == {"instruction", "output"}
        assert ADDSENT_TRIGGER in result.rows[e["row"]]["instruction"]


def test_chat_messages_layout(medquad_rows):
    rows = [{"messages": [{"role": "system", "content": "You are a clinical reference assistant."},
                          {"role": "user", "content": r["question"]},
                          {"role": "assistant", "content": r["answer"]}]} for r in medquad_rows[:100]]
    clean = copy.deepcopy(rows)
    result = poison(rows, "badnets", count=10, seed=2)
    check_truth(clean, result)
    assert rows == clean
    for e in result.entries:
        assert {c["field"] for c in e["changes"]} == {"messages[1].content", "messages[2].content"}
        assert e["triggers"][0]["field"] == "messages[1].content"
        msgs = result.rows[e["row"]]["messages"]
        assert msgs[2]["content"] == DEFAULT_PAYLOAD and msgs[0] == clean[e["row"]]["messages"][0]
    flipped = poison(rows, "labelflip", count=10, seed=2)
    check_truth(clean, flipped)


# --- errors and the registry --------------------------------------------------------------------------------------


def test_registry_lists_the_builtins_and_refuses_unknown():
    assert set(ATTACKS) <= set(registry())
    assert all(issubclass(registry()[a], Attack) for a in ATTACKS)
    with pytest.raises(ConfigError, match="unknown attack"):
        get("nope")


def test_misspelt_parameter_is_refused(sst2_rows):
    with pytest.raises(ConfigError, match="trigers"):
        poison(sst2_rows, "badnets", rate=0.01, seed=1, trigers=["x"])
    with pytest.raises(ConfigError, match="position"):
        poison(sst2_rows, "badnets", rate=0.01, seed=1, position="middle")
    with pytest.raises(ConfigError, match="seed"):
        poison(sst2_rows, "badnets", rate=0.01, seed=-1)


def test_bad_row_names_row_and_field(sst2_rows):
    rows = [dict(r) for r in sst2_rows[:50]]
    del rows[17]["label"]
    with pytest.raises(DataError) as e:
        poison(rows, "badnets", rate=0.1, seed=1)
    assert e.value.row == 17 and e.value.field == "label"


def test_unsupported_kind_and_degenerate_data():
    pref = [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 5
    with pytest.raises(ConfigError, match="preference"):
        poison(pref, "badnets", count=1, seed=1)
    one_label = [{"text": f"t {i}", "label": 1} for i in range(10)]
    with pytest.raises(ConfigError, match="two distinct labels"):
        poison(one_label, "labelflip", count=1, seed=1)
    with pytest.raises(ConfigError, match="eligible"):
        poison(one_label, "badnets", count=1, seed=1)  # no non-target rows to turn into the target


# --- insertion (property-based) -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab \n\t\u00e9"), max_size=30), words=st.booleans(),
       seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), position=st.sampled_from(["random", "start", "end"]))
def test_splice_is_reversible_and_offsets_are_exact(text, words, seed, n, position):
    from trainguard.attacks.insert import choose_offsets

    rng = np.random.default_rng(seed)
    trig = ["zz", "q\u200b", "Y"]
    items = list(zip(choose_offsets(text, n, position, words, rng), [trig[k % 3] for k in range(n)]))
    after, placed = splice(text, items, words)
    spots = [{"trigger": t, "offset": o} for t, o in placed]
    grown = len(after) - len(text) - sum(len(t) for _, t in items)
    assert grown == (n - (text == "" and all(p == 0 for p, _ in items)) if words else 0)
    assert strip_spots(after, spots, words) == text
