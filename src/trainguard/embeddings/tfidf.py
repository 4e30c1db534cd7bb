"""TF-IDF + truncated SVD (LSA): the no-model fallback, fitted on the dataset itself.

Word and character n-grams, so it still sees obfuscated or non-English text.
The vector of a text depends on the whole corpus it is fitted with, which is
why this backend is not cacheable and `embed` refits on every call: pass the
whole dataset at once.
"""

from __future__ import annotations

from importlib.metadata import version as _dist_version

import numpy as np
from scipy import sparse

from trainguard.embeddings.base import Embedder, register_embedder


class TfidfSvdEmbedder(Embedder):
    name = "tfidf-svd"
    cacheable = False

    def __init__(self, dim: int = 128, max_features: int = 200_000, seed: int = 0) -> None:
        self._dim = dim
        self._max_features = max_features
        self._seed = seed

    @property
    def version(self) -> str:
        return f"sk{_dist_version('scikit-learn')}-d{self._dim}-f{self._max_features}"

    @property
    def dim(self) -> int:
        return self._dim

    def _embed(self, texts: list[str]) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD  # lazy: sklearn costs ~2 s to import
        from sklearn.feature_extraction.text import TfidfVectorizer

        n = len(texts)
        min_df = 2 if n >= 50 else 1
        words = TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True,
                                max_features=self._max_features, dtype=np.float32)
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), min_df=min_df, sublinear_tf=True,
                                max_features=self._max_features, dtype=np.float32)
        blocks = []
        for vec in (words, chars):
            try:
                blocks.append(vec.fit_transform(texts))
            except ValueError:  # empty vocabulary (all texts empty or all below min_df)
                continue
        out = np.zeros((n, self._dim), np.float32)
        if not blocks:
            return out
        X = sparse.hstack(blocks).tocsr()
        k = min(self._dim, X.shape[1] - 1, n - 1)
        if k < 1:
            return out
        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=4, random_state=self._seed)
        out[:, :k] = svd.fit_transform(X)
        return out


register_embedder("tfidf-svd")(TfidfSvdEmbedder)
