"""Shared learned features: exact leave-one-out P(label | text), without refitting anything.

Label consistency and clean-label suspects both need "what would a model that
never saw this row say about it". K-fold logistic regression gave that at
~700 rows/s; two models whose leave-one-out predictions have a closed form
give it exactly (n folds, not 5) in about a second per 20,000 rows:

- binarised multinomial naive Bayes on word 1-2-grams: the row's own counts are
  subtracted from its class's counts before it is scored;
- ridge regression of the one-hot label on the embedding (plus intercept):
  LOO prediction = (f_i - h_ii y_i) / (1 - h_ii), h the hat matrix diagonal.

Their outputs are stacked by a 3-parameter softmax fitted on the LOO outputs
themselves (out-of-sample for every row), which also calibrates the result.
Measured on 20,000 SST-2 rows with 10 % flipped labels: AUROC 0.925 vs 0.922
for 5-fold LR on TF-IDF + embedding (benchmarks/bench_representation.py).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from threadpoolctl import threadpool_limits

from trainguard.detectors._repr import embeddings, label_codes
from trainguard.io.dataset import Dataset

TOKEN_PATTERN = r"(?u)\b\w+\b|[^\w\s]"


def word_presence(data: Dataset):
    """Binary word 1-2-gram presence (csr, float64), shared by the detectors that need it."""

    def build():
        from sklearn.feature_extraction.text import CountVectorizer  # lazy: sklearn costs ~2 s to import
        cv = CountVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN, binary=True, dtype=np.float64)
        try:
            return cv.fit_transform([r.text for r in data]).tocsr()
        except ValueError:  # no token at all
            from scipy import sparse

            return sparse.csr_matrix((len(data), 0))

    return data.artefact("word-presence:1-2", build)


def nb_loo_logits(X, y: np.ndarray, C: int, alpha: float = 0.5) -> np.ndarray:
    """(n, C) leave-one-out log P(x | c) + log P(c) of binarised multinomial naive Bayes."""
    n, V = X.shape
    Y = np.zeros((n, C))
    Y[np.arange(n), y] = 1.0
    N = np.asarray((X.T @ Y).T)  # C x V counts
    T = N.sum(1)
    theta = np.log(N + alpha) - np.log(T + alpha * V)[:, None]
    S = np.asarray(X @ theta.T)
    length = np.asarray(X.sum(1)).ravel()
    coo = X.tocoo()
    r, w, x = coo.row, coo.col, coo.data
    own = x * (np.log(N[y[r], w] - x + alpha) - np.log(N[y[r], w] + alpha))
    ty = T[y]
    S[np.arange(n), y] += np.bincount(r, weights=own, minlength=n) - length * (
        np.log(np.maximum(ty - length, 0) + alpha * V) - np.log(ty + alpha * V))
    counts = np.bincount(y, minlength=C).astype(np.float64)
    return S + np.log(counts[None, :] - Y + 1.0) - np.log(n - 1 + C)


def ridge_loo(E: np.ndarray, y: np.ndarray, C: int, lam: float = 1.0) -> np.ndarray:
    """(n, C) exact leave-one-out ridge predictions of the one-hot label from the embedding."""
    n = len(y)
    Xa = np.hstack([np.asarray(E, np.float64), np.ones((n, 1))])
    Y = np.zeros((n, C))
    Y[np.arange(n), y] = 1.0
    A = Xa.T @ Xa + lam * np.eye(Xa.shape[1])
    A[-1, -1] -= lam  # the intercept is not shrunk
    Ainv = np.linalg.pinv(A)
    F = Xa @ (Ainv @ (Xa.T @ Y))
    h = np.clip(np.einsum("ij,ij->i", Xa @ Ainv, Xa), 0.0, 1 - 1e-6)
    return (F - h[:, None] * Y) / (1 - h)[:, None]


def stack(parts: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Softmax of a weighted sum of LOO logit blocks, weights fitted by likelihood on the LOO outputs."""
    from scipy.optimize import minimize  # lazy: scipy.optimize costs ~0.5 s to import

    n = len(y)
    blocks = [p - p.mean(1, keepdims=True) for p in parts]

    def nll(w):
        L = sum(wi * b for wi, b in zip(w, blocks))
        return -log_softmax(L, axis=1)[np.arange(n), y].mean()

    w0 = np.ones(len(blocks))
    with threadpool_limits(1):  # tiny problem: BLAS threads only spin
        w = minimize(nll, w0, method="L-BFGS-B", bounds=[(0.0, 50.0)] * len(blocks)).x
    return np.exp(log_softmax(sum(wi * b for wi, b in zip(w, blocks)), axis=1))


def oof_probabilities(data: Dataset, embedder: str, alpha: float = 0.5, lam: float = 1.0) -> np.ndarray:
    """(n, classes) leave-one-out P(label | text): NB on words + ridge on the embedding, stacked."""

    def build():
        y, names = label_codes(data)
        C = len(names)
        parts = [nb_loo_logits(word_presence(data), y, C, alpha)]
        if embedder != "none":
            parts.append(ridge_loo(embeddings(data, embedder), y, C, lam))
        return stack(parts, y)

    return data.artefact(f"loo-proba:{embedder}:{alpha}:{lam}", build)
