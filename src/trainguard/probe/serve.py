"""A small OpenAI-compatible chat endpoint over a local `GenerativeModel`, for probing over HTTP.

Users probe what they deploy: an endpoint. This serves a fine-tuned model the
way vLLM or llama.cpp's server would (`POST /v1/chat/completions`, the last
user message is the prompt), so `trainguard probe --model openai+http://...`
runs against it exactly as against a hosted model. Concurrent requests are
batched (up to `batch_size`, waiting at most `wait_s` for more) because a CPU
model answers a batch of 32 in little more time than one; the server counts
the requests it answered, so a probe's own request count can be checked.

    server = ChatServer(LocalCausalLM("adapter/"), port=0).start()
    spec = server.spec          # "openai+http://127.0.0.1:PORT/v1?model=local"
    ...
    server.stop()
"""

from __future__ import annotations

import inspect
import json
import queue
import threading
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # clients keep many requests in flight; the default backlog of 5 refuses some


class ChatServer:
    def __init__(self, model: Any, host: str = "127.0.0.1", port: int = 0, name: str = "local",
                 batch_size: int = 32, wait_s: float = 0.02, max_tokens_cap: int = 256):
        self.model, self.name, self.batch_size, self.wait_s = model, name, batch_size, wait_s
        self.max_tokens_cap = max_tokens_cap
        self._takes_temperature = "temperature" in inspect.signature(model.generate).parameters
        self.requests = 0
        self._count = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._httpd = _HTTPServer((host, port), self._handler())
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def spec(self) -> str:
        return f"openai+{self.url}?model={self.name}"

    def start(self) -> "ChatServer":
        for target in (self._httpd.serve_forever, self._batcher):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._queue.put(None)

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- batching: one generate() call per group of requests with the same decoding settings --

    def submit(self, prompt: str, max_tokens: int, temperature: float) -> Future:
        fut: Future = Future()
        self._queue.put((prompt, max_tokens, temperature, fut))
        return fut

    def _batcher(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.batch_size:
                try:
                    nxt = self._queue.get(timeout=self.wait_s)
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            groups: dict[tuple[int, float], list] = {}
            for it in batch:
                groups.setdefault((it[1], it[2]), []).append(it)
            for (max_tokens, temperature), items in groups.items():
                try:
                    outs = self._generate([it[0] for it in items], max_tokens, temperature)
                except Exception as e:  # noqa: BLE001 - the error goes back to each waiting request
                    for it in items:
                        it[3].set_exception(e)
                    continue
                for it, o in zip(items, outs):
                    it[3].set_result(o)

    def _generate(self, prompts: list[str], max_tokens: int, temperature: float) -> list[str]:
        if self._takes_temperature:
            return self.model.generate(prompts, max_tokens, temperature=temperature)
        return self.model.generate(prompts, max_tokens)  # a GenerativeModel with its own fixed decoding

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: a probe makes thousands of requests
                pass

            def _reply(self, code: int, body: dict) -> None:
                raw = json.dumps(body).encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._reply(404, {"error": {"message": f"no route {self.path}"}})
                n = int(self.headers.get("Content-Length") or 0)
                if n > MAX_BODY:
                    return self._reply(413, {"error": {"message": "request too large"}})
                try:
                    req = json.loads(self.rfile.read(n))
                    prompt = [m for m in req["messages"] if m.get("role") == "user"][-1]["content"]
                    max_tokens = min(int(req.get("max_tokens", 32)), server.max_tokens_cap)
                    temperature = float(req.get("temperature", 0.0))
                    if not isinstance(prompt, str) or max_tokens < 1:
                        raise ValueError
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    return self._reply(400, {"error": {"message": "expected messages[].content (user), max_tokens"}})
                with server._count:
                    server.requests += 1
                try:
                    text = server.submit(prompt, max_tokens, temperature).result()
                except Exception as e:  # noqa: BLE001
                    return self._reply(500, {"error": {"message": f"generation failed: {e}"}})
                self._reply(200, {"object": "chat.completion", "model": server.name,
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": text}}]})

        return Handler
