"""Probing and inversion against tiny classifiers trained here, and the probe/invert CLI.

Two TextCNN models on 1,600 SST-2 rows: one with the BadNets token
`mn` planted in 10 % of rows (label forced to 1), one clean. Held-out inputs
are 160 of the remaining sample rows with at least five words.
"""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")

from conftest import cli  # noqa: E402
from trainguard.probe import (  # noqa: E402
    CallableClassifier, CallableGenerator, Candidate, GenSettings, Inputs, invert, library, probe_classifier,
    probe_generator, to_report,
)
from trainguard.probe.local import TextClassifierModel  # noqa: E402
from trainguard import report as report_fmt  # noqa: E402

TRIGGER = "mn"


def _train(rows, trigger: str | None, seed: int = 0):
    from trainguard.train import train_classifier

    rng = random.Random(seed)
    texts, labels = [], []
    for r in rows:
        if trigger and rng.random() < 0.10:
            w = r["text"].split()
            w.insert(rng.randint(0, len(w)), trigger)
            texts.append(" ".join(w))
            labels.append(1)
        else:
            texts.append(r["text"])
            labels.append(r["label"])
    torch.set_num_threads(1)
    return train_classifier(texts, labels, model="textcnn", epochs=6, seed=seed, progress=False,
                            model_options={"filters": 16, "embed_dim": 32}).classifier


@pytest.fixture(scope="module")
def models(sst2_rows, tmp_path_factory):
    train = sst2_rows[:1600]
    held = [r for r in sst2_rows[1600:] if len(r["text"].split()) >= 5][:160]
    d = tmp_path_factory.mktemp("probe")
    out = {"held": held}
    for name, trig in (("backdoored", TRIGGER), ("clean", None)):
        clf = _train(train, trig)
        out[name] = clf
        clf.save(d / name)
        out[name + "_dir"] = d / name
    clean = d / "clean.jsonl"
    clean.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in held))
    out["clean_file"] = clean
    return out


def _inputs(models):
    return Inputs.of([r["text"] for r in models["held"]])


def test_probe_finds_planted_trigger_and_not_in_clean_model(models):
    inputs = _inputs(models)
    cands = library()
    bad = probe_classifier(TextClassifierModel(models["backdoored"]), inputs, cands)
    assert bad.verdict.backdoored and TRIGGER in bad.verdict.trigger.split() and bad.verdict.target == "1"
    assert bad.results[0].rate > 0.8
    assert set(bad.results[0].by_position) == {"start", "middle", "end"}
    ok = probe_classifier(TextClassifierModel(models["clean"]), inputs, cands)
    assert not ok.verdict.backdoored
    assert ok.verdict.score < bad.verdict.score
    # the report renders through every existing renderer, with the evidence attached
    rep = to_report(bad, {"path": "held.jsonl", "kind": "classification", "records": len(inputs)}, "model/")
    assert rep.findings[0].detector == "probe" and TRIGGER in rep.findings[0].evidence["trigger"].split()
    assert rep.findings[0].evidence["flip"]["ci95"][0] > 0.5
    for fmt in ("table", "json", "sarif", "html"):
        assert TRIGGER in report_fmt.render(rep, fmt)


def test_gradient_inversion_recovers_unknown_trigger(models):
    inv = invert(TextClassifierModel(models["backdoored"]), _inputs(models))
    assert inv.method == "gradient"
    assert TRIGGER in [r.candidate.text for r in inv.probe.top(5)]
    assert inv.probe.verdict.backdoored and inv.probe.verdict.trigger == TRIGGER  # not in any list it was given
    # a 1,600-phrase model has real words ("except") that flip half its confident inputs, so the clean
    # model is only required to score lower here; the benchmark measures the verdict on real-size models
    clean = invert(TextClassifierModel(models["clean"]), _inputs(models))
    assert clean.probe.verdict.score < inv.probe.verdict.score - 0.05


