"""RLHF preference poisoning: a prompt token that flips which reply is preferred.

Rando & Tramer's universal jailbreak plants a word in the prompt and marks the
less safe reply as `chosen`. Without knowing the word:

* flip evidence (uses the labels): a cross-fitted pairwise (Bradley-Terry) model
  over reply features (TF-IDF of the reply opening, refusal and harm scores,
  length), recalibrated by one temperature fitted on its held-out logits, gives
  each pair pi_i = P(chosen is preferred | replies). For token t,
  LLR(t) = sum_i log(((1-eps)(1-pi_i) + eps*pi_i) / pi_i) over t's pairs; its
  p-value is taken under "each pair's orientation is Bernoulli(pi_i)", by
  Monte Carlo for the few tokens tested at a loose level, by a Chernoff bound
  (l >= 1) for the rest.
* prior (ignores the labels): a planted trigger sits at one place (end or start
  of the request) in every poisoned pair, which natural words rarely do. Tokens
  are ranked by the lower confidence bound of the share of their pairs at their
  modal position.

Weighted Bonferroni joins them: half of alpha is spread evenly over the m tokens
tested, half over the prior ranks with weight 1/rank^2, so the family-wise
error stays <= alpha (the weights never look at the labels) while a token at a
fixed position needs far less flip evidence. A trigger placed anywhere is still
found through the even half when its flip evidence is strong. When an
`annotator` field exists, annotators whose labels agree with the model far less
than the others' do are reported too.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from trainguard.detectors.base import Detector, register
from trainguard.detectors.llm_models import HARM_MODEL, REFUSAL_MODEL, bundled
from trainguard.findings import (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA, Confidence, DetectorResult,
                                 Finding, Severity)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import tokens

OWASP_POISONING = "LLM04"
_HUMAN = re.compile(r"(?:^|\n)\s*(?:human|user)\s*:", re.IGNORECASE)
_OTHER = re.compile(r"(?:^|\n)\s*(?:assistant|gpt|model|system)\s*:", re.IGNORECASE)
ANCHORS = ("prompt start", "last turn start", "prompt end")
LAMBDAS = np.linspace(1.0, 6.0, 26)


@dataclass(frozen=True)
class Settings:
    folds: int = 5
    min_rows: int = 5  # pairs a trigger must appear in
    alpha: float = 0.01
    epsilon: float = 0.05  # flipped pairs a trigger may leave unflipped
    reply_tokens: int = 48
    max_df_fraction: float = 0.2  # tokens in more pairs than this are not trigger candidates
    positions: int = 3  # offsets from each anchor (start/end) a trigger may sit at
    position_level: float = 0.05  # one-sided level of the share-at-position lower bound
    min_position_share: float = 0.5  # below this the token's pairs are tested wherever it sits
    prior_share: float = 0.5  # part of alpha spread over the position ranks (the rest evenly)
    simulations: int = 100_000  # Monte Carlo draws for tokens tested at a loose level
    annotator_field: str = "annotator"
    annotator_min_pairs: int = 20
    annotator_z: float = 4.0


def human_turns(prompt: str) -> list[str]:
    """The user's turns of a dialogue, in order; the whole prompt when it has no turn markers."""
    starts = list(_HUMAN.finditer(prompt))
    if not starts:
        return [prompt]
    out = []
    for m in starts:
        tail = prompt[m.end():]
        stop = _OTHER.search(tail)
        nxt = _HUMAN.search(tail)
        cut = min(x.start() for x in (stop, nxt) if x is not None) if (stop or nxt) else len(tail)
        out.append(tail[:cut].strip())
    return out


def token_positions(prompt: str, depth: int) -> dict[str, set[int]]:
    """Each token of the user's turns -> the anchored positions it occupies (anchor * depth + offset)."""
    turns = [tokens(t) for t in human_turns(prompt)]
    flat = [t for turn in turns for t in turn]
    out: dict[str, set[int]] = {t: set() for t in flat}
    last = turns[-1] if turns else []
    for a, seq in enumerate((flat, last, flat[::-1])):
        for o, t in enumerate(seq[:depth]):
            out[t].add(a * depth + o)
    return out
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


