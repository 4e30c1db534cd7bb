"""HTTP model adapters: the minimal JSON classification API and OpenAI-style chat.

Stdlib `urllib` only. Each request is charged to the budget before it is sent
(retries included: they cost the endpoint owner the same), 5xx / 429 /
connection errors / timeouts are retried with exponential backoff, and
anything else (4xx, a malformed body) is a clear error naming the endpoint.

Classification API (docs/probe.md):
    POST URL  {"texts": ["...", ...]}
    200       {"labels": ["neg", "pos"], "scores": [[0.9, 0.1], ...]}
`labels` names the score columns; `scores` has one row per text.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Sequence

import numpy as np

from trainguard.errors import ConfigError, TrainguardError
from trainguard.probe.adapters import RequestBudget, batched, checked_scores

RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_BODY = 64 << 20  # a classification reply is small; refuse to buffer a runaway one


class EndpointError(TrainguardError):
    """The endpoint refused, failed past its retries, or answered something unusable."""


class JSONClient:
    """POST JSON with timeout, bounded retries and backoff; counts every attempt."""

    def __init__(self, url: str, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 budget: RequestBudget | None = None, headers: dict[str, str] | None = None):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"not an http(s) URL: {url!r}")
        self.url, self.timeout, self.retries, self.backoff = url, timeout, retries, backoff
        self.budget = budget or RequestBudget()
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self.requests = 0
        self.retried = 0
        self._lock = threading.Lock()  # OpenAIChat posts from several threads: one count, one budget

    def post(self, payload: dict[str, Any], url: str | None = None) -> Any:
        target = url or self.url
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                with self._lock:
                    self.retried += 1
                time.sleep(self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random()))
            with self._lock:
                self.budget.spend()
                self.requests += 1
            req = urllib.request.Request(target, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-given URL
                    raw = resp.read(MAX_BODY + 1)
            except urllib.error.HTTPError as e:
                detail = _snippet(e.read(2048))
                if e.code in RETRY_STATUS:
                    last = f"HTTP {e.code} {detail}".strip()
                    continue
                raise EndpointError(f"{target}: HTTP {e.code} {detail}".strip()) from None
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                last = "timed out" if isinstance(reason, (socket.timeout, TimeoutError)) else f"{reason}"
                continue
            if len(raw) > MAX_BODY:
                raise EndpointError(f"{target}: reply larger than {MAX_BODY} bytes")
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise EndpointError(f"{target}: reply is not JSON: {_snippet(raw)}") from None
        raise EndpointError(f"{target}: failed after {self.retries + 1} attempts (last: {last})")


def _snippet(raw: bytes) -> str:
    return raw[:200].decode("utf-8", "replace").replace("\n", " ")


class _OverHTTP:
    """The request budget and count of an adapter are its client's."""

    client: JSONClient

    @property
    def budget(self) -> RequestBudget:
        return self.client.budget

    @property
    def requests(self) -> int:
        return self.client.requests


class HTTPClassifier(_OverHTTP):
    """The minimal JSON classification API; label names come from the first reply."""

    def __init__(self, url: str, batch_size: int = 64, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, budget: RequestBudget | None = None, headers: dict[str, str] | None = None):
        self.client = JSONClient(url, timeout, retries, backoff, budget, headers)
        self.batch_size = batch_size
        self._labels: list[str] | None = None

    @property
    def labels(self) -> list[str]:
        if self._labels is None:
            self.predict_proba(["hello"])
        return list(self._labels or [])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for chunk in batched(list(texts), self.batch_size):
            reply = self.client.post({"texts": list(chunk)})
            out.append(self._parse(reply, len(chunk)))
        if not out:
            return np.zeros((0, len(self._labels or [])))
        return np.concatenate(out)

    def _parse(self, reply: Any, n: int) -> np.ndarray:
        where = self.client.url
        if not isinstance(reply, dict) or "labels" not in reply or "scores" not in reply:
            raise EndpointError(f"{where}: reply must be an object with 'labels' and 'scores'")
        labels = reply["labels"]
        if not isinstance(labels, list) or not labels:
            raise EndpointError(f"{where}: field 'labels' must be a non-empty list of label names")
        labels = [str(x) for x in labels]
        if self._labels is None:
            self._labels = labels
        elif labels != self._labels:
            raise EndpointError(f"{where}: field 'labels' changed between replies ({self._labels} -> {labels})")
        try:
            return checked_scores(reply["scores"], n, len(labels), f"{where}: field 'scores'")
        except TrainguardError as e:
            raise EndpointError(str(e)) from None


class OpenAIChat(_OverHTTP):
    """An OpenAI-compatible `/chat/completions` endpoint; one request per prompt, `concurrency` in flight.

    Spec: `openai+http://host:port/v1?model=NAME` (or `openai+https://`). The
    key, if the endpoint wants one, is read from $OPENAI_API_KEY. Servers batch
    concurrent requests (vLLM, llama.cpp, `trainguard.probe.serve`), so several
    in flight make a probe several times faster at the same request count.
    """

    def __init__(self, base_url: str, model: str, temperature: float = 0.7, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.5, budget: RequestBudget | None = None,
                 concurrency: int = 16):
        headers = {}
        key = os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.client = JSONClient(self.url, timeout, retries, backoff, budget, headers)
        self.model, self.temperature, self.concurrency = model, temperature, concurrency

    def _one(self, prompt: str, max_new_tokens: int) -> str:
        reply = self.client.post({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                                  "max_tokens": max_new_tokens, "temperature": self.temperature})
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url}: reply lacks choices[0].message.content") from None
        return content if isinstance(content, str) else ""

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        prompts = list(prompts)
        if self.concurrency == 1 or len(prompts) < 2:
            return [self._one(p, max_new_tokens) for p in prompts]
        from concurrent.futures import ThreadPoolExecutor

        # map() yields in order and re-raises the first failure (a spent budget, an endpoint error)
        with ThreadPoolExecutor(min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._one(p, max_new_tokens), prompts))


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """`openai+http://host/v1?model=m` -> ("http://host/v1", "m")."""
    rest = spec.split("+", 1)[1]
    parsed = urllib.parse.urlparse(rest)
    model = urllib.parse.parse_qs(parsed.query).get("model", [""])[0]
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"bad chat endpoint {spec!r}; expected openai+http(s)://HOST/v1?model=NAME")
    if not model:
        raise ConfigError(f"chat endpoint {spec!r} names no model; add ?model=NAME")
    return urllib.parse.urlunparse(parsed._replace(query="")), model
