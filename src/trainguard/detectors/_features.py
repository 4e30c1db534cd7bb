"""Shared learned features: out-of-fold probabilities from a light text classifier.

Both label consistency and clean-label suspects need "what would a model that
never saw this row say about it". One logistic regression on word n-gram
TF-IDF plus the row's embedding, fitted K times (K-fold), gives that once per
dataset; detectors read it through the dataset artefact.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from trainguard.detectors._repr import embeddings, label_codes
from trainguard.io.dataset import Dataset

TOKEN_PATTERN = r"(?u)\b\w+\b|[^\w\s]"


def text_features(data: Dataset, embedder: str) -> sparse.csr_matrix:
    def build():
        texts = [r.text for r in data]
        T = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(texts) >= 50 else 1, sublinear_tf=True,
                            max_features=200_000, token_pattern=TOKEN_PATTERN, dtype=np.float32).fit_transform(texts)
        E = embeddings(data, embedder) if embedder != "none" else np.zeros((len(texts), 0), np.float32)
        return sparse.hstack([T, sparse.csr_matrix(E)], format="csr", dtype=np.float32)

    return data.artefact(f"text-features:{embedder}", build)


def oof_probabilities(data: Dataset, embedder: str, folds: int = 5, C: float = 4.0, seed: int = 0) -> np.ndarray:
    """(n, classes) out-of-fold P(label | text); classes with fewer rows than folds get their in-sample fit."""

    def build():
        y, names = label_codes(data)
        X = text_features(data, embedder)
        k = int(min(folds, max(2, np.bincount(y).min())))
        P = np.zeros((len(y), len(names)))
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for tr, te in skf.split(np.zeros(len(y)), y):
            clf = LogisticRegression(C=C, max_iter=300)
            clf.fit(X[tr], y[tr])
            P[np.ix_(te, clf.classes_)] = clf.predict_proba(X[te])
        return P

    return data.artefact(f"oof-proba:{embedder}:{folds}:{C}:{seed}", build)
