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
