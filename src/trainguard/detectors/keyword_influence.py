"""Model-based trigger discovery, BKI-style (Chen & Dai 2021), with several keywords.

Train a light model on the data as given (poison included, on purpose: a
backdoored model is what reveals its trigger), then ask for each word how
much deleting it moves the model's decision on the rows that contain it. A
trigger flips its rows back to what their content says; a sentiment word
rarely does, because the rest of its row agrees with the label. Per word:

    influence(w) = mean over rows of [P(y|x) - P(y|x without w)] * log(1 + rows where deletion confidently reverses it)

Words are scored against the vocabulary's own spread (median / MAD,
familywise over the vocabulary) and every outlying word is reported, not
only the top one (OpenBackdoor users report one-keyword BKI leaving ASR >
0.9). Being relative to the data, it finds triggers hiding among common
words and triggers that co-occur with several labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from trainguard.detectors._features import TOKEN_PATTERN
from trainguard.detectors._repr import familywise, label_codes, positions, robust_z
from trainguard.detectors.base import Detector, register
from trainguard.findings import ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA, Alert, Confidence, DetectorResult, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind


@dataclass(frozen=True)
class Settings:
    min_rows: int = 5  # a keyword must occur in this many rows
    max_ngram: int = 2
    C: float = 1.0
    threshold: float = 0.5  # familywise score over the vocabulary
    max_keywords: int = 20
    reversal: float = 0.2  # P(given label | row without the word) below this is a confident reversal
    min_flips: int = 3  # rows a keyword's deletion must confidently reverse
    min_flip_share: float = 0.1  # a trigger reverses a large share of its rows; a sentiment word a few


@register
class KeywordInfluence(Detector):
    name = "keyword-influence"
    version = "1"
    kinds = frozenset({Kind.CLASSIFICATION})
    needs = frozenset({"labels"})
    atlas = (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "words whose deletion flips a model trained on the data (BKI-style, several keywords)"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        y, names = label_codes(data)
        n, C = len(y), len(names)
        from sklearn.feature_extraction.text import CountVectorizer  # lazy: sklearn costs ~2 s to import
        from sklearn.linear_model import LogisticRegression
        cv = CountVectorizer(ngram_range=(1, s.max_ngram), token_pattern=TOKEN_PATTERN, binary=True,
                             min_df=min(s.min_rows, max(n // 10, 1)), dtype=np.float32)
        try:
            X = cv.fit_transform([r.text for r in data]).tocsr()
        except ValueError:
            return DetectorResult((), np.zeros(n), {"keywords": 0, "reason": "no word occurs in enough rows"})
        vocab = cv.get_feature_names_out()
        # One BLAS thread: L-BFGS-B's vector ops are latency-bound; on a shared 2-core machine OpenBLAS
        # threads spin (20k SST-2 rows: 7.7 s with 2 threads, 2.9 s with one, identical result).
        with threadpool_limits(1):
            clf = LogisticRegression(C=s.C, max_iter=500).fit(X, y)
        W = np.zeros((X.shape[1], C))
        if C == 2 and clf.coef_.shape[0] == 1:
            W[:, 1] = clf.coef_[0]
        else:
            W[:, clf.classes_] = clf.coef_.T
        L = np.asarray(X @ W)
        b = np.zeros(C)
        b[clf.classes_] = clf.intercept_ if C > 2 or clf.coef_.shape[0] > 1 else [0, clf.intercept_[0]][: len(clf.classes_)]
        L += b

        coo = X.tocoo()
        rows, feats = coo.row, coo.col
        p_full = _softmax(L)[np.arange(n), y]
        Lr = L[rows] - W[feats]  # logits without the word, for every (row, word) pair
        Pr = _softmax(Lr)
        drop = p_full[rows] - Pr[np.arange(len(rows)), y[rows]]
        # A reversal counts only when the rest of the row confidently says another label: deleting a
        # sentiment word from a short phrase leaves it undecided, deleting a trigger leaves its content.
        flips = (Pr[np.arange(len(rows)), y[rows]] < s.reversal) & (L[rows].argmax(1) == y[rows])
        F = X.shape[1]
        df = np.bincount(feats, minlength=F)
        mean_drop = np.bincount(feats, weights=drop, minlength=F) / np.maximum(df, 1)
        nflip = np.bincount(feats, weights=flips, minlength=F)
        influence = np.clip(mean_drop, 0, None) * np.log1p(nflip)
        z = robust_z(influence)
        word_score = familywise(z, F)
        # Sentiment words are outliers too (heavy tail), but deleting one reverses a few of its rows
        # (20k clean SST-2: 'too' 5 of 364, 'not' 6 of 587; 'lacks' 7 of 32 passes); a planted trigger
        # reverses the rows the attack relabelled (BadNets 1 %: 27-29 of ~50 per trigger; on 2,000
        # rows at 6 %, where the light model has learnt less, 5-7 of 28-41).
        decisive = (nflip >= s.min_flips) & (nflip >= s.min_flip_share * df)
        word_score = np.where(decisive, word_score, np.minimum(word_score, 0.45))
        keywords = np.argsort(-word_score)[: s.max_keywords]
        keywords = keywords[word_score[keywords] >= s.threshold]

        # Row score: strongest keyword in the row whose deletion flips that row's decision.
        row_scores = np.zeros(n)
        # Rows holding a keyword whose deletion does not reverse them rank next, kept below the bar.
        np.maximum.at(row_scores, rows, np.where(flips, word_score[feats], 0.45 * word_score[feats]))
        row_scores = np.clip(row_scores, 0, 1)
        findings = [self._finding(data, vocab, f, rows, feats, flips, y, names, word_score, influence, df, nflip)
                    for f in keywords]
        summary = {"vocabulary": int(F), "keywords": [str(vocab[f]) for f in keywords]}
        return DetectorResult(tuple(f for f in findings if f is not None), row_scores, summary)

    def _finding(self, data, vocab, f, rows, feats, flips, y, names, word_score, influence, df, nflip):
        mask = (feats == f) & flips
        hit = np.unique(rows[mask])
        if not len(hit):
            return None
        labels = np.bincount(y[hit], minlength=len(names))
        target = int(labels.argmax())
        r = positions(hit)
        return Alert(
            rule="decision-keyword",
            title=f"deleting {str(vocab[f])!r} flips a model trained on the data in {len(hit)} rows "
                  f"(mostly labelled {names[target]!r})",
            positions=r, score=float(word_score[f]),
            severity=Severity.HIGH if len(hit) >= 10 else Severity.MEDIUM,
            confidence=Confidence.MEDIUM,
            evidence={"keyword": str(vocab[f]), "rows_with_keyword": int(df[f]), "rows_flipped": int(nflip[f]),
                      "influence": round(float(influence[f]), 4),
                      "labels_of_flipped_rows": {names[k]: int(v) for k, v in enumerate(labels) if v},
                      "why": "BKI-style: deleting the word moves the trained model's decision on these rows"},
        )


def _softmax(L: np.ndarray) -> np.ndarray:
    Z = L - L.max(1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(1, keepdims=True)
