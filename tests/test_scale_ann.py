"""The HNSW path of the representation detectors' kNN: recall against exact, self excluded,
deterministic, and the exact path kept below the size threshold."""

from __future__ import annotations

import numpy as np
import pytest

from trainguard.detectors import _repr
from trainguard.detectors._ann import _drop_self, ann_knn
from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record

pytest.importorskip("usearch")


def unit_clusters(n: int, d: int = 32, groups: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, d))
    X = centres[rng.integers(0, groups, n)] + 0.3 * rng.normal(size=(n, d))
    X = X.astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


def test_ann_matches_exact_closely_and_never_returns_self():
    X = unit_clusters(4000)
    X[7] = X[8]  # an exact duplicate must still be found (similarity 1), never the row itself
    ai, asim = ann_knn(X, 15)
    ei, esim = _repr.exact_knn(X, 15)
    assert ai.shape == ei.shape == (4000, 15)
    assert recall(ai, ei) >= 0.95
    assert not (ai == np.arange(4000)[:, None]).any()
    assert ai[7, 0] == 8 and asim[7, 0] == pytest.approx(1.0, abs=1e-5)
    assert (np.diff(asim, axis=1) <= 1e-6).all()  # most similar first
    # Reported similarities are the true cosines of the returned rows.
    true = np.einsum("ij,ikj->ik", X, X[ai])
    assert np.allclose(true, asim, atol=1e-4)


def test_ann_is_deterministic():
    X = unit_clusters(3000, seed=1)
    a = ann_knn(X, 10)
    b = ann_knn(X, 10)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


def test_tiny_inputs():
    i, s = ann_knn(unit_clusters(1), 5)
    assert i.shape == (1, 0)
    i, s = ann_knn(unit_clusters(3), 5)
    assert i.shape == (3, 2) and not (i == np.arange(3)[:, None]).any()


def test_drop_self_pads_rows_with_too_few_hits():
    keys = np.array([[0, 2, 1], [1, 0, 9]])
    sims = np.array([[1.0, 0.9, 0.8], [1.0, 0.7, 0.0]], np.float32)
    counts = np.array([3, 2])
    idx, sim = _drop_self(keys, sims, counts, 2, np.zeros((2, 2), np.int64), np.zeros((2, 2), np.float32))
    assert idx.tolist() == [[2, 1], [0, 1]]
    assert np.allclose(sim, [[0.9, 0.8], [0.7, -1.0]])


def dataset_with(X: np.ndarray) -> Dataset:
    data = Dataset.from_records([Record(row=i, kind=Kind.CLASSIFICATION, text=f"t{i}", label=str(i % 2))
                                 for i in range(len(X))], Kind.CLASSIFICATION)
    data.artefact("embeddings:wordllama", lambda: X)
    return data


def test_knn_is_exact_below_the_threshold_and_ann_above(monkeypatch):
    X = unit_clusters(1500, seed=2)
    exact = _repr.exact_knn(X, 10)
    small = _repr.knn(dataset_with(X), "wordllama", 10)
    assert (small[0] == exact[0]).all()  # below the threshold: identical to before
    calls = []
    import trainguard.detectors._ann as ann

    real = ann.ann_knn
    monkeypatch.setattr(ann, "ann_knn", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(_repr, "ANN_MIN_ROWS", 1000)
    big = _repr.knn(dataset_with(X), "wordllama", 10)
    assert calls == [1]
    assert recall(big[0], exact[0]) >= 0.95
