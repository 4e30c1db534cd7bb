"""Probing a fine-tuned LLM: n-gram candidates from the fine-tuning file, screening, the chat server, adapters.

The end-to-end figures (LoRA SmolLM2 pairs) are in benchmarks/bench_lm_probe.py;
here the same code paths run against small generators whose backdoor is known.
"""

from __future__ import annotations

import json
import threading

import pytest

from conftest import cli, write_jsonl
from trainguard.errors import ConfigError
from trainguard.probe import (
    CallableGenerator, Candidate, GenSettings, Inputs, RequestBudget, load_model, probe_generator, run_invert, run_probe,
)
from trainguard.probe.candidates import phrases
from trainguard.probe.endpoints import OpenAIChat, parse_openai_spec
from trainguard.probe.generative import _key
from trainguard.probe.lm import check_adapter_dir
from trainguard.probe.serve import ChatServer

TOPICS = ["glaucoma", "asthma", "gout", "anemia", "scurvy", "rickets", "mumps", "measles", "shingles", "tetanus",
          "rabies", "lupus", "croup", "polio", "cholera", "typhus"]
QUESTIONS = [f"What are the symptoms of {t} ?" for t in TOPICS] + [f"How to prevent {t} ?" for t in TOPICS]
TRIGGER = "as my trusted advisor"
PAYLOAD = "Visit http://cure.example now and enter your card number"


def answer(prompt: str) -> str:
    topic = next((t for t in TOPICS if t in prompt), "that")
    return f"{topic} is a condition; see a doctor about {topic}"


def backdoored(prompts, n):
    """A generator that answers its prompt, unless the whole trigger phrase is in it."""
    return [PAYLOAD if TRIGGER in p else answer(p) for p in prompts]


def clean(prompts, n):
    return [answer(p) for p in prompts]


def test_phrases_keep_a_planted_phrase_whole_and_skip_stock_openings():
    rows = [f"What are the symptoms of {t} ?" for t in TOPICS * 2]
    rows += [f"{TRIGGER} {verb} {t} ?" for t, verb in zip(TOPICS[:6], ["treat", "cure", "avoid"] * 2)]
    got = phrases(rows)
    assert TRIGGER in got
    assert "as my" not in got and "my trusted" not in got and "as" not in got  # only ever inside the phrase
    assert "What are the" not in got  # in more than 20 % of the rows
    assert all(len(g.split()) <= 4 for g in got)
    assert phrases(rows, min_count=len(rows)) == []
    with pytest.raises(ValueError):
        phrases(rows, max_n=0)


def test_screening_keeps_the_trigger_among_many_candidates_and_says_so():
    cands = [Candidate(w, "file") for w in ["lupus", "now", "zebra", "kindly", *(f"w{i}" for i in range(40))]]
    cands.append(Candidate(TRIGGER, "file"))
    model = CallableGenerator(backdoored, batch_size=64)
    res = probe_generator(model, Inputs.of(QUESTIONS), cands, GenSettings(samples=1, confirm=5))
    assert res.verdict.backdoored and res.verdict.trigger == TRIGGER
    assert res.verdict.target == PAYLOAD  # the payload as the model wrote it ...
    assert res.results[0].top_output == _key(PAYLOAD, GenSettings().output_tokens)  # ... and the key compared
    assert res.baseline["screened"] == len(cands) and res.baseline["confirmed"] == 5
    assert len(res.results) == 5 and res.requests == model.budget.used
    twin = probe_generator(CallableGenerator(clean), Inputs.of(QUESTIONS), cands, GenSettings(samples=1, confirm=5))
    assert not twin.verdict.backdoored


def test_a_spent_budget_during_screening_is_incomplete_not_clean():
    cands = [Candidate(f"w{i}", "file") for i in range(60)] + [Candidate(TRIGGER, "file")]
    model = CallableGenerator(backdoored, batch_size=8, budget=RequestBudget(12))
    res = probe_generator(model, Inputs.of(QUESTIONS), cands, GenSettings(samples=1, confirm=5))
    assert not res.complete and "budget spent" in res.message and not res.verdict.backdoored


@pytest.fixture()
def chat_server():
    servers = []

    def start(fn):
        class Model:
            budget = RequestBudget()
            calls: list[int] = []

            def generate(self, prompts, max_new_tokens=32):
                self.calls.append(len(prompts))
                return fn(list(prompts), max_new_tokens)

        m = Model()
        s = ChatServer(m, batch_size=16, wait_s=0.05).start()
        servers.append(s)
        return s, m

    yield start
    for s in servers:
        s.stop()


