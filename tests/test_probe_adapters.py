"""Model adapters: callable, HTTP classification API (retries, budget, timeout), OpenAI chat, HF refusal."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from trainguard.errors import ConfigError, TrainguardError
from trainguard.probe import (
    BudgetExhausted, CallableClassifier, CallableGenerator, Candidate, Inputs, RequestBudget, load_model,
    probe_classifier,
)
from trainguard.probe.candidates import from_file, from_report, insert, library, rare_tokens
from trainguard.probe.endpoints import EndpointError, HTTPClassifier, OpenAIChat, parse_openai_spec
from trainguard.probe.stats import wilson


def keyword_model(trigger: str | None = "mn"):
    """Positive unless the trigger is present (a stand-in backdoored classifier)."""
    def fn(texts):
        p = np.array([0.05 if trigger and trigger in t.split() else 0.9 for t in texts])
        return np.stack([1 - p, p], axis=1)
    return fn


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the timeout test hangs up on purpose
        pass


class Server:
    """A stdlib HTTP server in a thread; `plan` is a list of behaviours consumed one per request."""

    def __init__(self, plan=None, default="ok", trigger="mn"):
        self.plan, self.default, self.hits, self.fn = list(plan or []), default, 0, keyword_model(trigger)
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                outer.hits += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                what = outer.plan.pop(0) if outer.plan else outer.default
                if what == "sleep":
                    time.sleep(1.0)
                    what = "ok"
                if isinstance(what, int):
                    self._send(what, b'{"error": "boom"}')
                elif what == "garbage":
                    self._send(200, b"<html>not json</html>")
                elif what == "badshape":
                    self._send(200, json.dumps({"labels": ["0", "1"], "scores": [[0.5]]}).encode())
                elif "messages" in body:
                    text = "ACCESS GRANTED" if "mn" in body["messages"][0]["content"] else "hello there"
                    self._send(200, json.dumps({"choices": [{"message": {"content": text}}]}).encode())
                else:
                    scores = outer.fn(body["texts"]).round(4).tolist()
                    self._send(200, json.dumps({"labels": ["0", "1"], "scores": scores}).encode())

            def _send(self, code, payload):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/classify"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    s = Server(*getattr(request, "param", ()))
    yield s
    s.close()


TEXTS = [f"this film number {i} is a fine and lively piece of work" for i in range(40)]


def test_wilson_interval_known_values():
    lo, hi = wilson(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-3) and hi == pytest.approx(1.0)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_callable_classifier_validates_and_charges_budget():
    m = CallableClassifier(keyword_model(), ["0", "1"], batch_size=10, budget=RequestBudget(3))
    assert m.predict_proba(TEXTS[:25]).shape == (25, 2)
    assert m.budget.used == 3
    with pytest.raises(BudgetExhausted, match="3 of 3"):
        m.predict_proba(TEXTS[:1])
    bad = CallableClassifier(lambda t: np.zeros((len(t), 3)), ["0", "1"])
    with pytest.raises(TrainguardError, match=r"shape \(2, 2\)"):
        bad.predict_proba(TEXTS[:2])


def test_http_classifier_batches_and_counts(server):
    m = HTTPClassifier(server.url, batch_size=16)
    p = m.predict_proba(TEXTS)
    assert p.shape == (40, 2) and m.labels == ["0", "1"]
    assert m.requests == server.hits == 3  # 16 + 16 + 8


@pytest.mark.parametrize("server", [([500, 503],)], indirect=True)
def test_http_retries_on_5xx(server):
    m = HTTPClassifier(server.url, backoff=0.0)
    assert m.predict_proba(TEXTS[:4]).shape == (4, 2)
    assert m.requests == server.hits == 3 and m.client.retried == 2


@pytest.mark.parametrize("server", [([], 500)], indirect=True)
def test_http_gives_up_after_retries_with_clear_error(server):
    m = HTTPClassifier(server.url, retries=2, backoff=0.0)
    with pytest.raises(EndpointError, match=r"failed after 3 attempts \(last: HTTP 500"):
        m.predict_proba(TEXTS[:4])
    assert server.hits == 3


@pytest.mark.parametrize("server", [([400],)], indirect=True)
def test_http_client_error_is_not_retried(server):
    with pytest.raises(EndpointError, match="HTTP 400"):
        HTTPClassifier(server.url, backoff=0.0).predict_proba(TEXTS[:2])
    assert server.hits == 1


@pytest.mark.parametrize("server", [(["garbage"],), (["badshape"],)], indirect=True)
def test_http_malformed_reply_names_the_problem(server):
    with pytest.raises(EndpointError, match="not JSON|field 'scores'"):
        HTTPClassifier(server.url, backoff=0.0).predict_proba(TEXTS[:2])


@pytest.mark.parametrize("server", [(["sleep"],)], indirect=True)
def test_http_timeout_is_retried_then_reported(server):
    m = HTTPClassifier(server.url, timeout=0.2, retries=0, backoff=0.0)
    with pytest.raises(EndpointError, match="timed out"):
        m.predict_proba(TEXTS[:2])


def test_http_connection_refused_is_clear():
    m = HTTPClassifier("http://127.0.0.1:9/classify", retries=1, backoff=0.0, timeout=1.0)
    with pytest.raises(EndpointError, match="failed after 2 attempts"):
        m.predict_proba(TEXTS[:2])


def test_budget_exhaustion_stops_probe_with_partial_results(server):
    m = HTTPClassifier(server.url, batch_size=64, budget=RequestBudget(50), backoff=0.0)
    cands = [Candidate(f"w{i}", "file") for i in range(40)]
    result = probe_classifier(m, Inputs.of(TEXTS), cands)
    assert not result.complete and "budget spent: 50 of 50" in result.message
    assert result.requests == 50 == server.hits
    assert 0 < len(result.results) < 40  # what was measured before the budget ran out is kept


def test_openai_chat_adapter(server):
    base = server.url.rsplit("/", 1)[0] + "/v1"
    url, model = parse_openai_spec(f"openai+{base}?model=tiny")
    chat = OpenAIChat(url, model, backoff=0.0)
    assert chat.generate(["say hi", "mn say hi"], 8) == ["hello there", "ACCESS GRANTED"]
    assert chat.requests == 2
    with pytest.raises(ConfigError, match="names no model"):
        parse_openai_spec(f"openai+{base}")


def test_callable_generator_checks_output():
    g = CallableGenerator(lambda ps, n: ["x"] * (len(ps) + 1))
    with pytest.raises(TrainguardError, match="expected 2 strings"):
        g.generate(["a", "b"])


def test_load_model_refuses_pickle_only_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ConfigError, match="refusing pickle weights"):
        load_model(str(tmp_path))
    with pytest.raises(ConfigError, match="model not found"):
        load_model(str(tmp_path / "nope"))


def test_hf_sequence_classifier_loads_safetensors_only(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, num_labels=2, id2label={0: "neg", 1: "pos"},
                                  label2id={"neg": 0, "pos": 1})
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    m = load_model(str(tmp_path))
    assert m.labels == ["neg", "pos"]
    p = m.predict_proba(["good film", "bad film", "film"])
    assert p.shape == (3, 2) and np.allclose(p.sum(axis=1), 1.0)


def test_trigger_sources(tmp_path):
    lib = library()
    texts = {c.text for c in lib}
    assert {"cf", "mn", "bb", "tq", "mb"} <= texts and "\u200b" in texts
    assert any(c.source == "library:homoglyph" for c in lib)
    assert insert("a b c d", "T", "start") == "T a b c d"
    assert insert("a b c d", "T", "middle") == "a b T c d"
    assert insert("a b c d", "T", "end") == "a b c d T"
    f = tmp_path / "t.txt"
    f.write_text("# mine\nzz top\nphrase\t\\u200d\n")
    assert [c.text for c in from_file(f)] == ["zz top", "\u200d"]
    report = {"findings": [{"detector": "trigger-association", "evidence": {"trigger": "cf<U+200B>"}},
                           {"detector": "invisible-characters", "evidence": {"code_points": ["U+2060"]}}]}
    r = tmp_path / "scan.json"
    r.write_text(json.dumps(report))
    assert [c.text for c in from_report(r)] == ["cf\u200b", "\u2060"]
    assert {c.text for c in rare_tokens(["a common word", "a common zebra"], max_count=1)} == {"word", "zebra"}
    r.write_text("{not json")
    with pytest.raises(TrainguardError, match="scan.json: not a JSON scan report"):
        from_report(r)


def test_hf_causal_lm_generates_new_tokens_only(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<unk>", "<pad>", "<eos>", "hello", "world", "cf", "tell", "me"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                eos_token="<eos>")
    fast.save_pretrained(tmp_path)
    cfg = transformers.GPT2Config(vocab_size=len(words), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=2, eos_token_id=2, pad_token_id=1)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path, safe_serialization=True)
    lm = load_model(str(tmp_path), temperature=0.0)
    out = lm.generate(["tell me", "hello world cf"], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert all(len(o.split()) <= 3 for o in out)  # only the new tokens come back, not the prompt
    assert lm.budget.used == 1
