"""Approximate k nearest neighbours (HNSW, usearch) for embedding matrices too big for exact kNN.

Exact kNN is quadratic: 10^5 rows are 10^10 dot products, 10^6 rows 10^12. Above
`_repr.ANN_MIN_ROWS` the representation detectors use an HNSW graph instead. Below it the
exact path runs, so results on small data do not change. usearch: recall@15 0.986-0.989 on
10^5 SST-2 wordllama vectors against faiss-cpu HNSW's 0.982-0.986 at the same ef, a smaller install
(11 MB vs 25 MB), and a build that is deterministic on one thread; faiss built and queried faster in
the same (loaded, noisy) run (docs/_bench_representation.md, "Nearest neighbours at scale").

Determinism: the graph is built with one thread in row order, so the same matrix gives
the same neighbours on every run (a gate must not flip on a rerun); queries run on
several threads (a query does not change the graph).
"""

from __future__ import annotations

import os

import numpy as np

CONNECTIVITY = 16  # graph degree (M)
EXPANSION_ADD = 128  # efConstruction
EXPANSION_SEARCH = 96  # ef at query time; recall@15 0.988 on 10^5 SST-2 wordllama vectors (bench)


def ann_knn(X: np.ndarray, k: int, *, threads: int | None = None,
            expansion_search: int = EXPANSION_SEARCH) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities), shape (n, k), self excluded, most similar first.

    `X` holds unit rows (the embedders normalise), so the inner product is the cosine.
    """
    from usearch.index import Index

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    kk = min(k, n - 1)
    idx = np.zeros((n, max(kk, 0)), np.int64)
    sim = np.zeros((n, max(kk, 0)), np.float32)
    if kk < 1:
        return idx, sim
    threads = threads or min(4, os.cpu_count() or 1)
    index = Index(ndim=d, metric="ip", dtype="f32", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                  expansion_search=max(expansion_search, kk + 1))
    keys = np.arange(n, dtype=np.uint64)
    index.add(keys, X, threads=1)
    found = index.search(X, kk + 1, threads=threads)
    keys_found = np.asarray(found.keys).astype(np.int64).reshape(n, -1)
    dist = np.asarray(found.distances, np.float32).reshape(n, -1)
    counts = np.asarray(found.counts).reshape(n)
    return _drop_self(keys_found, 1.0 - dist, counts, kk, idx, sim)


def _drop_self(keys: np.ndarray, sims: np.ndarray, counts: np.ndarray, kk: int, idx: np.ndarray,
               sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's kk best hits other than itself (the graph may or may not return the row itself).

    A row that got fewer than kk hits (never seen on real data) is padded with itself at
    similarity -1, so it adds no neighbour evidence and the shapes stay fixed.
    """
    n = len(keys)
    rows = np.arange(n)[:, None]
    valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
    keep = valid & (keys != rows)
    # Stable order: best first among kept hits; the rank of each kept hit within its row.
    rank = np.cumsum(keep, axis=1) - 1
    take = keep & (rank < kk)
    r, c = np.nonzero(take)
    idx[:] = np.arange(n)[:, None]
    sim[:] = -1.0
    idx[r, rank[r, c]] = keys[r, c]
    sim[r, rank[r, c]] = sims[r, c]
    return idx, sim
