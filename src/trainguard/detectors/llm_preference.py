"""RLHF preference poisoning: a prompt token that flips which reply is preferred.

Rando & Tramer's universal jailbreak plants a word in the prompt and marks the
less safe reply as `chosen`. Without knowing the word: a cross-fitted pairwise
(Bradley-Terry) model, fitted on the data's own preferences over reply features
(TF-IDF of the reply opening, refusal and harm scores, length), gives each pair
pi_i = P(chosen is preferred | replies). For each prompt token t we test
"t forces a flip" against "t is irrelevant":

    LLR(t) = sum_{i has t} log(((1-eps)(1-pi_i) + eps*pi_i) / pi_i)

E[LR] = 1 under the null, so P(LR >= m/alpha) <= alpha/m (Markov), a Bonferroni
threshold over the m tokens tested. Rows carrying a found trigger are flagged.
When an `annotator` field exists, annotators whose labels agree with the model
far less than the others' do are reported too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from trainguard.detectors.base import Detector, register
from trainguard.detectors.llm_models import HARM_MODEL, REFUSAL_MODEL, bundled, last_user_turn
from trainguard.findings import (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA, Confidence, DetectorResult,
                                 Finding, Severity)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import tokens

OWASP_POISONING = "LLM04"


@dataclass(frozen=True)
class Settings:
    folds: int = 5
    min_rows: int = 5  # pairs a trigger must appear in
    alpha: float = 0.01
    epsilon: float = 0.05  # flipped pairs a trigger may leave unflipped
    reply_tokens: int = 48
    max_df_fraction: float = 0.2  # tokens in more pairs than this are not trigger candidates
    annotator_field: str = "annotator"
    annotator_min_pairs: int = 20
    annotator_z: float = 4.0


def _reply_features(chosen: list[str], rejected: list[str], n_tokens: int) -> sparse.csr_matrix:
    """Pairwise design: phi(chosen) - phi(rejected)."""
    both = chosen + rejected
    vec = TfidfVectorizer(analyzer=lambda t: tokens(t)[:n_tokens], sublinear_tf=True, min_df=3)
    T = vec.fit_transform(both)
    refuse = bundled(REFUSAL_MODEL).proba(both)
    harm = bundled(HARM_MODEL).proba(both)
    length = np.log1p(np.array([len(t) for t in both], np.float64))
    dense = sparse.csr_matrix(np.c_[refuse, harm, length / 5.0] * 3.0)
    Phi = sparse.hstack([T, dense]).tocsr()
    n = len(chosen)
    return (Phi[:n] - Phi[n:]).tocsr()


def cross_fitted_preference(D: sparse.csr_matrix, folds: int, seed: int = 0) -> np.ndarray:
    """pi_i = P(chosen preferred), each pair scored by a model that never saw it."""
    n = D.shape[0]
    fold = np.random.default_rng(seed).permutation(n) % max(2, folds)
    pi = np.empty(n)
    for k in range(max(2, folds)):
        tr, te = fold != k, fold == k
        X = sparse.vstack([D[tr], -D[tr]])
        y = np.r_[np.ones(tr.sum()), np.zeros(tr.sum())]
        clf = LogisticRegression(C=1.0, max_iter=2000, fit_intercept=False).fit(X, y)
        pi[te] = clf.predict_proba(D[te])[:, 1]
    return np.clip(pi, 1e-4, 1 - 1e-4)


@register
class PreferenceFlipTrigger(Detector):
    name = "preference-trigger"
    version = "1"
    kinds = frozenset({Kind.PREFERENCE})
    atlas = (ATLAS_POISON_TRAINING_DATA, ATLAS_BACKDOOR_TRIGGER)
    Settings = Settings
    description = "prompt tokens whose presence flips the preference (RLHF universal-trigger poisoning)"

    def applies_to(self, data: Dataset) -> str | None:
        reason = super().applies_to(data)
        if reason is None and len(data) < 4 * self.settings.min_rows:
            return f"needs at least {4 * self.settings.min_rows} pairs"
        return reason

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        recs = data.records
        n = len(recs)
        D = _reply_features([r.chosen or "" for r in recs], [r.rejected or "" for r in recs], s.reply_tokens)
        pi = cross_fitted_preference(D, s.folds)
        row_tokens = [set(tokens(last_user_turn(r.text))) for r in recs]
        where: dict[str, list[int]] = defaultdict(list)
        for i, toks in enumerate(row_tokens):
            for t in toks:
                where[t].append(i)
        max_df = max(s.min_rows, int(s.max_df_fraction * n))
        cand = {t: np.array(rows) for t, rows in where.items() if s.min_rows <= len(rows) <= max_df}
        m = max(len(cand), 1)
        threshold = math.log(m / s.alpha)
        per_row = np.log(((1 - s.epsilon) * (1 - pi) + s.epsilon * pi) / pi)
        llr = {t: float(per_row[rows].sum()) for t, rows in cand.items()}
        found = sorted((t for t, v in llr.items() if v >= threshold), key=lambda t: -llr[t])
        row_scores = 1.0 - pi
        findings = []
        used: set[int] = set()
        for t in found:
            rows = cand[t]
            if len(used & set(rows.tolist())) >= 0.5 * len(rows):
                continue  # a neighbour of a trigger already reported (same rows)
            used |= set(rows.tolist())
            strength = llr[t] / threshold
            row_scores[rows] = np.maximum(row_scores[rows], llr[t] / (llr[t] + threshold))
            findings.append(Finding(
                detector=self.name, rule="preference-flip-trigger", detector_version=self.version,
                title=f"prompt token {t!r} flips the preference in {len(rows)} pairs",
                rows=tuple(int(i) for i in rows), record_ids=tuple(recs[i].id for i in rows),
                score=float(llr[t] / (llr[t] + threshold)),
                severity=Severity.HIGH if strength >= 1.5 else Severity.MEDIUM,
                confidence=Confidence.HIGH if strength >= 3 else Confidence.MEDIUM,
                atlas=self.atlas,
                evidence={"trigger": t, "pairs_with_token": len(rows), "llr": round(llr[t], 2),
                          "threshold_llr": round(threshold, 2),
                          "mean_p_chosen_preferred_with_token": round(float(pi[rows].mean()), 4),
                          "mean_p_chosen_preferred_overall": round(float(pi.mean()), 4),
                          "owasp": [OWASP_POISONING]},
            ))
        findings += self._annotators(data, pi)
        summary = {"pairs": n, "tokens_tested": len(cand), "threshold_llr": round(threshold, 3),
                   "model_agreement": round(float((pi > 0.5).mean()), 4),
                   "top_tokens": [[t, round(llr[t], 2)] for t in sorted(llr, key=lambda t: -llr[t])[:5]]}
        return DetectorResult(tuple(findings), row_scores, summary)

    def _annotators(self, data: Dataset, pi: np.ndarray) -> list[Finding]:
        """Annotators whose agreement with the cross-fitted model is far below everyone else's."""
        s = self.settings
        who = [r.meta.get(s.annotator_field) for r in data.records]
        if all(w is None for w in who):
            return []
        rows_of: dict[str, list[int]] = defaultdict(list)
        for i, w in enumerate(who):
            if w is not None:
                rows_of[str(w)].append(i)
        agree = (pi > 0.5).astype(float)
        out = []
        for a, rows in sorted(rows_of.items()):
            if len(rows) < s.annotator_min_pairs:
                continue
            others = np.setdiff1d(np.flatnonzero([w is not None for w in who]), rows)
            if len(others) < s.annotator_min_pairs:
                continue
            p0 = agree[others].mean()
            k = agree[rows].mean()
            se = math.sqrt(max(p0 * (1 - p0), 1e-6) / len(rows))
            z = (p0 - k) / se
            if z >= s.annotator_z:
                rid = tuple(data.records[i].id for i in rows)
                out.append(Finding(
                    detector=self.name, rule="annotator-disagreement", detector_version=self.version,
                    title=f"annotator {a!r} agrees with the consensus model on {k:.0%} of {len(rows)} pairs "
                          f"(others {p0:.0%})",
                    rows=tuple(rows), record_ids=rid, score=float(min(1.0, z / (z + s.annotator_z))),
                    severity=Severity.HIGH if z >= 2 * s.annotator_z else Severity.MEDIUM,
                    confidence=Confidence.MEDIUM, atlas=self.atlas,
                    evidence={"annotator": a, "pairs": len(rows), "agreement": round(float(k), 4),
                              "others_agreement": round(float(p0), 4), "z": round(float(z), 2),
                              "owasp": [OWASP_POISONING]},
                ))
        return out
