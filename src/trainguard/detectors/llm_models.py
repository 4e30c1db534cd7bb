"""Small linear text models shipped as `.npz` arrays (no pickle, no sklearn at load time).

A model is an explicit n-gram vocabulary, IDF weights and logistic-regression
coefficients; scoring is tokenise -> sublinear TF x IDF -> L2 -> dot product,
the same arithmetic as scikit-learn's TfidfVectorizer + LogisticRegression
that `scripts/train_safety_models.py` fits, so the shipped arrays reproduce
the trained model exactly (the script checks this before writing them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import sparse

from trainguard.errors import ConfigError
from trainguard.text import ngrams, tokens

MODEL_DIR = "data/models"
HARM_MODEL = "harmful_request"
REFUSAL_MODEL = "refusal"
CATEGORY_MODEL = "harm_category"
SENTIMENT_MODEL = "sentiment"

_TURN = re.compile(r"(?:^|\n)\s*(?:human|user)\s*:", re.IGNORECASE)
_ASSISTANT = re.compile(r"(?:^|\n)\s*(?:assistant|gpt|model)\s*:", re.IGNORECASE)


def last_user_turn(prompt: str) -> str:
    """The request the response answers: the last Human:/user: turn of a dialogue, else the whole prompt."""
    starts = [m.end() for m in _TURN.finditer(prompt)]
    if not starts:
        return prompt
    tail = prompt[starts[-1]:]
    m = _ASSISTANT.search(tail)
    return (tail[: m.start()] if m else tail).strip()


_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def features(text: str, max_tokens: int, max_ngram: int) -> list[str]:
    """The model's analyzer: lower-cased word tokens, truncated, 1..n-grams.

    Curly apostrophes become straight ones: chat data writes "I’m sorry" as
    often as "I'm sorry", and they must be the same feature.
    """
    return ngrams(tokens(text.translate(_QUOTES))[:max_tokens], max_ngram)


@dataclass(frozen=True)
class LinearTextModel:
    name: str
    vocab: dict[str, int]
    idf: np.ndarray  # (F,)
    coef: np.ndarray  # (C, F); C == 1 for a binary model
    intercept: np.ndarray  # (C,)
    classes: tuple[str, ...]
    max_tokens: int
    max_ngram: int

    def matrix(self, texts: Sequence[str]) -> sparse.csr_matrix:
        indptr, idx, vals = [0], [], []
        for t in texts:
            counts: dict[int, int] = {}
            for g in features(t, self.max_tokens, self.max_ngram):
                j = self.vocab.get(g)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            idx.extend(counts)
            vals.extend(counts.values())
            indptr.append(len(idx))
        X = sparse.csr_matrix((np.asarray(vals, np.float64), np.asarray(idx, np.int64), np.asarray(indptr)),
                              shape=(len(texts), len(self.idf)))
        X.data = 1.0 + np.log(X.data)
        X = X @ sparse.diags(self.idf)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(1)).ravel())
        return sparse.csr_matrix(sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ X)

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.matrix(texts) @ self.coef.T) + self.intercept

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        """Binary: P(positive class), shape (n,). Multiclass: softmax, shape (n, C)."""
        z = self.decision(texts)
        if z.shape[1] == 1:
            return 1.0 / (1.0 + np.exp(-z[:, 0]))
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def save(self, path: Path) -> None:
        terms = sorted(self.vocab, key=self.vocab.get)
        np.savez_compressed(
            path, vocab=np.array(terms, dtype=str), idf=self.idf, coef=self.coef, intercept=self.intercept,
            classes=np.array(self.classes, dtype=str), config=np.array([self.max_tokens, self.max_ngram]),
        )

    @classmethod
    def load(cls, path: Path | str, name: str = "") -> "LinearTextModel":
        try:
            with np.load(path, allow_pickle=False) as z:
                vocab = {str(t): i for i, t in enumerate(z["vocab"].tolist())}
                idf, coef, b = z["idf"].astype(np.float64), z["coef"].astype(np.float64), z["intercept"].astype(np.float64)
                classes = tuple(str(c) for c in z["classes"].tolist())
                max_tokens, max_ngram = (int(v) for v in z["config"])
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"cannot load text model {path}: {e}") from None
        if coef.shape[1] != len(vocab) or idf.shape != (len(vocab),) or coef.shape[0] != b.shape[0]:
            raise ConfigError(f"text model {path}: array shapes do not agree")
        return cls(name or Path(path).stem, vocab, idf, coef, b, classes, max_tokens, max_ngram)


@lru_cache(maxsize=8)
def bundled(name: str) -> LinearTextModel:
    """A model shipped in the package (rebuild with scripts/train_safety_models.py)."""
    ref = resources.files("trainguard").joinpath(f"{MODEL_DIR}/{name}.npz")
    if not ref.is_file():
        raise ConfigError(f"bundled model {name!r} is missing; rebuild it with scripts/train_safety_models.py")
    with resources.as_file(ref) as p:
        return LinearTextModel.load(p, name)