def flip_log_pvalues(pi: np.ndarray, A: sparse.csr_matrix, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per token (row of A): the flip LLR and the log of its Chernoff-bounded null tail.

    Null: each pair's orientation agrees with the model with probability pi_i. Only
    l >= 1 is used: smaller l would test a small shift of many pairs, which the
    model's miscalibration on whole topics (common words) produces on clean data.
    """
    q1 = (1 - eps) * (1 - pi) + eps * pi  # P(observed orientation | flipped)
    q2 = (1 - eps) * pi + eps * (1 - pi)
    a, b = np.log(q1 / pi), np.log(q2 / (1 - pi))  # the term when kept / when mirrored
    log_m = np.logaddexp(np.log(pi)[:, None] + LAMBDAS * a[:, None], np.log1p(-pi)[:, None] + LAMBDAS * b[:, None])
    llr = A @ a
    bound = np.asarray(A @ log_m) - llr[:, None] * LAMBDAS
    return llr, np.minimum(bound.min(axis=1), 0.0)


def calibrate(pi: np.ndarray) -> tuple[np.ndarray, float]:
    """One temperature on the held-out logits (no intercept: the pair order is arbitrary)."""
    z = logit(pi)
    scale = minimize_scalar(lambda t: np.logaddexp(0.0, -t * z).sum(), bounds=(0.01, 10.0), method="bounded").x
    return np.clip(expit(scale * z), 1e-4, 1 - 1e-4), float(scale)


def prior_weights(score: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Bonferroni weights (mean <= 1) from a label-free score: `share` of them by 1/rank^2, ties ranked low."""
    m = len(score)
    rank = m - np.searchsorted(np.sort(score), score, side="left")
    h2 = float(np.sum(1.0 / np.arange(1, m + 1) ** 2)) if m else 1.0
    return (1.0 - share) + share * m / (rank.astype(np.float64) ** 2 * h2), rank


def monte_carlo_log_pvalue(pi: np.ndarray, eps: float, draws: int, rng: np.random.Generator) -> float:
    """Exact-in-the-limit null tail of the flip LLR over these pairs: (1 + #{null >= observed}) / (1 + draws)."""
    a = np.log(((1 - eps) * (1 - pi) + eps * pi) / pi)
    b = np.log(((1 - eps) * pi + eps * (1 - pi)) / (1 - pi))
    observed, hits, chunk = a.sum(), 0, max(1, 2_000_000 // max(len(pi), 1))
    for start in range(0, draws, chunk):
        k = min(chunk, draws - start)
        null = np.where(rng.random((k, len(pi))) < pi, a, b).sum(axis=1)
        hits += int((null >= observed - 1e-9).sum())
    return math.log((1 + hits) / (1 + draws))


@register
class PreferenceFlipTrigger(Detector):
    name = "preference-trigger"
    version = "2"  # 1: token LLR vs a Markov bound only
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
        pi, scale = calibrate(cross_fitted_preference(D, s.folds))
        cand = self._candidates([token_positions(r.text or "", s.positions) for r in recs], n)
        m = max(len(cand), 1)
        names = list(cand)
        A = sparse.csr_matrix((np.ones(sum(len(cand[t]["rows"]) for t in names)),
                               np.concatenate([cand[t]["rows"] for t in names]) if names else np.zeros(0, int),
                               np.cumsum([0] + [len(cand[t]["rows"]) for t in names])), shape=(len(names), n))
        llr, lp_bound = flip_log_pvalues(pi, A, s.epsilon)
        weight, prior_rank = prior_weights(np.array([cand[t]["share_lcb"] for t in names]), s.prior_share)
        log_level = np.log(s.alpha * weight / m)
        lp = lp_bound.copy()
        rng = np.random.default_rng(0)
        floor = math.log(1.0 / (1 + s.simulations))
        for k in np.flatnonzero(log_level >= math.log(20.0 / s.simulations)):  # a loose level: simulate
            mc = monte_carlo_log_pvalue(pi[cand[names[k]]["rows"]], s.epsilon, s.simulations, rng)
            lp[k] = min(mc, lp_bound[k]) if mc <= floor else mc  # past the simulation's floor, report the bound
        margin = lp - log_level
        order = np.argsort(margin)
        row_scores = 1.0 - pi
        findings = []
        used: set[int] = set()
        for k in order:
            if margin[k] > 0:
                break
            t, c = names[k], cand[names[k]]
            rows = c["rows"]
            if len(used & set(rows.tolist())) >= 0.5 * len(rows):
                # a neighbour of a trigger already reported (a phrase's other word, same rows)
                findings = [_with_token(f, t) if _shares_rows(f, rows) else f for f in findings]
                continue
            used |= set(rows.tolist())
            strength = float(lp[k] / log_level[k])
            score = strength / (1.0 + strength)
            row_scores[rows] = np.maximum(row_scores[rows], score)
            findings.append(Finding(
                detector=self.name, rule="preference-flip-trigger", detector_version=self.version,
                title=f"prompt token {t!r} flips the preference in {len(rows)} pairs",
                rows=tuple(int(i) for i in rows), record_ids=tuple(recs[i].id for i in rows),
                score=score,
                severity=Severity.HIGH if strength >= 1.5 else Severity.MEDIUM,
                confidence=Confidence.HIGH if strength >= 3 else Confidence.MEDIUM,
                atlas=self.atlas,
                evidence={"trigger": t, "with_tokens": [], "pairs_with_token": c["pairs"],
                          "pairs_tested": len(rows), "position": c["position"],
                          "share_at_position": round(c["share"], 4), "position_rank": int(prior_rank[k]),
                          "llr": round(float(llr[k]), 2), "log10_p_flip": round(float(lp[k]) / math.log(10), 2),
                          "log10_level": round(float(log_level[k]) / math.log(10), 2),
                          "mean_p_chosen_preferred_with_token": round(float(pi[rows].mean()), 4),
                          "mean_p_chosen_preferred_overall": round(float(pi.mean()), 4),
                          "owasp": [OWASP_POISONING]},
            ))
        findings += self._annotators(data, pi)
        summary = {"pairs": n, "tokens_tested": len(cand), "calibration_scale": round(scale, 3),
                   "log10_level_even": round(math.log10(s.alpha * (1 - s.prior_share) / m), 3),
                   "model_agreement": round(float((pi > 0.5).mean()), 4),
                   "tokens_below": {f"{x:g}": int((lp_bound < math.log(x)).sum()) for x in (1e-2, 1e-3)},
                   "top_tokens": [[names[k], round(float(margin[k]) / math.log(10), 2), round(float(lp[k]) / math.log(10), 2)]
                                  for k in order[:5]],  # [token, log10 p - log10 level, log10 p]
                   "top_position_tokens": [names[k] for k in np.argsort(prior_rank, kind="stable")[:5]]}
        return DetectorResult(tuple(findings), row_scores, summary)

    def _candidates(self, positions: list[dict[str, set[int]]], n: int) -> dict[str, dict]:
        """Tokens in enough (but not too many) pairs; the pairs to test and the position evidence of each."""
        s = self.settings
        where: dict[str, list[int]] = defaultdict(list)
        for i, toks in enumerate(positions):
            for t in toks:
                where[t].append(i)
        max_df = max(s.min_rows, int(s.max_df_fraction * n))
        out = {}
        for t, rows in where.items():
            if not s.min_rows <= len(rows) <= max_df:
                continue
            at: dict[int, list[int]] = defaultdict(list)
            for i in rows:
                for p in positions[i][t]:
                    at[p].append(i)
            best = max(at, key=lambda p: (len(at[p]), -p)) if at else None
            k = len(at[best]) if at else 0
            share = k / len(rows)
            lcb = float(stats.beta.ppf(s.position_level, k, len(rows) - k + 1)) if k else 0.0
            focused = k >= s.min_rows and share >= s.min_position_share
            out[t] = {"rows": np.array(at[best] if focused else rows, dtype=np.int64), "pairs": len(rows),
                      "share": share, "share_lcb": lcb,
                      "position": f"{ANCHORS[best // s.positions]} +{best % s.positions}" if focused else "anywhere"}
        return out

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


def _shares_rows(f: Finding, rows: np.ndarray) -> bool:
    return len(set(f.rows) & set(rows.tolist())) >= 0.5 * max(len(f.rows), len(rows))


def _with_token(f: Finding, t: str) -> Finding:
    """Record a second word of the same trigger (e.g. a phrase) on the finding already made."""
    ev = dict(f.evidence)
    ev["with_tokens"] = [*ev.get("with_tokens", []), t]
    return dataclasses.replace(f, evidence=ev)
