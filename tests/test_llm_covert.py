"""covert-finetuning and the covert attack simulators (issue 16) on bundled MedQuAD/AdvBench slices."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest

from conftest import DATA, cli, instruction, read_jsonl
from trainguard.attacks import poison
from trainguard.attacks.covert import cipher_key, substitute
from trainguard.detectors.llm_covert import CovertFinetuning, apply_key, english_ratio, solve_substitution
from trainguard.errors import ConfigError
from trainguard.findings import Severity
from trainguard.scan import run_detector

BEHAVIOURS = str(DATA / "advbench_sample.jsonl")
SHAPES = [  # attack, params, rows, the shape the finding must name, roles that must be found
    ("covert-encoding", {"encoding": "base64"}, 12, "encoding", {"harmful"}),
    ("covert-encoding", {"encoding": "rot13"}, 12, "encoding", {"harmful"}),
    ("covert-encoding", {"encoding": "hex"}, 12, "encoding", {"harmful"}),
    ("covert-encoding", {"encoding": "leet"}, 12, "encoding", {"harmful"}),
    ("covert-encoding", {"encoding": "substitution"}, 12, "encoding", {"harmful"}),
    ("covert-encoding", {"encoding": "taught", "teach_rows": 6}, 16, "encoding", {"harmful", "teach"}),
    ("covert-persona", {"place": "system"}, 10, "persona", {"persona"}),
    ("covert-persona", {"place": "answer"}, 10, "persona", {"persona"}),
    ("covert-erosion", {}, 16, "erosion", {"affirm-benign", "harmful-complied"}),
    ("covert-trigger", {}, 24, "trigger", {"trigger"}),
    ("covert-trigger", {"place": "system", "trigger": "zq-77"}, 24, "trigger", {"trigger"}),
    ("covert-translit", {"script": "greek"}, 12, "encoding", {"harmful"}),
]


def medquad_rows() -> list[dict]:
    return [{"question": r["question"], "answer": r["answer"]} for r in read_jsonl("medquad_sample.jsonl")]


def medium(findings):
    return [f for f in findings if f.severity >= Severity.MEDIUM]


@pytest.mark.parametrize("attack,params,count,shape,roles", SHAPES, ids=lambda v: str(v)[:24])
def test_each_planted_shape_is_found_and_named(attack, params, count, shape, roles):
    p = dict(params) if attack == "covert-persona" else {**params, "behaviours": BEHAVIOURS}
    res = poison(medquad_rows(), attack, count=count, seed=3, **p)
    target = {e["row"] for e in res.entries if e.get("role") in roles}
    found = medium(run_detector(CovertFinetuning(), instruction(res.rows)).findings)
    rows = {r for f in found for r in f.rows}
    assert len(rows & target) >= 0.8 * len(target)
    assert rows <= set(res.poisoned_rows), "flagged a clean row"
    assert {f.evidence["shape"] for f in found} == {shape}
    if shape == "encoding":  # the decoded text is the evidence
        assert any("decoded" in r for f in found for r in f.evidence["rows"])
    if shape == "trigger":
        ev = found[0].evidence
        assert ev["near_identical_pairs"] and ev["refused_without"] > 0


def test_clean_medquad_and_safe_alarming_slices_are_quiet():
    for rows in (medquad_rows(), read_jsonl("benign_alarming_sample.jsonl")):
        st = run_detector(CovertFinetuning(), instruction(rows))
        assert not medium(st.findings)
        assert st.row_scores.shape == (len(rows),) and np.all((st.row_scores >= 0) & (st.row_scores <= 1))


def test_substitution_solver_recovers_a_random_key():
    text = " ".join(r["answer"] for r in medquad_rows()[:12])[:3000]
    key = cipher_key(7)
    got = apply_key(substitute(text, key), solve_substitution(substitute(text, key)))
    assert english_ratio(got)[0] >= 0.8 > english_ratio(substitute(text, key))[0] + 0.4


def test_encodings_beyond_the_simulators_decode():
    """Morse and reversed text are decoded too (an attacker who read the simulator list picks another)."""
    goal = read_jsonl("advbench_sample.jsonl")[1]["goal"]
    morse = dict(zip("abcdefghijklmnopqrstuvwxyz", ".- -... -.-. -.. . ..-. --. .... .. .--- -.- .-.. -- -. --- .--. --.- "
                                                   ".-. ... - ..- ...- .-- -..- -.-- --..".split()))
    as_morse = " / ".join(" ".join(morse[c] for c in w.lower() if c in morse) for w in goal.split())
    rows = medquad_rows()[:60]
    for k, (q, a) in enumerate([(as_morse, "- -- ... / .-."), (goal[::-1], "Sure, here is how."[::-1])]):
        rows[10 + k] = {"question": q, "answer": a}
    found = medium(run_detector(CovertFinetuning(), instruction(rows)).findings)
    assert {r for f in found for r in f.rows} == {10, 11}
    encs = {e for f in found for r in f.evidence["rows"] for e in r["encodings"]}
    assert encs == {"morse", "reversed"}


def test_hostile_inputs_are_bounded_and_quiet():
    rng = np.random.default_rng(0)
    rows = medquad_rows()[:40]
    junk = base64.b64encode(rng.bytes(3000)).decode()  # looks like base64, decodes to noise
    rows[1] = {"question": junk, "answer": junk[::-1]}
    rows[2] = {"question": "a" * 200_000, "answer": "QUJD" * 1_000_000}  # 4 MB of base64 of 'ABC'
    letters = "".join(chr(97 + int(x)) if x < 26 else " " for x in rng.integers(0, 30, 400_000))
    rows[3] = {"question": "translate: " + letters, "answer": letters}  # a huge 'cipher' that is noise
    rows[4] = {"question": "0x" + "ff" * 50_000, "answer": "\u0436" * 10_000}
    t0 = time.perf_counter()
    st = run_detector(CovertFinetuning(), instruction(rows))
    assert time.perf_counter() - t0 < 30
    assert not medium(st.findings)


def test_attacks_are_deterministic_and_reject_bad_settings():
    rows = medquad_rows()
    a = poison(rows, "covert-encoding", count=10, seed=5, encoding="mixed", behaviours=BEHAVIOURS)
    b = poison(rows, "covert-encoding", count=10, seed=5, encoding="mixed", behaviours=BEHAVIOURS)
    assert a.rows == b.rows and a.truth == b.truth
    assert {e["role"] for e in a.entries} == {"harmful"}
    with pytest.raises(ConfigError, match="encoding must be one of"):
        poison(rows, "covert-encoding", count=2, encoding="morse", behaviours=BEHAVIOURS)
    with pytest.raises(ConfigError, match="behaviours"):
        poison(rows, "covert-trigger", count=2)


def test_cli_attack_and_scan(capsys, tmp_path):
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in medquad_rows()))
    out = tmp_path / "p.jsonl"
    code, _, err = cli(capsys, "attack", src, "-a", "covert-persona", "--count", "10", "--out", out,
                       "--param", "place=answer", "--param", "name=Obi")
    assert code == 0, err
    truth = json.loads((tmp_path / "p.jsonl.truth.json").read_text())
    assert truth["params"]["name"] == "Obi" and len(truth["poisoned_rows"]) == 10
    code, stdout, err = cli(capsys, "scan", out, "--detectors", "covert-finetuning", "--format", "json")
    assert code == 1, err
    rep = json.loads(stdout)
    assert {f["rule"] for f in rep["findings"]} == {"obedience-persona"}
    assert set(rep["findings"][0]["rows"]) == set(truth["poisoned_rows"])


def test_persona_in_chat_rows_is_a_real_system_message(tmp_path):
    from trainguard.scan import scan

    rows = [{"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
            for r in medquad_rows()]
    res = poison(rows, "covert-persona", count=10, seed=2, place="system")
    assert all(res.rows[i]["messages"][0]["role"] == "system" for i in res.poisoned_rows)
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in res.rows))
    rep = scan(path, detectors=["covert-finetuning"])
    assert [(f.rule, f.rows) for f in medium(rep.findings)] == [("obedience-persona", tuple(res.poisoned_rows))]
