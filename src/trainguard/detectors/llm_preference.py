"""RLHF preference poisoning: a prompt token that flips which reply is preferred.

Rando & Tramer's universal jailbreak plants a word in the prompt and marks the
less safe reply as `chosen`. Without knowing the word:

* flip evidence (uses the labels): cross-fitted pairwise (Bradley-Terry) models over
  reply features (TF-IDF of the reply opening; each available reply embedding; refusal
  and harm scores, length) are averaged on the logit scale and recalibrated by one
  temperature fitted on their held-out logits, giving each pair
  pi_i = P(chosen is preferred | replies). For token t,
  LLR(t) = sum_i log(((1-eps)(1-pi_i) + eps*pi_i) / pi_i) over t's pairs, turned
  into a tail by a Chernoff bound (l >= 1).
* prior (ignores the labels): a planted trigger sits at one place (end or start
  of the request) in every poisoned pair, which natural words rarely do. Tokens
  are ranked by the lower confidence bound of the share of their pairs at their
  modal position.

The prior becomes weights (mean <= 1, never looking at the labels): 30 % of the
mass spread evenly over the tokens tested, 70 % by 1/rank^2. The threshold is Westfall-Young's
single-step max-T on the weighted statistic (log tail - log weight): every pair's
orientation is redrawn from Bernoulli(pi) a few thousand times and a token's
adjusted p is the share of draws whose most extreme token beats it. That keeps
the family-wise error at alpha (given calibrated pi) while spending nothing on
the thousands of few-pair tokens that could never be significant, which
Bonferroni pays for in full. Adjusted p <= alpha (0.01) is a high finding (the
default gate quarantines its rows), and up to candidate_alpha (0.05) a medium
"possible trigger" for a reviewer: on hh-rlhf, whose labels a reply-only model matches 64 % of the time,
23 flipped pairs often carry no more evidence than that. A trigger placed
anywhere is still found through the even share when its flip evidence is strong. When an
`annotator` field exists, annotators whose labels agree with the model far less
than the others' do are reported too.

Sharded (issue 14, `trainguard scan --shard-rows N`): one map over the shards, the whole decision at finalize.
Each shard gives its pairs' facts (`_PairFacts`): the reply openings' tokens and the prompt's tokens as indices
into the shard's vocabularies, the tokens at the anchored prompt positions, the refusal/harm scores and lengths,
each embedder's chosen-minus-rejected vector, the annotator. Finalize joins them in shard order and does what
the in-memory scan does (the in-memory scan is the one-shard case of the same code): the TF-IDF is fitted on the
same token lists, folds and max-T draws are seeded as before and depend only on the number of pairs. Every
per-row value is computed row by row: the bundled models and WordLlama do not depend on the batch; MiniLM pads
its batches, and its vectors moved in the last bit with the batch and with torch's thread count, so it embeds
one text at a time on one torch thread (its own cache key; `_OneTextAtATime`): without padding that costs about
10 % less CPU than its batches on one thread, but a second core no longer helps. A backend fitted on the data
(tfidf-svd) cannot shard: a sharded scan with it fails (closed).
Memory: the driver holds, per pair, the facts above: 8 bytes per embedding dimension (2 KB for WordLlama,
3 KB for MiniLM), 4 bytes per distinct prompt token and per reply-opening token (up to 2 x 48), 48 bytes of
scores: 5.7 KB a pair on hh-rlhf with WordLlama and MiniLM, vocabularies included (about 3 KB less with
WordLlama alone, the default); then the in-memory
decision's own arrays. A worker holds its shard and its facts.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.special import expit, logit

from trainguard.detectors.base import NotApplicable, ShardedDetector, register
from trainguard.detectors.llm_models import HARM_MODEL, REFUSAL_MODEL, bundled
from trainguard.embeddings import Embedder, dataset_embeddings, embed_texts, embedder_names, get_embedder
from trainguard.embeddings.store import CACHE_DIR_ARTEFACT
from trainguard.errors import ConfigError
from trainguard.findings import (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA, Alert, Confidence,
                                 DetectorResult, Severity)
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
    alpha: float = 0.01  # family-wise: a high finding (quarantined by the default gate) at adjusted p <= alpha
    candidate_alpha: float = 0.05  # a medium "possible trigger" up to this adjusted p
    epsilon: float = 0.05  # flipped pairs a trigger may leave unflipped
    reply_tokens: int = 48
    max_df_fraction: float = 0.2  # tokens in more pairs than this are not trigger candidates
    positions: int = 3  # offsets from each anchor (start/end) a trigger may sit at
    position_level: float = 0.05  # one-sided level of the share-at-position lower bound
    min_position_share: float = 0.5  # below this the token's pairs are tested wherever it sits
    prior_share: float = 0.7  # part of alpha spread over the position ranks (the rest evenly); 0.5 -> 0.7 on dev seeds 101-146
    # Reply embeddings joined with the TF-IDF model. MiniLM ("minilm") is opt-in: on bench_llm's planted hh-rlhf
    # triggers (60 runs a rate) it changed which runs were found by 0 at 1 % and 2 at 5 %, at 20x the cold time
    # (179 s vs 8.5 s on 2,312 pairs; benchmarks/bench_preference_embedders.py, docs/benchmarks.md section 4).
    embedders: tuple[str, ...] = ("wordllama",)
    embedding_c: float = 0.1  # inverse L2 strength of the embedding preference models
    null_draws: int = 2000  # simulated label sets for the max-statistic (Westfall-Young) threshold
    annotator_field: str = "annotator"
    annotator_min_pairs: int = 20


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
def _reply_features(docs: list[np.ndarray], words: list[str], scores: np.ndarray
                    ) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Pairwise designs phi(chosen) - phi(rejected): TF-IDF of the reply openings plus the scores, and the scores alone.

    `docs`: every chosen reply's opening tokens (indices into `words`), then every rejected one's; `scores`:
    their refusal and harm probabilities and log lengths, row for row. The vectorizer gets the same token
    lists the in-memory analyzer produced from the texts, so its matrix does not depend on the shards.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer  # lazy: sklearn costs ~2 s to import
    vec = TfidfVectorizer(analyzer=lambda i: [words[j] for j in docs[i]], sublinear_tf=True, min_df=3)
    T = vec.fit_transform(range(len(docs)))
    refuse, harm, length = scores[:, 0], scores[:, 1], scores[:, 2]
    dense = np.c_[refuse, harm, length / 5.0] * 3.0
    Phi = sparse.hstack([T, sparse.csr_matrix(dense)]).tocsr()
    n = len(docs) // 2
    return (Phi[:n] - Phi[n:]).tocsr(), dense[:n] - dense[n:]


def cross_fitted_preference(D, folds: int, seed: int = 0, C: float = 1.0) -> np.ndarray:
    """pi_i = P(chosen preferred), each pair scored by a model that never saw it."""
    n = D.shape[0]
    fold = np.random.default_rng(seed).permutation(n) % max(2, folds)
    stack = sparse.vstack if sparse.issparse(D) else np.vstack
    pi = np.empty(n)
    from sklearn.linear_model import LogisticRegression  # lazy: sklearn costs ~2 s to import
    for k in range(max(2, folds)):
        tr, te = fold != k, fold == k
        X = stack([D[tr], -D[tr]])
        y = np.r_[np.ones(tr.sum()), np.zeros(tr.sum())]
        clf = LogisticRegression(C=C, max_iter=3000, fit_intercept=False).fit(X, y)
        pi[te] = clf.predict_proba(D[te])[:, 1]
    return np.clip(pi, 1e-4, 1 - 1e-4)


def _flip_terms(pi: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: the LLR term when its orientation is as labelled (a) or mirrored (b), and the log
    moment generating function of that term under the null at each lambda."""
    q1 = (1 - eps) * (1 - pi) + eps * pi  # P(observed orientation | flipped)
    q2 = (1 - eps) * pi + eps * (1 - pi)
    a, b = np.log(q1 / pi), np.log(q2 / (1 - pi))
    log_m = np.logaddexp(np.log(pi)[:, None] + LAMBDAS * a[:, None], np.log1p(-pi)[:, None] + LAMBDAS * b[:, None])
    return a, b, log_m


