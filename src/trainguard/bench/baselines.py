"""The tools a data team reaches for first, run on identical inputs for side-by-side numbers."""

from __future__ import annotations

import numpy as np


def cleanlab_label_issues(texts: list[str], labels: list[str], seed: int = 0, folds: int = 5):
    """cleanlab `find_label_issues` on out-of-fold TF-IDF + logistic-regression probabilities.

    Returns (flagged row indices, per-row suspicion = 1 - label quality score).
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    X = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts)
    clf = LogisticRegression(max_iter=1000, C=4.0)
    probs = cross_val_predict(clf, X, y, cv=folds, method="predict_proba")
    issues = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    quality = get_label_quality_scores(y, probs)
    return set(np.flatnonzero(issues).tolist()), 1.0 - quality


def spectre_scores(X: np.ndarray, y: np.ndarray, eps: float = 0.05, dims: int = 32, alpha: float = 4.0,
                   filter_rounds: int = 10) -> np.ndarray:
    """SPECTRE (Hayase et al. 2021) outlier scores per class, higher = more suspicious.

    Per class: project onto the top `dims` principal directions, estimate mean and covariance
    robustly (filtering: `filter_rounds` times drop the rows furthest along the kept set's top
    principal direction, `eps` of the class in all), whiten with that estimate, and score each row with the
    quantum-entropy (QUE) statistic x^T Q x, Q = exp(alpha (C - I) / (||C||_2 - 1)) / tr(.),
    C the covariance of the whitened rows. Written from the paper, for side-by-side numbers only.
    """
    from scipy.linalg import expm

    out = np.zeros(len(X))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) <= dims + 2:
            continue
        Z = X[idx] - X[idx].mean(0)
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        R = Z @ vt[:dims].T
        keep = np.ones(len(R), bool)
        step = max(1, int(round(eps * len(R) / filter_rounds)))
        for _ in range(filter_rounds):  # filter along the kept set's top direction (Diakonikolas et al.'s filter)
            mu = R[keep].mean(0)
            cov = np.cov(R[keep], rowvar=False)
            top = np.linalg.eigh(cov)[1][:, -1]
            proj = ((R - mu) @ top) ** 2
            proj[~keep] = -np.inf
            keep[np.argsort(-proj)[:step]] = False
        mu = R[keep].mean(0)
        cov = np.cov(R[keep], rowvar=False) + 1e-6 * np.eye(dims)
        w, v = np.linalg.eigh(cov)
        W = (R - mu) @ v @ np.diag(1.0 / np.sqrt(np.maximum(w, 1e-12))) @ v.T
        C = np.cov(W, rowvar=False)
        norm = max(np.linalg.eigvalsh(C).max() - 1.0, 1e-9)
        Q = expm(alpha * (C - np.eye(dims)) / norm)
        Q /= np.trace(Q)
        out[idx] = np.einsum("ij,jk,ik->i", W, Q, W)
    return out


def early_loss_scores(texts: list[str], labels: list[str], epochs: int = 2, seed: int = 0) -> np.ndarray:
    """The anti-backdoor-learning signal (Li et al. 2021): rows a model fits unusually early.

    A linear model (word 1-2-gram TF-IDF, logistic loss, SGD) trained for `epochs` passes; the
    score is the negated per-row loss on its own label, so backdoor rows (a shortcut learned
    fast) rank first. ABL's isolation step with a linear stand-in for the network.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier

    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    X = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts)
    clf = SGDClassifier(loss="log_loss", alpha=1e-5, random_state=seed, learning_rate="constant", eta0=0.05)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        clf.partial_fit(X[order], y[order], classes=np.arange(len(classes)))
    p = clf.predict_proba(X)[np.arange(len(y)), y]
    return np.log(np.clip(p, 1e-12, 1.0))  # higher = lower loss = fitted earlier
