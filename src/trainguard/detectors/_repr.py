"""Helpers shared by the representation-level detectors.

Calibration convention (what fusion relies on): a detector's row score is a
monotone map of a per-row deviation z whose scale is fitted on the data's own
bulk (median / MAD), through `familywise(z, m)` = P(max of m null rows < z).
So 0.5 means "as extreme as the most extreme of m clean rows would be half
the time": one threshold means the same thing for every detector and every
dataset size, and a clean dataset puts few rows above it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.special import log_ndtr

from trainguard.embeddings import dataset_embeddings
from trainguard.io.dataset import Dataset

_MIX = 1e-3  # keeps the score strictly monotone (ranking survives) far below the threshold


def label_codes(data: Dataset) -> tuple[np.ndarray, list[str]]:
    def build():
        labels = [r.label if r.label is not None else "" for r in data]
        names = sorted(set(labels))
        index = {k: i for i, k in enumerate(names)}
        return np.fromiter((index[k] for k in labels), np.int32, len(labels)), names

    return data.artefact("label-codes", build)


def embeddings(data: Dataset, embedder: str, field: str = "text") -> np.ndarray:
    return dataset_embeddings(data, embedder, field)


def robust_z(x: np.ndarray, floor: float = 1e-9) -> np.ndarray:
    """(x - median) / (1.4826 MAD), with the MAD floored by the IQR and the std so ties do not explode."""
    x = np.asarray(x, np.float64)
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    if mad <= floor:
        q1, q3 = np.percentile(x, [25, 75])
        mad = max((q3 - q1) / 1.349, x.std(), floor)
    return (x - med) / mad


def familywise(z: np.ndarray, m: int) -> np.ndarray:
    """P(max of m standard-normal null rows < z), strictly increasing in z, in [0, 1]."""
    z = np.asarray(z, np.float64)
    m = max(int(m), 1)
    fw = np.exp(m * log_ndtr(z))
    return np.clip((1 - _MIX) * fw + _MIX * np.exp(log_ndtr(z)), 0.0, 1.0)


def z_for(score: float, m: int) -> float:
    """The z at which `familywise` reaches `score` (ignoring the tiny monotone mix)."""
    from scipy.special import ndtri

    return float(ndtri(score ** (1.0 / max(m, 1))))


def pca_reduce(X: np.ndarray, k: int) -> np.ndarray:
    """Centred projection on the top-k principal directions (eigh of the d x d covariance; d is small)."""
    R = X - X.mean(0)
    k = min(k, R.shape[1], max(R.shape[0] - 1, 1))
    C = (R.T @ R).astype(np.float64)
    w, V = np.linalg.eigh(C)
    return (R @ V[:, ::-1][:, :k].astype(R.dtype)).astype(np.float32)


def positions(hit: np.ndarray) -> tuple[int, ...]:
    """Sorted record positions for an Alert; the engine maps them to file rows and record ids."""
    return tuple(sorted({int(i) for i in hit}))


ANN_MIN_ROWS = 50_000  # from here on an HNSW index (`_ann`); below, exact kNN (results unchanged)


def knn(data: Dataset, embedder: str, k: int = 10, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours by cosine (self excluded), most similar first; shared per dataset.

    Exact below ANN_MIN_ROWS rows; above, approximate (HNSW): exact kNN is quadratic (543 s
    for 10^5 rows on 2 loaded cores, ~100x that at 10^6), and the detectors only read
    neighbourhood label shares, which HNSW's recall@15 of 0.988 on SST-2 barely moves
    (docs/_bench_representation.md, "Nearest neighbours at scale").
    """

    def build():
        X = embeddings(data, embedder)
        if len(X) >= ANN_MIN_ROWS:
            from trainguard.detectors._ann import ann_knn

            return ann_knn(X, k)
        return exact_knn(X, k, chunk)

    return data.artefact(f"knn:{embedder}:{k}", build)


def exact_knn(X: np.ndarray, k: int, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN by cosine over unit rows, in row chunks of bounded memory.

    Chunks run on a small thread pool: the matrix product and the partition
    release the GIL, and partitioning S in place (no negated copy) halves the
    memory traffic, which is what dominates at 20k x 20k.
    """
    n = len(X)
    kk = min(k, n - 1)
    idx = np.zeros((n, max(kk, 0)), np.int64)
    sim = np.zeros((n, max(kk, 0)), np.float32)

    def one(a: int) -> None:
        S = X[a : a + chunk] @ X.T
        rows = np.arange(S.shape[0])
        S[rows, rows + a] = -np.inf
        part = np.argpartition(S, n - kk, axis=1)[:, n - kk :]
        ps = np.take_along_axis(S, part, 1)
        order = np.argsort(-ps, axis=1)
        idx[a : a + chunk] = np.take_along_axis(part, order, 1)
        sim[a : a + chunk] = np.take_along_axis(ps, order, 1)

    if kk < 1:
        return idx, sim
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(0, n, chunk)))
    return idx, sim