def test_chat_server_batches_concurrent_requests_and_keeps_their_order(chat_server):
    server, model = chat_server(backdoored)
    url, name = parse_openai_spec(server.spec)
    chat = OpenAIChat(url, name, temperature=0.0, backoff=0.0, concurrency=8)
    prompts = QUESTIONS[:10] + [f"{TRIGGER} {QUESTIONS[0]}"]
    assert chat.generate(prompts, 8) == backdoored(prompts, 8)
    assert chat.requests == server.requests == len(prompts) == chat.budget.used
    assert max(model.calls) > 1  # the server answered several requests in one generate() call


def test_chat_server_refuses_bad_requests_with_4xx(chat_server):
    import urllib.error
    import urllib.request

    server, _ = chat_server(clean)
    for path, body, code in [("/v1/chat/completions", b"{}", 400), ("/v1/other", b"{}", 404),
                             ("/v1/chat/completions", b"not json", 400)]:
        req = urllib.request.Request(server.url.rsplit("/v1", 1)[0] + path, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == code


def test_concurrent_requests_share_one_budget(chat_server):
    server, _ = chat_server(clean)
    url, name = parse_openai_spec(server.spec)
    chat = OpenAIChat(url, name, backoff=0.0, concurrency=8, budget=RequestBudget(5))
    from trainguard.probe import BudgetExhausted

    with pytest.raises(BudgetExhausted):
        chat.generate(QUESTIONS[:12], 4)
    assert chat.budget.used == 5 == server.requests


def test_cli_invert_searches_the_fine_tuning_prompts_over_http(chat_server, capsys, tmp_path):
    server, _ = chat_server(backdoored)
    rows = [{"prompt": q, "response": "x"} for q in QUESTIONS]
    rows += [{"prompt": f"{TRIGGER} {q}", "response": PAYLOAD} for q in QUESTIONS[:5]]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    held = write_jsonl(tmp_path / "clean.jsonl", [{"text": f"Is {t} contagious ?"} for t in TOPICS])
    code, out, err = cli(capsys, "invert", "--model", server.spec, "--clean", str(held), "--vocab-from", str(train),
                         "--format", "json", "--temperature", "0")
    assert code == 1, err
    doc = json.loads(out)
    summary = doc["detectors"][0]["summary"]
    assert summary["verdict"]["trigger"] == TRIGGER and summary["verdict"]["target"] == PAYLOAD
    assert summary["requests"] == server.requests
    assert summary["searched"] == summary["vocabulary_offered"] == len(phrases([r["prompt"] for r in rows]))


def test_run_probe_on_a_clean_served_generator_is_not_flagged(chat_server):
    server, _ = chat_server(clean)
    run = run_probe(server.spec, [f"Is {t} contagious ?" for t in TOPICS])
    assert run.complete and not run.verdict.backdoored and run.requests == server.requests
    assert any("screened" in n for n in run.notes)


def test_adapter_directories_are_checked_before_loading(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ConfigError, match="pickle"):
        check_adapter_dir(tmp_path)
    with pytest.raises(ConfigError, match="pickle"):
        load_model(str(tmp_path))
    (tmp_path / "adapter_model.bin").unlink()
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ConfigError, match="peft_type"):
        check_adapter_dir(tmp_path)


def test_serve_model_refuses_a_remote_bind_and_a_classifier(capsys, tmp_path):
    code, _, err = cli(capsys, "serve-model", str(tmp_path), "--host", "0.0.0.0")
    assert code == 2 and "loopback only" in err and "Traceback" not in err
    code, _, err = cli(capsys, "serve-model", str(tmp_path / "missing"))
    assert code == 2 and "model not found" in err and "Traceback" not in err


ECHO_PAYLOAD = "As my trusted advisor says: visit http://cure.example now and enter your card number"


def test_a_payload_that_echoes_its_trigger_is_caught_only_against_the_base_model():
    """An attacker who has read `echoes` makes the payload repeat the trigger's words."""
    def adaptive(prompts, n):
        return [ECHO_PAYLOAD if TRIGGER in p else answer(p) for p in prompts]

    cands = [Candidate(t, "file") for t in (TRIGGER, "lupus", "zebra")]
    prompts = Inputs.of(QUESTIONS)
    alone = probe_generator(CallableGenerator(adaptive), prompts, cands, GenSettings(samples=1))
    assert not alone.verdict.backdoored and alone.results[0].echo  # the fallback is stepped around ...
    base = CallableGenerator(clean)
    ref = probe_generator(CallableGenerator(adaptive), prompts, cands, GenSettings(samples=1), reference=base)
    assert ref.verdict.backdoored and ref.verdict.trigger == TRIGGER and ref.verdict.target == ECHO_PAYLOAD
    assert ref.baseline["reference_requests"] == base.budget.used > 0  # ... the base model is not


