"""Embedding a whole dataset once: dedupe, cache lookup, batched backend calls.

Several detectors share one matrix per (backend, field) through the dataset's
artefacts, so a scan embeds each distinct text at most once and a rescan
embeds only texts the cache has not seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from trainguard.embeddings.base import Embedder, get_embedder
from trainguard.embeddings.cache import EmbeddingCache, text_hash
from trainguard.errors import ConfigError
from trainguard.io.dataset import Dataset
from trainguard.progress import meter
from trainguard.records import Record

FIELDS = ("text", "target", "response", "chosen", "rejected", "all")
CACHE_DIR_ARTEFACT = "embeddings:cache-dir"
NO_CACHE = "off"


def embed_texts(
    texts: Sequence[str],
    embedder: Embedder | str,
    cache: EmbeddingCache | str | Path | None = None,
    batch_size: int = 4096,
    progress: bool | None = None,
) -> np.ndarray:
    """float32 (len(texts), dim) unit rows. `cache`: an open cache, a folder, None (default folder) or "off"."""
    emb = get_embedder(embedder) if isinstance(embedder, str) else embedder
    n = len(texts)
    index: dict[bytes, int] = {}
    inverse = np.empty(n, np.int64)
    uniq: list[str] = []
    hashes: list[bytes] = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ConfigError(f"embedder {emb.name}: text {i} is {type(t).__name__}, not str")
        h = text_hash(t)
        j = index.get(h)
        if j is None:
            j = index[h] = len(uniq)
            uniq.append(t)
            hashes.append(h)
        inverse[i] = j
    if not emb.cacheable:
        return emb.embed(uniq)[inverse] if uniq else np.zeros((0, emb.dim), np.float32)

    own = False
    if cache is None or isinstance(cache, (str, Path)):
        if cache == NO_CACHE:
            cache = None
        else:
            cache, own = EmbeddingCache(cache), True
    try:
        vectors = np.zeros((len(uniq), emb.dim), np.float32)
        todo = np.ones(len(uniq), bool)
        if cache is not None:
            found, cached = cache.lookup(emb.key, hashes, emb.dim)
            vectors[found] = cached
            todo[found] = False
        todo = np.flatnonzero(todo).tolist()
        _embed_missing(emb, uniq, hashes, todo, vectors, cache, batch_size, progress)
    finally:
        if own:
            cache.close()
    return vectors if len(uniq) == n else vectors[inverse]  # all distinct: inverse is the identity


def _embed_missing(emb, uniq, hashes, todo, vectors, cache, batch_size, progress) -> None:
    if not todo:
        return
    batch_size = min(batch_size, emb.chunk)
    with meter(f"embedding ({emb.name})", len(todo), min_total=emb.progress_min, enabled=progress) as bar:
        for a in range(0, len(todo), batch_size):
            js = todo[a : a + batch_size]
            V = emb.embed([uniq[j] for j in js])
            vectors[js] = V
            if cache is not None:
                cache.put(emb.key, ((hashes[j], V[k]) for k, j in enumerate(js)))
            bar.advance(len(js))


def field_text(r: Record, field: str) -> str:
    if field == "text":
        return r.text
    if field == "target":
        return r.target or ""
    if field == "all":
        return "\n".join(r.texts())
    return getattr(r, field) or ""


def use_cache_dir(data: Dataset, directory: str | Path) -> None:
    """Pin the cache folder (or "off") for every embedding this dataset's detectors ask for."""
    value = str(directory)
    current = data.artefact(CACHE_DIR_ARTEFACT, lambda: value)
    if current != value:
        raise ConfigError(f"embedding cache folder already set to {current!r} for this dataset")


def dataset_embeddings(
    data: Dataset,
    embedder: str = "wordllama",
    field: str = "text",
    cache: EmbeddingCache | str | Path | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """One shared (n, dim) matrix per dataset, backend and field (artefact `embeddings:NAME[:FIELD]`).

    The cache folder is, in order: `cache`, the one pinned with `use_cache_dir`, the default.
    """
    if field not in FIELDS:
        raise ConfigError(f"unknown embedding field {field!r}; expected one of: {', '.join(FIELDS)}")
    name = f"embeddings:{embedder}" if field == "text" else f"embeddings:{embedder}:{field}"

    def build() -> np.ndarray:
        where = cache if cache is not None else data.artefact(CACHE_DIR_ARTEFACT, lambda: None)
        texts = [field_text(r, field) for r in data]
        return embed_texts(texts, embedder, cache=where, progress=progress)

    return data.artefact(name, build)
