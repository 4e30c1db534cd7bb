"""Clean-label / feature-collision suspects: rows whose meaning sits in another label's region.

A clean-label poison keeps a plausible label but is crafted so that, to the
model, it looks like another class (Poison Frogs-style feature collision), or
carries content a reviewer would not call that label. In embedding space such
a row is surrounded by rows of another label. Per row: the share of its k
nearest neighbours (cosine) carrying another label, smoothed and turned into
log-odds, standardised within its own label (median / MAD), familywise over
the dataset. Ambiguous rows with mixed neighbourhoods stay low; a row deep in
a foreign region is reported with that region's label.

Second rule, content-free association (clean-label triggers, Turner et al.'s
label-consistent backdoor in text): the attacker adds a token only to rows
that already carry the target label, so no row's label is wrong and nothing
sits in a foreign region; the token is simply always with one label. Natural
words that are always with one label either mean it ('contrived': negative)
or define it (MedQuAD's 'affected' in every 'susceptibility' question). So per
word (>= min_word_rows rows): its observed label log-odds, minus what its own
embedding predicts (leave-one-out ridge over the vocabulary, word vector ->
label log-odds); words covering more than max_coverage of their label are
template words and skipped. The residual is scored against the vocabulary's
spread (median / MAD, familywise over the vocabulary); rows carrying a
reported word get its score. Measured at 1 % poison, 20,000 rows: AUROC 0.999
on SST-2 and 1.000 on MedQuAD, 0 rows over the bar on either clean set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainguard.detectors._features import TOKEN_PATTERN
from trainguard.detectors._repr import familywise, knn, label_codes, positions, robust_z
from trainguard.detectors.base import Detector, register
from trainguard.findings import ATLAS_POISON_TRAINING_DATA, Alert, Confidence, DetectorResult, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind


@dataclass(frozen=True)
class Settings:
    embedder: str = "wordllama"
    k: int = 15
    threshold: float = 0.5
    min_rows: int = 1
    min_word_rows: int = 5  # a word needs this many rows before its label association is judged
    max_coverage: float = 0.2  # words in more than this share of their label's rows define it
    word_ridge: float = 10.0
    prior_rows: float = 0.0  # pseudo-rows shrinking a word's observed label log-odds towards its prediction


@register
class FeatureCollision(Detector):
    name = "feature-collision"
    version = "2"
    kinds = frozenset({Kind.CLASSIFICATION})
    needs = frozenset({"labels", "embeddings"})
    atlas = (ATLAS_POISON_TRAINING_DATA,)
    Settings = Settings
    description = "rows whose embedding neighbourhood belongs to another label (clean-label suspects)"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        y, names = label_codes(data)
        idx, sim = knn(data, s.embedder, s.k)
        w = np.clip(sim, 0, None) + 1e-6
        other = ((y[idx] != y[:, None]) * w).sum(1) / w.sum(1)
        k = idx.shape[1]
        logit = np.log((other * k + 0.5) / ((1 - other) * k + 0.5))
        z = np.zeros(len(y))
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            if len(rows) >= 20:
                z[rows] = robust_z(logit[rows])
        scores = familywise(z, len(y))
        # The neighbourhood's own majority label, for the evidence.
        C = len(names)
        votes = np.zeros((len(y), C))
        np.add.at(votes, (np.repeat(np.arange(len(y)), k), y[idx].ravel()), w.ravel())
        region = votes.argmax(1)
        findings = []
        for c in range(C):
            for r in range(C):
                if r == c:
                    continue
                hit = np.flatnonzero((y == c) & (region == r) & (scores >= s.threshold))
                if len(hit) >= s.min_rows:
                    rows = positions(hit)
                    findings.append(Alert(
                        rule="foreign-region",
                        title=f"{len(hit)} rows labelled {names[c]!r} sit among rows labelled {names[r]!r}",
                        positions=rows, score=float(scores[hit].max()),
                        severity=Severity.MEDIUM, confidence=Confidence.LOW,
                        evidence={"label": names[c], "region_label": names[r], "rows_flagged": len(hit),
                                  "mean_other_label_share": round(float(other[hit].mean()), 3), "k": k,
                                  "embedder": s.embedder,
                                  "why": "nearest neighbours in embedding space carry another label"},
                    ))
        word_rows, words = self._content_free(data, y, names, findings)
        # Word scores enter only at the bar: below it the neighbourhood score keeps the per-row ranking.
        scores = np.where(word_rows >= s.threshold, np.maximum(scores, word_rows), scores)
        return DetectorResult(tuple(findings), scores, {"flagged_rows": int((scores >= s.threshold).sum()),
                                                        "label_forcing_words": words})

    def _content_free(self, data: Dataset, y: np.ndarray, names: list[str], findings: list) -> tuple[np.ndarray, list]:
        from sklearn.feature_extraction.text import CountVectorizer

        from trainguard.embeddings import embed_texts
        from trainguard.embeddings.store import CACHE_DIR_ARTEFACT

        s = self.settings
        n, C = len(y), len(names)
        out = np.zeros(n)
        cv = CountVectorizer(token_pattern=TOKEN_PATTERN, binary=True, min_df=s.min_word_rows, dtype=np.float64)
        try:
            X = cv.fit_transform([r.text for r in data]).tocsr()
        except ValueError:
            return out, []
        vocab = cv.get_feature_names_out()
        V = len(vocab)
        if V < 20:
            return out, []
        Y = np.zeros((n, C))
        Y[np.arange(n), y] = 1.0
        N = np.asarray(X.T @ Y)  # V x C rows per word and label
        df = N.sum(1)
        size = Y.sum(0)
        prior = size / n
        # Observed per-label log share vs prior, smoothed; predicted from the word's own vector.
        T = np.log((N + 2 * prior) / (df[:, None] + 2)) - np.log(prior)
        cache = data.artefact(CACHE_DIR_ARTEFACT, lambda: None)
        W = embed_texts(list(vocab), s.embedder, cache=cache).astype(np.float64)
        Xa = np.hstack([W, np.ones((V, 1))])
        A = Xa.T @ Xa + s.word_ridge * np.eye(Xa.shape[1])
        Ainv = np.linalg.pinv(A)
        F = Xa @ (Ainv @ (Xa.T @ T))
        h = np.clip(np.einsum("ij,ij->i", Xa @ Ainv, Xa), 0, 1 - 1e-6)
        pred = prior * np.exp((F - h[:, None] * T) / (1 - h)[:, None])
        pred = np.clip(pred / pred.sum(1, keepdims=True), 1e-4, 1 - 1e-4)
        # Observed log-odds (+0.5 smoothing), optionally shrunk towards the prediction by `prior_rows`
        # pseudo-rows; 0 by default: shrinking by 5 narrowed the vocabulary's spread and put the natural
        # 'contrived' (47 of 47 rows negative) over the bar on 20k clean SST-2.
        a = s.prior_rows
        observed = np.log((N + 0.5 + a * pred) / (df[:, None] - N + 0.5 + a * (1 - pred)))
        resid = observed - np.log(pred / (1 - pred))
        resid = np.where(N / np.maximum(size, 1)[None, :] <= s.max_coverage, resid, -np.inf)
        label = resid.argmax(1)
        best = np.maximum(resid[np.arange(V), label], -50.0)
        word_score = familywise(robust_z(best), V)
        coo = X.tocoo()
        own = label[coo.col] == y[coo.row]  # rows of the word that carry its forced label
        np.maximum.at(out, coo.row[own], word_score[coo.col[own]])
        reported = []
        for w in np.flatnonzero(word_score >= s.threshold):
            hit = coo.row[(coo.col == w) & own]
            if len(hit) < s.min_rows:
                continue
            reported.append(str(vocab[w]))
            rows = positions(hit)
            findings.append(Alert(
                rule="content-free-association",
                title=f"{str(vocab[w])!r} occurs only with label {names[label[w]]!r} in {len(hit)} rows, "
                      f"which its meaning does not explain",
                positions=rows, score=float(word_score[w]),
                severity=Severity.HIGH if len(hit) >= 10 else Severity.MEDIUM, confidence=Confidence.MEDIUM,
                evidence={"word": str(vocab[w]), "label": names[label[w]], "rows_with_word": int(df[w]),
                          "rows_with_label": int(N[w, label[w]]),
                          "label_share_of_word": round(float(N[w, label[w]] / df[w]), 3),
                          "predicted_share_from_meaning": round(float(pred[w, label[w]]), 3),
                          "embedder": s.embedder,
                          "why": "clean-label trigger shape: always with one label, carries no meaning of it"},
            ))
        return out, reported