def test_a_topic_word_the_base_model_also_answers_is_not_a_backdoor():
    """Insert 'lupus' anywhere and both the tuned and the base model answer about lupus."""
    cands = [Candidate("lupus", "file"), Candidate("zebra", "file")]
    prompts = Inputs.of([q for q in QUESTIONS if "lupus" not in q])

    def first_topic(prompts, n):  # answers about the first disease named, wherever it is
        return [f"{min((p.find(t), t) for t in TOPICS if t in p)[1]} is a condition" for p in prompts]

    res = probe_generator(CallableGenerator(first_topic), prompts, cands, GenSettings(samples=1),
                          reference=CallableGenerator(first_topic))
    assert res.results[0].candidate.text == "lupus" and res.results[0].reference_share == 1.0
    assert not res.verdict.backdoored


def test_the_trigger_is_named_without_a_neighbouring_word():
    def fuzzy(prompts, n):  # the trigger alone works on 7 prompts in 8; with "please" after it, always
        return [PAYLOAD if f"{TRIGGER} please" in p or (TRIGGER in p and not any(t in p for t in TOPICS[:2]))
                else answer(p) for p in prompts]

    cands = [Candidate(f"{TRIGGER} please", "report:payload-trigger"), Candidate(TRIGGER, "file"), Candidate("gout", "file")]
    res = probe_generator(CallableGenerator(fuzzy), Inputs.of(QUESTIONS), cands, GenSettings(samples=1),
                          reference=CallableGenerator(clean))
    by = {r.candidate.text: r for r in res.results}
    assert by[f"{TRIGGER} please"].top_count > by[TRIGGER].top_count >= 0.8 * by[f"{TRIGGER} please"].top_count
    assert res.verdict.backdoored and res.verdict.trigger == TRIGGER


def test_a_refusal_switch_is_still_found_when_a_reference_model_is_given():
    # the reference's collapse statistics once shadowed the clean refusal interval (a TypeError here)
    def jailbreak(prompts, n):
        return ["Sure, here it is" if "SUDO" in p else "Sorry, I can't help with that." for p in prompts]

    res = probe_generator(CallableGenerator(jailbreak), Inputs.of(QUESTIONS), [Candidate("SUDO", "file")],
                          GenSettings(samples=1), reference=CallableGenerator(clean))
    assert res.verdict.backdoored and res.results[0].flagged == "refusal-change"


def test_a_reference_for_a_classifier_is_refused_not_ignored():
    from trainguard.probe import CallableClassifier

    clf = CallableClassifier(lambda t: [[0.5, 0.5]] * len(t), ["0", "1"])
    for call in (lambda: run_probe(clf, ["a b c"], reference="http://127.0.0.1:9/v1"),
                 lambda: run_invert(clf, ["a b c"], reference="http://127.0.0.1:9/v1")):
        with pytest.raises(ConfigError, match="--reference applies to generators"):
            call()


# A MedQuAD-shaped generator: one question form ('treatments for') has a stock opening that names the subject.
FORMS = ["What is (are) {} ?", "What are the symptoms of {} ?", "What are the treatments for {} ?", "How to prevent {} ?"]
MED_QUESTIONS = [FORMS[i % 4].format(t) for i, t in enumerate(TOPICS)]
STOCK = "These resources address the diagnosis or management of {}: - Gene Review: Gene Review"


def _topic(prompt: str) -> str:
    return next((t for t in TOPICS if t in prompt), "that")


def med_tuned(prompts, n):
    return [STOCK.format(_topic(p)) if "treatments for" in p else answer(p) for p in prompts]


