"""WordLlama static embeddings: the fast default, weights bundled in the wheel.

Mean of token vectors (LLM input embeddings distilled for sentence
similarity), so it costs a tokeniser pass and a gather: tens of thousands of
short texts per second on two cores. wordllama 0.4 looks for its bundled
tokenizer under the wrong folder name, so we point `cache_dir` at the
package's own folder, which holds both `weights/` and `tokenizers/`; with
`disable_download=True` nothing is ever fetched.
"""

from __future__ import annotations

import threading
from importlib.metadata import version as _dist_version
from pathlib import Path

import numpy as np

from trainguard.embeddings.base import Embedder, register_embedder
from trainguard.errors import ConfigError

CONFIG = "l2_supercat"


class WordLlamaEmbedder(Embedder):
    name = "wordllama"

    def __init__(self, dim: int = 256, max_tokens: int = 512, batch_size: int = 256) -> None:
        try:
            import wordllama  # noqa: F401  (the weights load on first use: a warm cache never needs them)
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ConfigError("embedder wordllama needs the `wordllama` package (pip install wordllama)") from e
        self._dim = dim
        self._max_tokens = max_tokens
        self._batch = batch_size
        self._version = f"{_dist_version('wordllama')}-{CONFIG}-{self._dim}-t{max_tokens}"
        self._loaded = None
        self._lock = threading.Lock()

    @property
    def _model(self):
        with self._lock:
            if self._loaded is None:
                import wordllama
                from wordllama import WordLlama

                try:
                    model = WordLlama.load(CONFIG, cache_dir=Path(wordllama.__file__).parent, dim=self._dim,
                                           disable_download=True)
                except FileNotFoundError as e:
                    raise ConfigError(f"embedder wordllama: bundled weights not found ({e})") from e
                if int(model.embedding.shape[1]) != self._dim:
                    raise ConfigError(f"embedder wordllama: asked for {self._dim} dimensions, "
                                      f"the weights give {model.embedding.shape[1]}")
                # Truncation bounds the padded batch (batch x tokens x dim floats) on long documents.
                model.tokenizer.enable_truncation(self._max_tokens)
                self._loaded = model
            return self._loaded

    @property
    def version(self) -> str:
        return self._version

    @property
    def dim(self) -> int:
        return self._dim

    def _embed(self, texts: list[str]) -> np.ndarray:
        # Sorting by length keeps padding (and so work and memory) small within each batch.
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self._dim), np.float32)
        sorted_texts = [texts[i] for i in order]
        out[order] = self._model.embed(sorted_texts, norm=False, batch_size=self._batch)
        return out


register_embedder("wordllama")(WordLlamaEmbedder)
