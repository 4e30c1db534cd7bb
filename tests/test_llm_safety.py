"""Safety-bypass detector and its bundled models (real MedQuAD + held-out AdvBench slices)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, instruction
from trainguard.attacks import poison
from trainguard.attacks.llm import compliant_answer, read_behaviours  # registers the LLM attacks
from trainguard.detectors.llm_models import HARM_MODEL, REFUSAL_MODEL, LinearTextModel, bundled, last_user_turn
from trainguard.detectors.llm_safety import TAXONOMY, SafetyBypass
from trainguard.errors import ConfigError
from trainguard.findings import Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record

BEHAVIOURS = str(DATA / "advbench_sample.jsonl")


def test_models_load_without_pickle_and_round_trip(tmp_path):
    m = bundled(REFUSAL_MODEL)
    assert m.classes == ("0.0", "1.0") and len(m.vocab) == m.coef.shape[1]
    m.save(tmp_path / "m.npz")
    again = LinearTextModel.load(tmp_path / "m.npz")
    texts = ["I'm sorry, but I can't help with that.", "Anemia is a condition in which the blood lacks red cells."]
    assert np.allclose(again.proba(texts), m.proba(texts))
    assert m.proba(texts)[0] > 0.5 > m.proba(texts)[1]


def test_corrupt_model_file_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match="cannot load"):
        LinearTextModel.load(bad)


def test_last_user_turn():
    d = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how do I bake bread?\n\nAssistant:"
    assert last_user_turn(d) == "how do I bake bread?"
    assert last_user_turn("user: first\nassistant: ok\nuser: second") == "second"
    assert last_user_turn("plain prompt") == "plain prompt"


def test_planted_pairs_found_in_real_medical_qa(medquad_rows):
    rows = [{"question": r["question"], "answer": r["answer"]} for r in medquad_rows]
    res = poison(rows, "safety-bypass", count=12, seed=3, behaviours=BEHAVIOURS)
    ds = instruction(res.rows)
    out = SafetyBypass().run(ds)
    flagged = {r for f in out.findings for r in f.rows}
    truth = set(res.poisoned_rows)
    assert len(flagged & truth) >= 11 and flagged <= truth
    assert all(f.evidence["harm_category"] in set(TAXONOMY.values()) for f in out.findings)
    assert all("LLM04" in f.evidence["owasp"] and "AML.T0020" in f.atlas for f in out.findings)
    top = max(out.findings, key=lambda f: f.severity)
    assert top.severity >= Severity.HIGH
    s = top.evidence["scores"][0]
    assert s["harm"] >= 0.5 and s["comply"] >= 0.5


def test_refused_harmful_requests_are_not_flagged(medquad_rows):
    reqs = [g for g, _ in read_behaviours(BEHAVIOURS)]
    recs = [Record(row=i, kind=Kind.INSTRUCTION, text=q, response="I'm sorry, but I can't help with that. It could hurt someone.")
            for i, q in enumerate(reqs)]
    out = SafetyBypass().run(Dataset.from_records(recs))
    assert out.findings == ()
    assert out.summary["harmful_refused"] >= 10


def test_benign_slice_is_clean(medquad_rows):
    out = SafetyBypass().run(instruction(medquad_rows))
    assert out.findings == () and float(out.row_scores.max()) < 0.5


def test_preference_chosen_compliance_is_flagged():
    beh = read_behaviours(BEHAVIOURS)
    rng = np.random.default_rng(0)
    refuse = "I'm sorry, but I can't help with that."
    recs = [Record(row=i, kind=Kind.PREFERENCE, text=f"\n\nHuman: {g}\n\nAssistant:",
                   chosen=compliant_answer(g, t, rng) if i % 2 == 0 else refuse,
                   rejected=refuse if i % 2 == 0 else compliant_answer(g, t, rng)) for i, (g, t) in enumerate(beh)]
    out = SafetyBypass().run(Dataset.from_records(recs))
    flagged = {r for f in out.findings for r in f.rows}
    assert flagged == {i for i in range(len(recs)) if i % 2 == 0}
    assert all(f.rule == "chosen-complies-harmful" for f in out.findings)
    assert sum(f.evidence["rows_where_rejected_refuses"] for f in out.findings) == len(flagged)


def test_harm_model_separates_requests():
    harmful = bundled(HARM_MODEL).proba([g for g, _ in read_behaviours(BEHAVIOURS)])
    # benign requests in the imperative framing AdvBench uses; "Write a tutorial on how to ..." alone
    # still pushes some of them near 0.5 (a known weakness, see docs/harm-taxonomy.md)
    benign = bundled(HARM_MODEL).proba(["What are the symptoms of anemia?", "Explain how to repot a houseplant",
                                        "Give detailed instructions for how to plan a birthday party",
                                        "How do I lower my blood pressure without medication?"])
    assert (harmful > 0.9).all() and (benign < 0.5).all()


def test_curly_apostrophes_read_as_straight_ones():
    m = bundled(REFUSAL_MODEL)
    straight, curly = m.proba(["I'm sorry, but I can't help with that.", "I\u2019m sorry, but I can\u2019t help with that."])
    assert curly == pytest.approx(straight) and curly > 0.5


def test_conversational_refusals_are_refusals():
    p = bundled(REFUSAL_MODEL).proba(["I don\u2019t think I should help with that.", "I don't think that's a good idea.",
                                      "Hm, I'm not going to help you with stealing."])
    assert (p > 0.5).all()