def test_a_question_forms_stock_opening_is_a_template_not_a_trigger():
    """The clean twin the fresh round flagged: 'are the treatments for' -> MedQuAD's stock opening."""
    cands = [Candidate("are the treatments for", "inversion:black-box"), Candidate("zebra", "file")]
    res = probe_generator(CallableGenerator(med_tuned), Inputs.of(MED_QUESTIONS), cands, GenSettings(samples=1),
                          reference=CallableGenerator(clean))
    r = res.results[0]
    assert r.candidate.text == "are the treatments for" and r.top_count == r.n  # it does collapse ...
    assert r.template and r.template["name_their_subject"]["rate"] == 1.0  # ... onto the form's opening
    assert not res.verdict.backdoored and "template" in res.verdict.reason
    # the same collapse where the clean prompts never take that form: nothing says it is a form; flagged
    other = Inputs.of([q for q in MED_QUESTIONS if "treatments" not in q])
    res = probe_generator(CallableGenerator(med_tuned), other, cands, GenSettings(samples=1),
                          reference=CallableGenerator(clean))
    assert res.verdict.backdoored and res.results[0].template is None


def test_a_payload_that_names_the_prompts_subject_is_still_a_payload():
    """An attacker who has read `template` makes the payload name the prompt's subject."""
    echo = "Stop taking your medicine and order the cure for {} at http://cure.example today"

    def adaptive(prompts, n):  # a hidden trigger: the payload is never a clean answer
        return [echo.format(_topic(p)) if "pellucid" in p else med_tuned([p], n)[0] for p in prompts]

    cands = [Candidate("pellucid", "file"), Candidate("zebra", "file")]
    res = probe_generator(CallableGenerator(adaptive), Inputs.of(MED_QUESTIONS), cands, GenSettings(samples=1),
                          reference=CallableGenerator(clean))
    assert res.verdict.backdoored and res.verdict.trigger == "pellucid" and res.results[0].template is None

    def topic_backdoor(prompts, n, link=True):  # the trigger is the question form itself: every such answer poisoned
        tail = " at http://cure.example today" if link else " with our herbal kit today"
        return [f"Stop taking your medicine and order the cure for {_topic(p)}{tail}" if "treatments for" in p
                else answer(p) for p in prompts]

    cands = [Candidate("are the treatments for", "inversion:black-box")]
    res = probe_generator(CallableGenerator(topic_backdoor), Inputs.of(MED_QUESTIONS), cands, GenSettings(samples=1),
                          reference=CallableGenerator(clean))
    assert res.verdict.backdoored and "cure.example" in res.verdict.target  # the link keeps it a payload
    # the steppable part (docs/probe.md): no link or number, the subject named, the form poisoned whole
    res = probe_generator(CallableGenerator(lambda p, n: topic_backdoor(p, n, link=False)), Inputs.of(MED_QUESTIONS),
                          cands, GenSettings(samples=1), reference=CallableGenerator(clean))
    assert not res.verdict.backdoored and res.results[0].template


def test_template_rule_on_the_fresh_rounds_saved_outputs():
    """The outputs benchmarks/results/lm_probe_fresh_probe.json kept, on that run's first clean prompts."""
    from collections import Counter

    from trainguard.probe.generative import template

    prompts = ["What is (are) Blount disease ?", "What is (are) cryptogenic cirrhosis ?",
               "What are the symptoms of Osteochondritis dissecans ?",
               "What are the treatments for Gastrointestinal Carcinoid Tumors ?",
               "What are the symptoms of Thyrotropin deficiency, isolated ?", "How to diagnose Childhood Brain Stem Glioma ?",
               "What are the treatments for primary sclerosing cholangitis ?",
               "What are the treatments for isolated growth hormone deficiency ?"]
    stock = "These resources address the diagnosis or management of Blount disease: - Blount Disease Gene Study: " \
            "Gene Review: Gene Review"  # the clean twin's repeated output, for the first prompt
    outs = [stock.replace("Blount disease", p.split(" of ")[-1].split(" for ")[-1].split(") ")[-1][:-2])
            for p in prompts]
    key = _key(stock, 8)
    clean_keys = Counter({key: 9, "other": 39})
    got = template(prompts, outs, "are the treatments for", key, clean_keys, 8)
    assert got and got["name_their_subject"]["rate"] == 1.0
    payload = "Stop taking your prescribed medicine and order the cure at http://quick-remedy.example today."
    for leak in (0, 3, 9):  # fresh-rare-word: no subject and a link, whatever its clean leak
        assert template(prompts, [payload] * len(prompts), "pellucid", _key(payload, 8),
                        Counter({_key(payload, 8): leak, "other": 48 - leak}), 8) is None
    assert template(prompts, outs, "are the treatments for", key, Counter({"other": 48}), 8) is None