def _chernoff(base: np.ndarray, llr: np.ndarray) -> np.ndarray:
    """log of the Chernoff tail bound, (m, L) log-MGF sums and (m, k) LLRs -> (m, k), capped at 0.

    Only l >= 1 is used: smaller l would test a small shift of many pairs, which the
    model's miscalibration on whole topics (common words) produces on clean data.
    """
    return np.minimum((base[:, :, None] - llr[:, None, :] * LAMBDAS[None, :, None]).min(axis=1), 0.0)


def flip_log_pvalues(pi: np.ndarray, A: sparse.csr_matrix, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per token (row of A): the flip LLR and the log of its Chernoff-bounded null tail.

    Null: each pair's orientation agrees with the model with probability pi_i.
    """
    a, _, log_m = _flip_terms(pi, eps)
    llr = np.asarray(A @ a)
    return llr, _chernoff(np.asarray(A @ log_m), llr[:, None])[:, 0]


def max_t_log_pvalues(pi: np.ndarray, A: sparse.csr_matrix, eps: float, log_weight: np.ndarray, draws: int,
                      rng: np.random.Generator, chunk: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Family-wise adjusted log p per token (Westfall-Young single-step max-T), the observed statistic
    and the sorted null minima.

    The statistic is the weighted Chernoff tail, log p_k - log w_k; its null is simulated by redrawing
    every pair's orientation from Bernoulli(pi), so the adjusted p is exact for the dependent,
    discrete tests (few-pair tokens can never reach a Bonferroni level, and here they cost nothing).
    """
    a, b, log_m = _flip_terms(pi, eps)
    base = np.asarray(A @ log_m)
    observed = _chernoff(base, np.asarray(A @ a)[:, None])[:, 0] - log_weight
    null_min = np.empty(draws)
    for start in range(0, draws, chunk):
        k = min(chunk, draws - start)
        V = np.where(rng.random((len(pi), k)) < pi[:, None], a[:, None], b[:, None])
        null_min[start:start + k] = (_chernoff(base, np.asarray(A @ V)) - log_weight[:, None]).min(axis=0)
    null_min.sort()
    hits = np.searchsorted(null_min, observed + 1e-9, side="right")
    return np.log((1 + hits) / (1 + draws)), observed, null_min


def calibrate(pi: np.ndarray) -> tuple[np.ndarray, float]:
    """One temperature on the held-out logits (no intercept: the pair order is arbitrary)."""
    from scipy.optimize import minimize_scalar  # lazy: scipy.optimize and .stats cost ~1 s to import
    z = logit(pi)
    scale = minimize_scalar(lambda t: np.logaddexp(0.0, -t * z).sum(), bounds=(0.01, 10.0), method="bounded").x
    return np.clip(expit(scale * z), 1e-4, 1 - 1e-4), float(scale)


def prior_weights(score: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Bonferroni weights (mean <= 1) from a label-free score: `share` of them by 1/rank^2, ties ranked low."""
    m = len(score)
    rank = m - np.searchsorted(np.sort(score), score, side="left")
    h2 = float(np.sum(1.0 / np.arange(1, m + 1) ** 2)) if m else 1.0
    return (1.0 - share) + share * m / (rank.astype(np.float64) ** 2 * h2), rank


@register
class PreferenceFlipTrigger(ShardedDetector):
    name = "preference-trigger"
    version = "4"  # 4: MiniLM opt-in; 3: averaged preference models, max-T, possible-trigger tier, likelihood annotators
    kinds = frozenset({Kind.PREFERENCE})
    atlas = (ATLAS_POISON_TRAINING_DATA, ATLAS_BACKDOOR_TRIGGER)
    Settings = Settings
    description = "prompt tokens whose presence flips the preference (RLHF universal-trigger poisoning)"

    def __init__(self, settings=None, **overrides) -> None:
        super().__init__(settings, **overrides)
        unknown = [e for e in self.settings.embedders if e not in embedder_names()]
        if unknown:  # a typo must not pass for "not installed"
            raise ConfigError(f"detector preference-trigger: unknown embedder(s) {unknown}; "
                              f"available: {', '.join(embedder_names())}")

    def applies_to(self, data: Dataset) -> str | None:
        reason = super().applies_to(data)
        if reason is None and len(data) < 4 * self.settings.min_rows:
            return f"needs at least {4 * self.settings.min_rows} pairs"
        return reason

    def summarize(self, shard: Dataset) -> "_Shards":
        return _Shards((_PairFacts.of(shard, self.settings),))

    def finalize(self, summary: "_Shards", kind: Kind) -> DetectorResult | NotApplicable:
        """The in-memory decision on the pairs' facts joined in shard order (one shard in memory)."""
        if kind not in self.kinds:
            return NotApplicable(f"does not handle {kind.value} data")
        if summary.n < 4 * self.settings.min_rows:
            return NotApplicable(f"needs at least {4 * self.settings.min_rows} pairs")
        return self._decide(summary.joined())

    def _decide(self, facts: "_PairFacts") -> DetectorResult:
        s = self.settings
        n = facts.n
        pi, scale, models = self._preference(facts)
        cand = self._candidates(facts)
        names = list(cand)
        A = sparse.csr_matrix((np.ones(sum(len(cand[t]["rows"]) for t in names)),
                               np.concatenate([cand[t]["rows"] for t in names]) if names else np.zeros(0, int),
                               np.cumsum([0] + [len(cand[t]["rows"]) for t in names])), shape=(len(names), n))
        llr, lp_bound = flip_log_pvalues(pi, A, s.epsilon)
        weight, prior_rank = prior_weights(np.array([cand[t]["share_lcb"] for t in names]), s.prior_share)
        lp, observed, null_min = max_t_log_pvalues(pi, A, s.epsilon, np.log(weight), s.null_draws,
                                                   np.random.default_rng(0))
        cut = null_min[max(0, int(s.alpha * (s.null_draws + 1)) - 1)]  # the statistic at adjusted p = alpha
        strength_of = (observed / cut) if cut < 0 else np.zeros(len(names))  # >= 1 at the alpha bar
        order = np.lexsort((observed, lp))
        row_scores = 1.0 - pi
        findings = []
        used: set[int] = set()
        for k in order:
            if lp[k] > math.log(s.candidate_alpha):
                break
            t, c = names[k], cand[names[k]]
            rows = c["rows"]
            if len(used & set(rows.tolist())) >= 0.5 * len(rows):
                # a neighbour of a trigger already reported (a phrase's other word, same rows)
                findings = [_with_token(f, t) if _shares_rows(f, rows) else f for f in findings]
                continue
            used |= set(rows.tolist())
            p_adj = math.exp(lp[k])
            strength = float(strength_of[k])
            score = strength / (1.0 + strength)  # 0.5 at the alpha bar, below it for candidates
            row_scores[rows] = np.maximum(row_scores[rows], score)
            strong = p_adj <= s.alpha
            findings.append(Alert(
                rule="preference-flip-trigger",
                title=(f"prompt token {t!r} flips the preference in {len(rows)} pairs" if strong else
                       f"possible trigger: prompt token {t!r} may flip the preference in {len(rows)} pairs"),
                positions=tuple(int(i) for i in rows),
                score=score, severity=Severity.HIGH if strong else Severity.MEDIUM,
                confidence=Confidence.HIGH if p_adj <= s.alpha / 10 else Confidence.MEDIUM if strong
                else Confidence.LOW,
                evidence={"trigger": t, "with_tokens": [], "pairs_with_token": c["pairs"],
                          "pairs_tested": len(rows), "position": c["position"],
                          "share_at_position": round(c["share"], 4), "position_rank": int(prior_rank[k]),
                          "llr": round(float(llr[k]), 2), "log10_p_flip": round(float(lp_bound[k]) / math.log(10), 2),
                          "p_adjusted": round(p_adj, 5), "alpha": s.alpha, "candidate_alpha": s.candidate_alpha,
                          "mean_p_chosen_preferred_with_token": round(float(pi[rows].mean()), 4),
                          "mean_p_chosen_preferred_overall": round(float(pi.mean()), 4),
                          "owasp": [OWASP_POISONING]},
            ))
        findings += self._annotators(facts.annotators, pi)
        summary = {"pairs": n, "tokens_tested": len(cand), "calibration_scale": round(scale, 3),
                   "preference_models": models,
                   "model_agreement": round(float((pi > 0.5).mean()), 4),
                   "tokens_below": {f"{x:g}": int((lp_bound < math.log(x)).sum()) for x in (1e-2, 1e-3)},
                   "top_tokens": [[names[k], round(float(lp[k]) / math.log(10), 2), round(float(strength_of[k]), 3)]
                                  for k in order[:5]],  # [token, log10 adjusted p, statistic / its alpha cut]
                   "top_position_tokens": [names[k] for k in np.argsort(prior_rank, kind="stable")[:5]]}
        return DetectorResult(tuple(findings), row_scores, summary)

    def _preference(self, facts: "_PairFacts") -> tuple[np.ndarray, float, dict[str, str]]:
        """Calibrated P(chosen preferred) from the mean logit of cross-fitted reply models.

        One model on TF-IDF of the reply openings plus refusal/harm/length scores; one per
        embedder on the reply embeddings' difference plus the same scores. hh-rlhf's labels are
        noisy (about 61% agreement for any one of these): averaging the logits of models that
        see different features is what makes 20-odd flipped pairs stand out.
        """
        s = self.settings
        D, dense = _reply_features(facts.reply_docs, facts.reply_words, facts.scores)
        logits = [logit(cross_fitted_preference(D, s.folds))]
        models = {"tfidf": "used"}
        for name in s.embedders:
            E = facts.embeddings[name]
            if isinstance(E, str):  # an optional backend that is not installed
                models[name] = f"skipped: {E}"
                continue
            logits.append(logit(cross_fitted_preference(np.c_[E, dense], s.folds, C=s.embedding_c)))
            models[name] = "used"
        pi = np.clip(expit(np.mean(logits, axis=0)), 1e-4, 1 - 1e-4)
        pi, scale = calibrate(pi)
        return pi, scale, models

    def _candidates(self, facts: "_PairFacts") -> dict[str, dict]:
        """Tokens in enough (but not too many) pairs; the pairs to test and the position evidence of each.

        Tokens in the order they first occur (pair by pair, word by word): ties further on are broken by it.
        """
        from scipy import stats  # lazy: ~1 s to import
        s = self.settings
        n, words, ids, anchors = facts.n, facts.prompt_words, facts.prompt_ids, facts.anchors
        df = np.bincount(ids, minlength=len(words))
        starts = np.r_[0, np.cumsum(df)]
        rows_by_token = np.repeat(np.arange(n, dtype=np.int64), np.diff(facts.prompt_ptr))[
            np.argsort(ids, kind="stable")]
        slots = anchors.shape[1]
        at_row, at_slot = np.nonzero(anchors >= 0)  # pair by pair, then slot
        keys = anchors[at_row, at_slot].astype(np.int64) * slots + at_slot
        order = np.argsort(keys, kind="stable")  # by token and slot, pairs in order within
        keys, at_row = keys[order], at_row[order].astype(np.int64)
        max_df = max(s.min_rows, int(s.max_df_fraction * n))
        out = {}
        for t in np.flatnonzero((df >= s.min_rows) & (df <= max_df)):
            rows = rows_by_token[starts[t]:starts[t + 1]]
            lo, hi = np.searchsorted(keys, [t * slots, (t + 1) * slots])
            at: dict[int, np.ndarray] = {}
            for p in range(slots):
                a, b = np.searchsorted(keys[lo:hi], [t * slots + p, t * slots + p + 1])
                if b > a:
                    at[p] = at_row[lo + a:lo + b]
            best = max(at, key=lambda p: (len(at[p]), -p)) if at else None
            k = len(at[best]) if at else 0
            share = k / len(rows)
            lcb = float(stats.beta.ppf(s.position_level, k, len(rows) - k + 1)) if k else 0.0
            focused = k >= s.min_rows and share >= s.min_position_share
            out[words[t]] = {"rows": np.array(at[best] if focused else rows, dtype=np.int64), "pairs": len(rows),
                             "share": share, "share_lcb": lcb,
                             "position": f"{ANCHORS[best // s.positions]} +{best % s.positions}" if focused
                             else "anywhere"}
        return out

    def _annotators(self, who: list[str | None], pi: np.ndarray) -> list[Alert]:
        """Annotators whose labels the calibrated model finds far less likely than it should.

        Per annotator, the log-likelihood of their labels under pi against its null mean and
        variance (each label agreeing with the model with probability pi_i): a z-score that
        weighs a confident disagreement more than a coin flip, Bonferroni over annotators.
        """
        from scipy import stats  # lazy: ~1 s to import
        s = self.settings
        if all(w is None for w in who):
            return []
        rows_of: dict[str, list[int]] = defaultdict(list)
        for i, w in enumerate(who):
            if w is not None:
                rows_of[str(w)].append(i)
        tested = {a: np.asarray(rows) for a, rows in rows_of.items() if len(rows) >= s.annotator_min_pairs}
        if len(tested) < 2:
            return []
        loglik = np.log(pi)
        mean = pi * np.log(pi) + (1 - pi) * np.log1p(-pi)
        var = pi * (1 - pi) * np.log(pi / (1 - pi)) ** 2
        agree = (pi > 0.5).astype(float)
        labelled = np.flatnonzero([w is not None for w in who])
        out = []
        for a, rows in sorted(tested.items()):
            z = float((loglik[rows].sum() - mean[rows].sum()) / math.sqrt(max(var[rows].sum(), 1e-12)))
            p_adj = min(1.0, float(stats.norm.cdf(z)) * len(tested))
            if p_adj > s.alpha:
                continue
            others = np.setdiff1d(labelled, rows)
            k, p0 = float(agree[rows].mean()), float(agree[others].mean()) if len(others) else float("nan")
            out.append(Alert(
                rule="annotator-disagreement",
                title=f"annotator {a!r}: labels the consensus model finds unlikely (agrees on {k:.0%} of "
                      f"{len(rows)} pairs, others {p0:.0%})",
                positions=tuple(int(i) for i in rows),
                score=float(min(1.0, math.log(p_adj) / (2 * math.log(s.alpha)))) if p_adj > 0 else 1.0,
                severity=Severity.HIGH if p_adj <= s.alpha / 10 else Severity.MEDIUM,
                confidence=Confidence.MEDIUM,
                evidence={"annotator": a, "pairs": len(rows), "agreement": round(k, 4),
                          "others_agreement": round(p0, 4), "z": round(z, 2), "p_adjusted": float(f"{p_adj:.3g}"),
                          "annotators_tested": len(tested), "owasp": [OWASP_POISONING]},
            ))
        return out


def _shares_rows(f: Alert, rows: np.ndarray) -> bool:
    return len(set(f.positions) & set(rows.tolist())) >= 0.5 * max(len(f.positions), len(rows))


def _with_token(f: Alert, t: str) -> Alert:
    """Record a second word of the same trigger (e.g. a phrase) on the finding already made."""
    ev = dict(f.evidence)
    ev["with_tokens"] = [*ev.get("with_tokens", []), t]
    return dataclasses.replace(f, evidence=ev)


# -- sharded (issue 14): the module docstring's "Sharded" part -------------------------------------------------------
_SAME_IN_ANY_BATCH = frozenset({"wordllama"})  # a text's vector never depends on the texts embedded with it
_TORCH_THREADS = threading.Lock()


@dataclass
class _PairFacts:
    """What the decision needs from a run of pairs, row for row, without their texts.

    Tokens are indices into this run's own vocabularies (prompt tokens in first-seen order, which orders
    the candidates); reply openings and scores hold every chosen reply, then every rejected one.
    """

    n: int
    prompt_words: list[str]
    prompt_ids: np.ndarray  # each pair's distinct prompt tokens, in order of first occurrence
    prompt_ptr: np.ndarray  # (n + 1,) where each pair's tokens start
    anchors: np.ndarray  # (n, 3 * positions): the token at each anchored position, -1 past a short prompt
    reply_words: list[str]
    reply_ids: np.ndarray  # the first `reply_tokens` tokens of each reply
    reply_ptr: np.ndarray  # (2n + 1,)
    scores: np.ndarray  # (2n, 3): refusal and harm probability, log(1 + characters)
    embeddings: dict[str, np.ndarray | str]  # per embedder: chosen minus rejected (n, dim), or why it is skipped
    annotator_names: list[str]
    annotator_ids: np.ndarray  # (n,) index into annotator_names, -1 for none
    fitted: tuple[str, ...] = ()  # embedders fitted on this run's texts alone (no sharding)

    @classmethod
    def of(cls, data: Dataset, s: Settings) -> "_PairFacts":
        recs = data.records
        n = len(recs)
        words: dict[str, int] = {}
        ids: list[int] = []
        ptr = [0]
        anchors = np.full((n, 3 * s.positions), -1, np.int32)
        for i, r in enumerate(recs):
            for t, slots in token_positions(r.text or "", s.positions).items():
                j = words.setdefault(t, len(words))
                ids.append(j)
                for p in slots:
                    anchors[i, p] = j
            ptr.append(len(ids))
        replies = [r.chosen or "" for r in recs] + [r.rejected or "" for r in recs]
        reply_words: dict[str, int] = {}
        reply_ids: list[int] = []
        reply_ptr = [0]
        for t in replies:
            reply_ids.extend(reply_words.setdefault(w, len(reply_words)) for w in tokens(t)[:s.reply_tokens])
            reply_ptr.append(len(reply_ids))
        scores = np.zeros((0, 3))
        embeddings: dict[str, np.ndarray | str] = {}
        fitted: list[str] = []
        if n:
            scores = np.c_[bundled(REFUSAL_MODEL).proba(replies), bundled(HARM_MODEL).proba(replies),
                           np.log1p(np.array([len(t) for t in replies], np.float64))]
            for name in s.embedders:
                embeddings[name] = _embedding_difference(data, name, fitted)
        names: dict[str, int] = {}
        who = [r.meta.get(s.annotator_field) for r in recs]
        annotator_ids = np.array([-1 if w is None else names.setdefault(str(w), len(names)) for w in who], np.int32)
        return cls(n, list(words), np.array(ids, np.int32), np.array(ptr, np.int64), anchors, list(reply_words),
                   np.array(reply_ids, np.int32), np.array(reply_ptr, np.int64), scores, embeddings, list(names),
                   annotator_ids, tuple(fitted))

    @classmethod
    def join(cls, parts: tuple["_PairFacts", ...]) -> "_PairFacts":
        """Runs of pairs in order as one run: vocabularies united in first-seen order, indices renumbered."""
        fitted = sorted({f for p in parts for f in p.fitted})
        if fitted and len(parts) > 1:
            raise ConfigError(f"preference-trigger: embedder(s) {', '.join(fitted)} are fitted on the whole data, "
                              f"so a sharded scan cannot reproduce them; scan without --shard-rows or drop them "
                              f"from the detector's embedders")
        parts = tuple(p for p in parts if p.n)
        prompt_words: dict[str, int] = {}
        reply_words: dict[str, int] = {}
        annotators: dict[str, int] = {}
        ids, ptrs, anchors, chosen, rejected, c_ptr, r_ptr, sc, sr, who = ([] for _ in range(10))
        start = c_start = r_start = 0
        for p in parts:
            new = np.array([prompt_words.setdefault(w, len(prompt_words)) for w in p.prompt_words] + [-1], np.int32)
            ids.append(new[p.prompt_ids])
            ptrs.append(p.prompt_ptr[1:] + start)
            start += len(p.prompt_ids)
            anchors.append(new[p.anchors])  # -1 (no token) picks the appended -1
            new = np.array([reply_words.setdefault(w, len(reply_words)) for w in p.reply_words], np.int32)
            mid = p.reply_ptr[p.n]
            chosen.append(new[p.reply_ids[:mid]])
            rejected.append(new[p.reply_ids[mid:]])
            c_ptr.append(p.reply_ptr[1:p.n + 1] + c_start)
            r_ptr.append(p.reply_ptr[p.n + 1:] - mid + r_start)
            c_start += int(mid)
            r_start += len(p.reply_ids) - int(mid)
            sc.append(p.scores[:p.n])
            sr.append(p.scores[p.n:])
            new = np.array([annotators.setdefault(w, len(annotators)) for w in p.annotator_names] + [-1], np.int32)
            who.append(new[p.annotator_ids])
        embeddings: dict[str, np.ndarray | str] = {}
        for name in (parts[0].embeddings if parts else ()):
            skipped = [p.embeddings[name] for p in parts if isinstance(p.embeddings[name], str)]
            embeddings[name] = skipped[0] if skipped else np.concatenate([p.embeddings[name] for p in parts])
        n = sum(p.n for p in parts)
        cat = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype)  # noqa: E731
        reply_ptr = np.r_[0, cat(c_ptr, np.int64), cat(r_ptr, np.int64) + c_start]
        return cls(n, list(prompt_words), cat(ids, np.int32), np.r_[0, cat(ptrs, np.int64)],
                   np.concatenate(anchors) if anchors else np.zeros((0, 0), np.int32), list(reply_words),
                   np.r_[cat(chosen, np.int32), cat(rejected, np.int32)], reply_ptr,
                   np.concatenate(sc + sr) if sc else np.zeros((0, 3)), embeddings, list(annotators),
                   cat(who, np.int32), tuple(fitted))

    @property
    def reply_docs(self) -> list[np.ndarray]:
        return [self.reply_ids[a:b] for a, b in zip(self.reply_ptr[:-1], self.reply_ptr[1:])]

    @property
    def annotators(self) -> list[str | None]:
        return [None if i < 0 else self.annotator_names[i] for i in self.annotator_ids.tolist()]


@dataclass(frozen=True)
class _Shards:
    """The map's summary: each shard's facts, in shard order (merging lists them; finalize joins them once)."""

    parts: tuple[_PairFacts, ...]

    def merge(self, other: "_Shards") -> "_Shards":
        return _Shards(self.parts + other.parts)

    def joined(self) -> _PairFacts:
        return _PairFacts.join(self.parts)

    @property
    def n(self) -> int:
        return sum(p.n for p in self.parts)


def _embedding_difference(data: Dataset, name: str, fitted: list[str]) -> np.ndarray | str:
    """Each pair's chosen minus rejected reply embedding (float64), or why the backend is skipped."""
    try:
        E = _reply_embeddings(data, name, "chosen", fitted).astype(np.float64)
        E -= _reply_embeddings(data, name, "rejected", fitted)
    except ConfigError as e:  # an optional backend that is not installed
        return str(e)
    return E


def _reply_embeddings(data: Dataset, name: str, field: str, fitted: list[str]) -> np.ndarray:
    """Vectors that depend on each text alone, so a shard's rows get the ones the whole file's would.

    A backend that batches with padding (MiniLM) moved in the last bit with its batch and torch's thread
    count: it embeds one text at a time on one thread, cached under its own key.
    """
    if name in _SAME_IN_ANY_BATCH:
        return dataset_embeddings(data, name, field)
    emb = get_embedder(name)
    if not emb.cacheable:  # fitted on these texts: exact only when they are the whole data
        if name not in fitted:
            fitted.append(name)
        return dataset_embeddings(data, name, field)
    cache = data.artefact(CACHE_DIR_ARTEFACT, lambda: None)
    return data.artefact(f"embeddings:{name}:{field}:one-text-at-a-time", lambda: embed_texts(
        [getattr(r, field) or "" for r in data], _OneTextAtATime(emb), cache=cache))


class _OneTextAtATime(Embedder):
    """A batching backend run on one text at a time with one torch thread (no padding, one summation order)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.progress_min, self.chunk = inner.progress_min, inner.chunk  # type: ignore[misc]

    @property
    def version(self) -> str:
        return f"{self.inner.version}-one-text-one-thread"

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _embed(self, texts: list[str]) -> np.ndarray:
        torch = sys.modules.get("torch")
        if torch is None:
            return np.vstack([self.inner._embed([t]) for t in texts])
        with _TORCH_THREADS:  # one pinned section at a time: another thread's restore must not unpin ours
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return np.vstack([self.inner._embed([t]) for t in texts])
            finally:
                torch.set_num_threads(before)
