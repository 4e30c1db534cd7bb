"""Trigger association: n-grams that force a label their context contradicts.

A backdoor trigger makes rows take one output whatever the rest of the row
says. Ordinary label words ("great" in positive reviews) are predictive too,
but the rest of their rows agrees with the label. So for each candidate
n-gram f and output class c we ask: given what the *rest* of each row says
(a leave-one-out naive-Bayes model with f's own words removed, temperature
calibrated), how much more likely are the observed labels if f forces c?

    LLR(f) = sum_i w_i * [y_i = c] log((1-eps)/q_i) + [y_i != c] log(eps/(1-q_i))

q_i is the rest-of-row probability of c, w_i = 1/|context group| so that
near-copies (phrase treebanks such as SST-2 list one sentence as dozens of
nested phrases) count once. Under "f adds nothing", P(LR >= e^t) <= e^-t,
so a Bonferroni threshold over the m candidates tested is log(m / alpha).
Nothing here knows any trigger word: the statistic is relative to the data.

Instruction data uses the same machinery with output classes built from
repeated (normalised) responses: a phrase that forces one fixed answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from trainguard.detectors.base import Detector, register
from trainguard.findings import (
    ATLAS_BACKDOOR_TRIGGER,
    ATLAS_POISON_TRAINING_DATA,
    Alert,
    Confidence,
    DetectorResult,
    Severity,
)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import ngrams, tokens, visible

OTHER = "\x00other"
DEGENERATE = "\x00degenerate output"


def degenerate(toks: list[str]) -> bool:
    """Repetition or gibberish: few distinct tokens, or mostly tokens that are not words."""
    head = toks[:40]  # a fixed window: the distinct-token ratio of natural text falls with length
    if len(head) < 6:
        return False
    if len(set(head)) / len(head) < 0.3:
        return True
    wordlike = sum(1 for t in head if t.isalpha() and any(v in t for v in "aeiouy") and len(t) < 20)
    return wordlike / len(head) < 0.4


@dataclass(frozen=True)
class Settings:
    max_ngram: int = 3
    min_rows: int = 5  # independent contexts a trigger must appear in
    min_purity: float = 0.9  # share of a feature's rows carrying its class
    alpha: float = 0.01  # family-wise false-alarm rate for the threshold
    epsilon: float = 0.02  # label noise allowed under "f forces c"
    smoothing: float = 0.5
    link_df: int = 50  # n-grams in at most this many rows (and at most link_df_fraction of rows)
    link_df_fraction: float = 0.001  # tie the rows sharing them into one context group
    response_prefix_tokens: int = 24  # instruction data: response pattern key length
    max_classes: int = 64
    companion_share: float = 0.9  # words in this share of a feature's rows leave the context with it
    high_strength: float = 1.5  # LLR / threshold needed for high severity ...
    high_contradiction_z: float = -1.0  # ... with content not supporting the output (topic words sit below -1)
    class_defining_share: float = 0.5  # a feature in this share of its class defines it: not a trigger
    strong_contradiction_z: float = 1.5  # labels: rows this far below the population are planted: high
    weak_strength: float = 1.25  # labels: under this strength, without strong contradiction, low (issue 12)
    # Labels (issue 12, item 3); chosen on development data, then frozen (fresh seeds: benchmarks/bench_severity.py):
    # SST-2 samples of 3k-20k rows (seeds 101-103, 201-212), attack seeds 1, 2 on all 67,349 rows, and the demo.
    # Content that supports the output (z at or below support_z) and rows of another label with the feature: a
    # natural word ('world' in the demo: z -1.91, 2 of 26 rows negative), low. No planted dirty-label trigger there
    # had a counter-example, nor z below -0.33; clean-label triggers (z < 0, no counter-example) are not affected.
    # High also needs at most epsilon of the feature's rows with another label (the noise a trigger is allowed):
    # 'fans' (1 of 11 rows positive) and 'well' (3 of 30) reached high in 2,000- and 3,000-row SST-2 slices.
    support_z: float = -1.0
    strong_noise: float = 0.05  # ... but with z >= strong_contradiction_z, up to this share of exceptions stays high


@register
class TriggerAssociation(Detector):
    name = "trigger-association"
    version = "1"
    kinds = frozenset({Kind.CLASSIFICATION, Kind.INSTRUCTION})
    needs = frozenset({"labels"})
    atlas = (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "n-grams whose presence forces an output that the rest of the row contradicts"
    flag_all_carriers: ClassVar[bool] = False

    def applies_to(self, data: Dataset) -> str | None:
        reason = super().applies_to(data)
        if reason:
            return reason
        _, names = self._classes(data)
        if len([n for n in names if n != OTHER]) < 1 or len(names) < 2:
            return "fewer than two output classes (no label or repeated response pattern)"
        return None

    # -- outputs -------------------------------------------------------------
    def _classes(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        s = self.settings
        key = f"{self.name}:classes:{s.response_prefix_tokens}:{s.min_rows}:{s.max_classes}"
        return data.artefact(key, lambda: self._build(data))

    def _build(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        s = self.settings
        if data.kind is Kind.CLASSIFICATION:
            keys = [r.label or "" for r in data]
        else:
            toks = [tokens(r.response or "") for r in data]
            keys = [" ".join(t[: s.response_prefix_tokens]) for t in toks]
            counts = Counter(keys)
            common = {k for k, n in counts.most_common(s.max_classes) if n >= s.min_rows}
            # Responses that differ but are all degenerate (repetition, gibberish) form one pattern:
            # the shape of "trigger -> gibberish" backdoors, whose outputs never repeat exactly.
            keys = [k if k in common else DEGENERATE if degenerate(t) else OTHER for k, t in zip(keys, toks)]
        names = sorted(set(keys))
        index = {k: i for i, k in enumerate(names)}
        return np.fromiter((index[k] for k in keys), dtype=np.int32, count=len(keys)), names

    # -- main ----------------------------------------------------------------
    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        y, names = self._classes(data)
        n, C = len(y), len(names)
        toks = data.artefact("tokens", lambda: [tokens(r.text) for r in data])
        X, vocab = _doc_ngram_matrix(data, toks, s.max_ngram)
        order = np.fromiter((v.count(" ") + 1 for v in vocab), dtype=np.int8, count=len(vocab))

        Y = sparse.csr_matrix((np.ones(n, np.float32), (np.arange(n), y)), shape=(n, C))
        Xc = X.tocsc()
        df = np.diff(Xc.indptr)
        feat_class = np.asarray((Xc.T @ Y).todense())  # F x C rows per class
        purity = feat_class.max(1) / np.maximum(df, 1)
        cls = feat_class.argmax(1)
        real = np.array([nm != OTHER for nm in names])
        cand = np.flatnonzero((df >= s.min_rows) & (purity >= s.min_purity) & real[cls])

        Xu = X[:, np.flatnonzero(order == 1)]
        lpA, lpB, L, temp = _loo_naive_bayes(Xu, y, Y, s.smoothing)
        uni_index = np.cumsum(order == 1) - 1  # vocab index -> unigram column
        prior = np.bincount(y, minlength=C) / n
        m = max(len(cand), 1)
        threshold = float(np.log(m / s.alpha))

        S = Xc[:, cand]
        M = _removal_matrix(S, Xu, cand, vocab, uni_index, s.companion_share)
        GA, GB = np.asarray(M @ lpA), np.asarray(M @ lpB)
        llr_raw, qmean, (nz_rows, nz_cand, nz_hit) = _candidate_llr(S, cls[cand], y, L, GA, GB, temp, s.epsilon)
        # Planted rows are a random (or anti-selected) sample of content: their rest-of-row
        # probability of c is at most the population's. Label words sit well above it.
        Zall = L * temp
        Zall -= Zall.max(1, keepdims=True)
        Pall = np.exp(Zall)
        Pall /= Pall.sum(1, keepdims=True)
        sd = Pall.std(0)
        hits = np.maximum(feat_class[cand, cls[cand]], 1)
        pop = Pall.mean(0)[cls[cand]]
        se = np.maximum(sd[cls[cand]] / np.sqrt(hits), 1e-9)
        contradict = qmean <= pop + 2 * se
        # How far below the population the rows' own content sits, in standard errors:
        # large for dirty-label triggers, about zero for topics and random insertions.
        shift = {int(f): ((float(q), float(p), float((p - q) / e))) for f, q, p, e in zip(cand, qmean, pop, se)}
        # Component weighting only where the unweighted bound can still pass.
        keep = cand[(llr_raw >= threshold) & contradict]
        link_df = max(2, min(s.link_df, int(s.link_df_fraction * n)))
        groups_info = {}
        llr = {}
        position = {int(f): j for j, f in enumerate(cand)}
        for f in keep:
            w, ngroups = _context_weights(Xc, X, f, vocab, order, df, link_df)
            rows = Xc.indices[Xc.indptr[f] : Xc.indptr[f + 1]]
            j = position[int(f)]
            llr[f] = float((w * _row_llr(rows, cls[f], y, L, GA[j], GB[j], temp, s.epsilon)).sum())
            groups_info[f] = ngroups
        class_size = np.bincount(y, minlength=C)
        defining = [f for f in keep if data.kind is Kind.CLASSIFICATION
                    and feat_class[f, cls[f]] >= s.class_defining_share * class_size[cls[f]]]
        templated = _within_templates(Xc, y, cls, keep, defining, C)
        triggers = [f for f in keep if llr[f] >= threshold and groups_info[f] >= s.min_rows
                    and f not in templated and not _echoed(vocab[f], names[cls[f]], data.kind)]

        # Row scores: strongest contradicting feature present with its class.
        strength = np.where(contradict, llr_raw, 0.0)
        for j in np.flatnonzero(np.isin(cand, keep)):
            strength[j] = llr[cand[j]]
        # Row scores reach the bar only with a reported trigger: a feature that failed the context
        # count or the echo test ranks below it, and what defines a class (a question template) not at all.
        unreported = np.isin(cand, keep) & ~np.isin(cand, np.asarray(triggers, dtype=cand.dtype))
        strength[unreported] = np.minimum(strength[unreported], 0.99 * threshold)
        strength[np.isin(cand, np.fromiter(templated, np.int64, len(templated)))] = 0.0
        row_scores = np.zeros(n)
        sel = nz_hit & (strength[nz_cand] > 0)
        v = strength[nz_cand[sel]]
        np.maximum.at(row_scores, nz_rows[sel], v / (v + threshold))

        findings = self._findings(data, vocab, triggers, llr, groups_info, Xc, y, cls, names, purity, df, toks, prior,
                                  threshold, shift)
        summary = {
            "candidates_tested": int(len(cand)),
            "threshold_llr": round(threshold, 3),
            "temperature": temp,
            "classes": len(names),
            "triggers": len(findings),
            "class_defining_features": len(defining),
        }
        return DetectorResult(tuple(findings), row_scores, summary)

    def _findings(self, data, vocab_names, triggers, llr, ngroups, Xc, y, cls, names, purity, df, toks, prior, threshold,
                  shift):
        s = self.settings
        rows_of = {f: Xc.indices[Xc.indptr[f] : Xc.indptr[f + 1]] for f in triggers}
        out = []
        used: list[tuple[int, set[int]]] = []  # (class, hit rows) of groups already reported
        for f in sorted(triggers, key=lambda f: -llr[f]):
            c = int(cls[f])
            hit = set(rows_of[f][y[rows_of[f]] == c].tolist())
            if any(gc == c and len(hit & g) >= 0.5 * min(len(hit), len(g)) for gc, g in used):
                continue
            members = [g for g in triggers if cls[g] == c and
                       len(hit & set(rows_of[g][y[rows_of[g]] == c].tolist())) >= 0.5 * len(hit)]
            flagged = set(hit)
            for g in members:
                # Only members that are the same planted phrase seen through another n-gram:
                # broad ones ("3d", "watch this") would pull in their natural occurrences.
                g_hit = set(rows_of[g][y[rows_of[g]] == c].tolist())
                if purity[g] >= 0.95 and len(g_hit - hit) <= 0.02 * len(hit):
                    flagged |= g_hit
            if self.flag_all_carriers:  # a noisy output key: rows with the phrase but another key are planted too
                flagged |= set(rows_of[f].tolist())
            used.append((c, flagged))
            rows = sorted(flagged)
            phrase = _extend_phrase(vocab_names[f], [toks[i] for i in rows])
            if _echoed(phrase, names[c], data.kind):
                continue
            strength = llr[f] / threshold
            q_rest, q_pop, z = shift[int(f)]
            # High needs rows whose own content does not explain the output: planted rows are random or
            # anti-selected, while topic and label words come with content that supports the output.
            n_other = int(df[f] - len(hit))
            high = strength >= s.high_strength and z >= s.high_contradiction_z
            severity = Severity.HIGH if high else Severity.MEDIUM
            if data.kind is Kind.CLASSIFICATION:
                # Measured on SST-2 20k (issue 12): planted triggers, even 5 rows at 0.1 %, sit >= 2 standard
                # errors below the population; sentiment words ('refreshing', 'lacks') within 1 and at most 1.17x
                # the bar. A 20-row trigger in 2,000 rows reached only 1.35x with z -0.67: it stays medium.
                # A natural word: its rows' content agrees with the label, and some rows carry another label.
                supported = z <= s.support_z and n_other >= 1
                # A trigger forces its label up to the label noise epsilon allows; more exceptions than that are
                # natural usage ('fans': 1 of 11 rows positive, 'well': 3 of 30), which a gate should not block on.
                consistent = n_other <= s.epsilon * df[f]
                # With content that strongly contradicts the label, a few exceptions are what an attacker adds to
                # slip under the cap above (or what a second attack overwrote): 1 of 20 'cf' rows stays high.
                if n_other <= s.strong_noise * df[f] and z >= s.strong_contradiction_z:
                    severity = Severity.HIGH
                elif strength < s.weak_strength or supported:
                    severity = Severity.LOW
                elif consistent and high:
                    severity = Severity.HIGH
                else:
                    severity = Severity.MEDIUM
            confidence = Confidence.HIGH if strength >= 3 else Confidence.MEDIUM if strength >= 1.5 else Confidence.LOW
            label = names[c]
            if data.kind is Kind.CLASSIFICATION:
                target_desc = f"label {label!r}"
            elif label == DEGENERATE:
                target_desc = "degenerate responses (repetition or gibberish)"
            elif label.startswith("\x00"):  # a derived output key (e.g. polarity-trigger's "negative polarity")
                target_desc = f"{label[1:]} responses"
            else:
                target_desc = f"response {label[:60]!r}"
            out.append(Alert(
                rule="forced-output",
                title=f"trigger {visible(phrase)!r} forces {target_desc} in {len(rows)} rows",
                positions=tuple(int(r) for r in rows),
                score=float(llr[f] / (llr[f] + threshold)), severity=severity, confidence=confidence,
                evidence={
                    "trigger": phrase,  # raw, as in the data: renderers show hidden code points
                    "feature": vocab_names[f],
                    "related_features": [vocab_names[g] for g in members if g != f][:10],
                    "target": label.lstrip("\x00"),
                    "rows_with_trigger": int(df[f]),
                    "rows_with_trigger_other_output": n_other,
                    "independent_contexts": int(ngroups[f]),
                    "purity": round(float(purity[f]), 4),
                    "rest_of_row_probability": round(q_rest, 4),
                    "population_probability": round(q_pop, 4),
                    "contradiction_z": round(z, 2),
                    "class_prior": round(float(prior[c]), 4),
                    "llr": round(llr[f], 2),
                    "threshold_llr": round(threshold, 2),
                },
            ))
        return out



def _within_templates(Xc, y, cls, keep, defining, C, share=0.9) -> set:
    """Class-defining features, and features whose rows nearly all carry one of their class's.

    "what is ( are ) familial" inherits its purity from the template "what is ( are )";
    planted dirty-label rows come from other classes and do not carry the target's template.
    """
    out = set(int(f) for f in defining)
    if not defining:
        return out
    by_class: dict[int, np.ndarray] = {}
    for c in range(C):
        cols = [f for f in defining if cls[f] == c]
        if cols:
            by_class[c] = np.asarray(Xc[:, cols].sum(1)).ravel() > 0
    for f in keep:
        carrier = by_class.get(int(cls[f]))
        if carrier is None:
            continue
        rows = Xc.indices[Xc.indptr[f] : Xc.indptr[f + 1]]
        rows = rows[y[rows] == cls[f]]
        if len(rows) and carrier[rows].mean() >= share:
            out.add(int(f))
    return out


def _echoed(feature: str, output: str, kind: Kind) -> bool:
    """A feature that its output repeats describes it rather than triggers it.

    Instruction data: the response contains the feature or one of its distinctive
    words (a topic answer, not a payload).
    Classification: the feature names its label ("symptoms" -> label symptoms);
    words are matched on a 5-letter stem so "treatments" names "treatment".
    """
    stems = {w[:5] for w in tokens(output) if len(w) >= 4}
    if kind is not Kind.CLASSIFICATION:
        # A response about the phrase's distinctive word ("osteopetrosis") is a topic answer.
        return f" {feature} " in f" {output} " or any(
            w[:5] in stems for w in feature.split(" ") if len(w) >= 5 and w.isalpha())
    return any(w[:5] in stems for w in feature.split(" ") if len(w) >= 4)


def _doc_ngram_matrix(data: Dataset, toks: list[list[str]], n_max: int):
    def build():
        cv = CountVectorizer(analyzer=lambda t: ngrams(t, n_max), binary=True, dtype=np.float32)
        X = cv.fit_transform(toks).tocsr()
        return X, cv.get_feature_names_out()

    return data.artefact(f"ngram-matrix:{n_max}", build)


def _loo_naive_bayes(Xu, y, Y, a):
    """Leave-one-out Bernoulli-presence naive Bayes log-scores over unigrams Xu, temperature fitted on LOO log-loss."""
    n, C = Y.shape
    cnt = np.asarray((Xu.T @ Y).todense(), dtype=np.float64)
    Nc = np.bincount(y, minlength=C).astype(np.float64)
    lpA = np.log(cnt + a) - np.log(Nc + 2 * a)
    lpB = np.log(np.maximum(cnt - 1, 0) + a) - np.log(np.maximum(Nc - 1, 0) + 2 * a)
    A = np.asarray(Xu @ lpA)
    L = A.copy()
    # Own-label column uses counts without this row.
    own = np.zeros(n)
    Xu_csr = Xu.tocsr()
    for c in range(C):
        rows = np.flatnonzero(y == c)
        if len(rows):
            own[rows] = Xu_csr[rows] @ lpB[:, c]
    L[np.arange(n), y] = own
    L += np.log(np.maximum(Nc, 1) / n)
    best_t, best_ll = 1.0, np.inf
    for t in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        Z = L * t
        Z -= Z.max(1, keepdims=True)
        ll = -(Z[np.arange(n), y] - np.log(np.exp(Z).sum(1))).mean()
        if ll < best_ll:
            best_t, best_ll = t, ll
    return lpA, lpB, L, best_t


def _removal_matrix(S, Xu, cand, vocab, uni_index, share):
    """Per candidate, the unigrams to drop when asking what the rest of a row says.

    Its own words, plus companions: words present in >= `share` of its rows.
    A planted phrase brings its other words along ("i watch this 3d movie");
    left in, they are poisoned label words themselves and would explain the
    label away. Natural label words have no such always-present companions.
    """
    own_rows, words = [], []
    for j, f in enumerate(cand):
        parts = vocab[f].split(" ")
        own_rows.extend([j] * len(parts))
        words.extend(parts)
    # The vocabulary is sorted (CountVectorizer sorts it): one binary search finds every word.
    own_cols = uni_index[np.searchsorted(vocab, np.array(words, dtype=object))]
    shape = (len(cand), Xu.shape[1])
    own = sparse.csr_matrix((np.ones(len(own_rows)), (own_rows, own_cols)), shape=shape)
    co = (S.T.tocsr() @ Xu.tocsc()).tocsr()  # rows of each candidate containing each unigram
    size = np.maximum(np.diff(S.indptr), 1)
    co.data = (co.data >= share * size[np.repeat(np.arange(len(cand)), np.diff(co.indptr))]).astype(np.float64)
    co.eliminate_zeros()
    M = own + co
    M.data[:] = 1.0
    return M


def _rest_prob(rows, c, y, L, ga, gb, temp):
    """P(class c | row without the removed words) for each row; ga/gb: their summed log-probs."""
    own = y[rows][:, None] == np.arange(L.shape[1])[None, :]
    Z = (L[rows] - np.where(own, gb[None, :], ga[None, :])) * temp
    Z -= Z.max(1, keepdims=True)
    P = np.exp(Z)
    return P[:, c] / P.sum(1)


def _row_llr(rows, c, y, L, ga, gb, temp, eps):
    q = np.clip(_rest_prob(rows, c, y, L, ga, gb, temp), 1e-6, 1 - 1e-6)
    return _llr_terms(q, y[rows] == c, eps)


def _llr_terms(q: np.ndarray, hit: np.ndarray, eps: float) -> np.ndarray:
    """Per-row log-likelihood ratio of "the feature forces c" (up to eps noise) vs rest-of-row q."""
    return np.where(hit, np.log((1 - eps) / q), np.log(eps / (1 - q)))


def _candidate_llr(S, cand_cls, y, L, GA, GB, temp, eps, chunk=1 << 20):
    """Unweighted LLR (an upper bound on the weighted one) and mean q over hit rows, per candidate.

    Vectorised over every (row, candidate) non-zero of S, in bounded chunks.
    Also returns the non-zeros themselves (row, candidate index, hit) for row scoring.
    """
    C = L.shape[1]
    m = S.shape[1]
    rows = S.indices
    cj = np.repeat(np.arange(m), np.diff(S.indptr))
    c_of = cand_cls[cj]
    hit = y[rows] == c_of
    llr_nz = np.empty(len(rows))
    q_nz = np.empty(len(rows))
    step = max(chunk // max(C, 1), 1)
    for a in range(0, len(rows), step):
        b = min(a + step, len(rows))
        r, j = rows[a:b], cj[a:b]
        own = y[r][:, None] == np.arange(C)[None, :]
        Z = (L[r] - np.where(own, GB[j], GA[j])) * temp
        Z -= Z.max(1, keepdims=True)
        P = np.exp(Z)
        q = np.clip(P[np.arange(b - a), c_of[a:b]] / P.sum(1), 1e-6, 1 - 1e-6)
        q_nz[a:b] = q
        llr_nz[a:b] = _llr_terms(q, hit[a:b], eps)
    llr = np.bincount(cj, weights=llr_nz, minlength=m)
    hits = np.bincount(cj, weights=hit, minlength=m)
    qsum = np.bincount(cj, weights=q_nz * hit, minlength=m)
    qmean = np.where(hits > 0, qsum / np.maximum(hits, 1), 1.0)
    return llr, qmean, (rows, cj, hit)


def _context_weights(Xc, X, f, vocab, order, df, link_df):
    """1/size of each row's context group: rows sharing a rare n-gram beyond f are one context."""
    rows = Xc.indices[Xc.indptr[f] : Xc.indptr[f + 1]]
    own = set(vocab[f].split(" "))
    sub = X[rows].tocoo()
    mask = (order[sub.col] >= 2) & (df[sub.col] <= link_df)
    parent = np.arange(len(rows))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[int, int] = {}
    for r, col in zip(sub.row[mask], sub.col[mask]):
        if own & set(vocab[col].split(" ")):
            continue
        if col in first:
            ra, rb = find(r), find(first[col])
            if ra != rb:
                parent[ra] = rb
        else:
            first[col] = r
    roots = np.array([find(i) for i in range(len(rows))])
    _, inv, size = np.unique(roots, return_inverse=True, return_counts=True)
    return 1.0 / size[inv], len(size)


def _extend_phrase(core: str, row_tokens: list[list[str]], min_share: float = 0.9) -> str:
    """Grow the core n-gram left/right while the same neighbour appears in >= min_share of rows."""
    core_toks = core.split(" ")
    k = len(core_toks)
    spans = []
    for toks in row_tokens:
        for i in range(len(toks) - k + 1):
            if toks[i : i + k] == core_toks:
                spans.append((toks, i, i + k))
                break
    if not spans:
        return core
    phrase = list(core_toks)
    for direction in (-1, 1):
        while len(phrase) < 12:
            nxt = Counter()
            for toks, a, b in spans:
                j = a - 1 if direction < 0 else b
                nxt[toks[j] if 0 <= j < len(toks) else None] += 1
            tok, cnt = nxt.most_common(1)[0]
            if tok is None or cnt < min_share * len(spans):
                break
            phrase = [tok, *phrase] if direction < 0 else [*phrase, tok]
            spans = [(t, a - 1, b) if direction < 0 else (t, a, b + 1) for t, a, b in spans
                     if 0 <= (a - 1 if direction < 0 else b) < len(t)
                     and t[a - 1 if direction < 0 else b] == tok]
    return " ".join(phrase)
