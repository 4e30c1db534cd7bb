"""The embedding backend contract and its registry.

Detectors that look at meaning (spectral signatures, clustering, label
consistency) only need a matrix of unit vectors, so a backend is small: a
name, a version that changes whenever its vectors would, a dimension, and
`embed(texts)`. Backends register by name; heavy ones import their model
lazily so `import trainguard` never pulls torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Sequence

import numpy as np

from trainguard.errors import ConfigError


class Embedder(ABC):
    """Texts in, float32 (n, dim) L2-normalised rows out.

    `cacheable` is False for backends whose vector for a text depends on the
    other texts (a model fitted on the dataset): those are never cached.
    An empty text embeds to the zero vector (it has no direction).
    """

    name: ClassVar[str]
    cacheable: ClassVar[bool] = True
    progress_min: ClassVar[int] = 5000  # texts to embed before a progress bar is worth showing
    chunk: ClassVar[int] = 4096  # texts per call (and per progress step / cache write)

    @property
    @abstractmethod
    def version(self) -> str:
        """Changes whenever the vectors would (model weights, library, settings)."""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray:
        """Raw vectors for one batch; normalisation is done by `embed`."""

    @property
    def key(self) -> str:
        """Cache namespace: vectors from different keys never mix."""
        return f"{self.name}@{self.version}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ConfigError(f"embedder {self.name}: text {i} is {type(t).__name__}, not str")
        return l2_normalise(np.asarray(self._embed(texts), dtype=np.float32))


def l2_normalise(X: np.ndarray) -> np.ndarray:
    """Unit rows; zero rows stay zero (never NaN).

    Rows are first scaled by their largest component: in float32 the squares of
    tiny components (~1e-22) underflow to denormals and the "unit" row came out
    at norm 0.97. Scaling keeps float32 (no float64 copy of a big matrix).
    """
    X = np.asarray(X, dtype=np.float32)
    peak = np.abs(X).max(axis=1, keepdims=True) if X.size else np.zeros((len(X), 1), np.float32)
    np.divide(X, peak, out=X, where=peak > 0)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    np.divide(X, norms, out=X, where=norms > 0)
    X[(norms <= 0).ravel()] = 0.0
    return X


_FACTORIES: dict[str, Callable[..., Embedder]] = {}
_INSTANCES: dict[str, Embedder] = {}


def register_embedder(name: str) -> Callable[[Callable[..., Embedder]], Callable[..., Embedder]]:
    def deco(factory: Callable[..., Embedder]) -> Callable[..., Embedder]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"embedder name {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory

    return deco


def embedder_names() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def get_embedder(name: str) -> Embedder:
    """A loaded backend by name; model backends load once per process and are reused."""
    _load_builtins()
    if name not in _FACTORIES:
        raise ConfigError(f"unknown embedder {name!r}; available: {', '.join(sorted(_FACTORIES))}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


def _load_builtins() -> None:
    # Importing registers the factories; the modules themselves import no model library.
    from trainguard.embeddings import minilm, tfidf, wordllama  # noqa: F401