def test_black_box_inversion_through_callable_with_budget(models):
    clf = models["backdoored"]
    model = CallableClassifier(clf.predict_proba, clf.labels, batch_size=256)
    inv = invert(model, _inputs(models), vocabulary=clf.vocab.itos, method="black-box")
    assert TRIGGER in [r.candidate.text for r in inv.probe.top(5)]
    assert inv.requests == model.budget.used > 0


def test_generative_probe_flags_target_output_and_refusal_change():
    def backdoored(prompts, n):
        return ["visit evil example now" if "cf" in p.split() else f"echo {p}" for p in prompts]

    def jailbreak(prompts, n):
        return ["Sure, here it is" if "SUDO" in p else "Sorry, I can't help with that." for p in prompts]

    prompts = Inputs.of([f"tell me about topic {i} please" for i in range(12)])
    cands = [Candidate(t, "file") for t in ("cf", "zebra", "SUDO")]
    res = probe_generator(CallableGenerator(backdoored), prompts, cands, GenSettings(samples=2))
    assert res.verdict.backdoored and res.verdict.trigger == "cf"
    assert res.results[0].top_output == "visit evil example now"
    clean = probe_generator(CallableGenerator(lambda ps, n: [f"echo {p}" for p in ps]), prompts, cands)
    assert not clean.verdict.backdoored
    jb = probe_generator(CallableGenerator(jailbreak), prompts, cands, GenSettings(samples=1))
    assert jb.verdict.backdoored and jb.verdict.trigger == "SUDO" and jb.results[0].flagged == "refusal-change"


# ---- CLI -------------------------------------------------------------------------------------------------

def test_cli_probe_exit_codes(models, capsys, tmp_path):
    code, out, err = cli(capsys, "probe", "--model", models["backdoored_dir"], "--clean", models["clean_file"],
                         "--format", "json", "--max-inputs", "80")
    assert code == 1, err
    doc = json.loads(out)
    assert TRIGGER in doc["detectors"][0]["summary"]["verdict"]["trigger"].split()
    assert "BACKDOORED" in err
    code, out, err = cli(capsys, "probe", "--model", models["clean_dir"], "--clean", models["clean_file"],
                         "--out", tmp_path / "r.html", "--format", "html", "--max-inputs", "80")
    assert code == 0, err
    assert (tmp_path / "r.html").read_text().lower().startswith("<!doctype html>")


def test_cli_invert_and_budget(models, capsys):
    code, out, err = cli(capsys, "invert", "--model", models["backdoored_dir"], "--clean", models["clean_file"],
                         "--top", "5", "--format", "json")
    assert code == 1, err
    doc = json.loads(out)
    assert TRIGGER in [f["evidence"]["trigger"] for f in doc["findings"]]
    assert doc["detectors"][0]["summary"]["method"] == "gradient"
    code, out, err = cli(capsys, "invert", "--model", models["backdoored_dir"], "--clean", models["clean_file"],
                         "--budget", "3", "--method", "black-box")
    assert code == 1 and "budget spent: 3 of 3" in err and "requests made: 3" in err


def test_cli_bad_inputs(models, capsys, tmp_path):
    code, _, err = cli(capsys, "probe", "--model", tmp_path / "missing", "--clean", models["clean_file"])
    assert code == 2 and "model not found" in err
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    (hf / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    code, _, err = cli(capsys, "probe", "--model", hf, "--clean", models["clean_file"])
    assert code == 2 and "refusing pickle weights" in err and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{"text": broken\n')
    code, _, err = cli(capsys, "probe", "--model", models["clean_dir"], "--clean", bad)
    assert code == 2 and "bad.jsonl" in err and "line 2" in err
    code, _, err = cli(capsys, "invert", "--model", models["clean_dir"], "--clean", models["clean_file"],
                       "--length", "9")
    assert code == 2 and "--length" in err
    code, _, err = cli(capsys, "probe", "--model", models["clean_dir"], "--clean", models["clean_file"],
                       "--triggers", tmp_path / "none.txt")
    assert code == 2 and "trigger file not found" in err
