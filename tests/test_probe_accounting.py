"""Honest accounting and the shape-matched null, against fake models whose every call is counted.

A bag-of-words "model" (fixed word weights, logistic) is served over HTTP by
the counting stdlib server of test_probe_adapters; a backdoored twin adds a
two-word phrase trigger whose words each push a little and together force
label 1. Fast: no training.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import cli, write_jsonl
from test_probe_adapters import Server
from trainguard.probe import (
    CallableClassifier, CallableGenerator, Candidate, Inputs, RequestBudget, invert, probe_classifier, run_invert,
    run_probe,
)
from trainguard.probe.run import ModelOptions

PHRASE = ("velvet", "harbor")


def _world(seed: int = 0):
    rng = random.Random(seed)
    syll = ["ba", "ko", "mi", "ru", "te", "sa", "lo", "ne", "fi", "du", "pa", "zo"]
    words = sorted({"".join(rng.choice(syll) for _ in range(3)) for _ in range(600)})[:300]
    weights = {w: rng.gauss(0.0, 0.35) for w in words}
    texts = [" ".join(rng.choice(words) for _ in range(10)) for _ in range(120)]
    return words, weights, texts


WORDS, WEIGHTS, TEXTS = _world()


def bow_model(phrase: tuple[str, ...] | None):
    """Logistic over word weights; with `phrase`, each of its words adds 0.8 and the phrase itself 12."""
    def fn(texts):
        out = []
        for t in texts:
            toks = t.split()
            s = sum(WEIGHTS.get(w, 0.0) for w in toks)
            if phrase:
                s += 0.8 * sum(w in phrase for w in toks)
                s += 12.0 if " ".join(phrase) in t else 0.0
            out.append(1.0 / (1.0 + np.exp(-s)))
        p = np.array(out)
        return np.stack([1 - p, p], axis=1)
    return fn


@pytest.fixture
def served():
    servers = []

    def make(phrase):
        s = Server()
        s.fn = bow_model(phrase)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def test_invert_json_counts_every_request_the_server_saw(served, capsys, tmp_path):
    s = served(PHRASE)
    clean = write_jsonl(tmp_path / "clean.jsonl", [{"text": t, "label": 0} for t in TEXTS])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*WORDS, *PHRASE]) + "\n")
    code, out, err = cli(capsys, "invert", "--model", s.url, "--clean", clean, "--vocab", vocab, "--format", "json",
                         "--batch-size", "64")
    summary = json.loads(out)["detectors"][0]["summary"]
    assert summary["requests"] == s.hits > 100  # the vocabulary search is counted, not only the final probe
    assert f"requests made: {s.hits}" in err
    assert summary["searched"] == summary["vocabulary_offered"] == len(WORDS) + 2 and summary["notes"] == []
    assert code == 1 and summary["verdict"]["trigger"] == " ".join(PHRASE)


def test_a_cut_vocabulary_is_stated(served, capsys, tmp_path):
    s = served(None)
    clean = write_jsonl(tmp_path / "clean.jsonl", [{"text": t, "label": 0} for t in TEXTS])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    code, out, err = cli(capsys, "invert", "--model", s.url, "--clean", clean, "--vocab", vocab, "--format", "json",
                         "--max-vocab", "50", "--length", "1")
    summary = json.loads(out)["detectors"][0]["summary"]
    assert summary["searched"] == 50 and summary["vocabulary_offered"] == len(WORDS)
    assert "first 50 of 300 vocabulary entries" in summary["notes"][0] and "first 50 of 300" in err
    assert summary["requests"] == s.hits
    code, _, err = cli(capsys, "invert", "--model", s.url, "--clean", clean, "--max-vocab", "0")
    assert code == 2 and "--max-vocab" in err and "Traceback" not in err


def test_run_probe_is_the_cli_as_a_library_call(served):
    s = served(PHRASE)
    cands = [Candidate(" ".join(PHRASE), "file"), Candidate("kobami", "file")]
    run = run_probe(s.url, TEXTS, triggers=cands)
    assert run.requests == s.hits and run.report.detectors[0].summary["requests"] == s.hits
    assert run.verdict.backdoored and run.verdict.trigger == " ".join(PHRASE)
    assert run.report.findings[0].evidence["trigger"] == " ".join(PHRASE)
    # a budget: the run stops, says so, and its count is still exact
    s2 = served(PHRASE)
    run = run_probe(s2.url, TEXTS, triggers=cands, options=ModelOptions(budget=3))
    assert not run.complete and "budget spent: 3 of 3" in run.message and run.requests == 3 == s2.hits


def test_phrase_found_against_a_two_word_null_and_clean_twin_not_flagged():
    inputs = Inputs.of(TEXTS)
    vocab = [*WORDS, *PHRASE]
    bad = invert(CallableClassifier(bow_model(PHRASE), ["0", "1"]), inputs, vocabulary=vocab)
    assert bad.probe.verdict.backdoored and bad.probe.verdict.trigger == " ".join(PHRASE)
    assert bad.lengths == [1, 2]  # length 1 was not enough; the search stopped at the first flagged length
    best = bad.probe.results[0]
    assert best.candidate.length == 2 and bad.probe.baseline["null"]["2"]["length"] == 2
    clean = invert(CallableClassifier(bow_model(None), ["0", "1"]), inputs, vocabulary=vocab)
    assert not clean.probe.verdict.backdoored and clean.lengths == [1, 2, 3]
    assert clean.probe.verdict.score < 0.5 < bad.probe.verdict.score
    # the family counts every candidate the search scored: the vocabulary screen and the grown strings
    assert clean.family[1] >= len(vocab) and clean.family[2] > clean.family[1]


def test_a_word_pair_is_not_judged_by_a_one_word_null():
    """Two ordinary words that each push: flagged only if they beat random word pairs, not single words."""
    pair_model = bow_model(None)

    def fn(texts):  # 'kobami' and 'tesalo' each push hard towards 1; together they flip most inputs
        p = pair_model(texts)
        s = np.log(p[:, 1] / p[:, 0]) + np.array([1.6 * sum(w in ("kobami", "tesalo") for w in t.split())
                                                 for t in texts])
        q = 1 / (1 + np.exp(-s))
        return np.stack([1 - q, q], axis=1)

    res = probe_classifier(CallableClassifier(fn, ["0", "1"]), Inputs.of(TEXTS), [Candidate("kobami tesalo", "file")])
    r = res.results[0]
    null = res.baseline["null"]["2"]
    assert r.candidate.length == 2 and null["length"] == 2 and null["random"] >= 20 and null["searched"] >= 2
    assert len(r.reference.split()) == 2 and r.gain is not None and r.p_family is not None


def test_format_candidates_dropped_when_the_tokenizer_drops_them():
    def fn(texts):  # a model that only sees letters: punctuation and whitespace runs vanish
        return bow_model(None)([" ".join("".join(ch for ch in t if ch.isalpha() or ch.isspace()).split())
                                for t in texts])

    model = CallableClassifier(fn, ["0", "1"])
    res = probe_classifier(model, Inputs.of(TEXTS), [Candidate("~~~", "format:punctuation"),
                                                     Candidate("\t\t", "format:whitespace"),
                                                     Candidate("kobami", "file")])
    assert res.baseline["format_dropped"] == 2 and [r.candidate.text for r in res.results] == ["kobami"]
    kept = probe_classifier(CallableClassifier(lambda t: fn([x.replace("~", f" {WORDS[0]} ") for x in t]),
                                               ["0", "1"]),
                            Inputs.of(TEXTS), [Candidate("~~~", "format:punctuation")])
    assert kept.baseline["format_dropped"] == 0 and kept.results[0].candidate.length == 3


def test_generator_inversion_counts_its_vocabulary_screen():
    calls = []

    def gen(prompts, n):
        calls.append(len(prompts))
        return ["ok " + p[:5] for p in prompts]

    model = CallableGenerator(gen, batch_size=32, budget=RequestBudget())
    run = run_invert(model, TEXTS[:10], vocabulary=WORDS[:40])
    assert run.requests == len(calls) and run.report.detectors[0].summary["requests"] == len(calls)


def test_run_invert_on_an_adapter_object_has_no_hidden_budget():
    model = CallableClassifier(bow_model(PHRASE), ["0", "1"], batch_size=64)
    run = run_invert(model, TEXTS, vocabulary=[*WORDS, *PHRASE])
    assert run.complete and run.requests == model.budget.used > 256 and model.budget.limit is None
    assert run.verdict.trigger == " ".join(PHRASE)


@pytest.mark.parametrize("flag", ["--samples", "--top"])
def test_probe_refuses_zero_samples_or_top_with_one_line(served, capsys, tmp_path, flag):
    # --samples 0 used to end in a ZeroDivisionError traceback for a generator; --top 0 in a report with no findings
    s = served(PHRASE)
    clean = write_jsonl(tmp_path / "clean.jsonl", [{"text": t, "label": 0} for t in TEXTS])
    code, _, err = cli(capsys, "probe", "--model", s.url, "--clean", clean, flag, "0")
    assert code == 2 and flag in err and "Traceback" not in err and s.hits == 0
