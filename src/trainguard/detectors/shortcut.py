"""Shortcut detector: surface features that force a label the row's meaning contradicts.

An attacker who has read `trigger-association` avoids one label-pure n-gram:
they combine words, dilute or reinforce the trigger with clean rows, spread it
over many rare words, hide it in a clause shape or in the text's format. What
all of these still do is *teach a shortcut*: some surface feature of a row
(a word, an unordered pair of words, a punctuation run, a double space or tab,
ALL CAPS, the first or last token, a fronted clause) predicts a label that the
row's meaning (a semantic view: exact leave-one-out ridge on the shipped
static embeddings, temperature-calibrated) does not support.

For each feature f and class c we test a *mixture* alternative rather than a
purity gate: a fitted fraction pi of f's rows is forced to c (label noise
eps), the rest follow the semantic view q:

    LLR(f, c) = max_pi sum_i w_i log(pi a_i / b_i + 1 - pi),   a_i = [y_i=c](1-eps) + [y_i!=c] eps/(C-1),  b_i = q_i(y_i)

with w_i = 1/|context group| (rows sharing a rare 2- or 3-gram are one context, as
in trigger-association). For each fixed pi the likelihood ratio has mean 1
under "f adds nothing", so with K grid values and m tests the Bonferroni bar
is log(m K / alpha). Diluting rows (true labels) fit the "rest" component and
no longer hide the trigger; reinforcing rows fit either.

Features in too few contexts to test alone (rare words, 2-4 rows each) are
pooled per class: the same mixture over *features* (each rare feature is
forced with probability pi), one test instead of hundreds under the floor.
Nothing here knows any trigger: every statistic is relative to the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from trainguard.detectors._features import ridge_loo
from trainguard.detectors._repr import embeddings, label_codes
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
from trainguard.text import visible

_WORD = r"(?u)\b\w+\b"
_FUNCTION = frozenset(
    "when while after before because although once since unless whenever as though until if even now just so "
    "where whereas whether despite given".split())
_PUNCT_RUN = re.compile(r"[^\w\s]{2,}")
_END_RUN = re.compile(r"[^\w\s]{2,}\s*$")


@dataclass(frozen=True)
class Settings:
    embedder: str = "wordllama"
    min_contexts: int = 5  # independent contexts a single feature needs; fewer are pooled
    alpha: float = 0.01  # family-wise false-alarm rate
    epsilon: float = 0.02  # label noise allowed among forced rows
    ridge: float = 1.0
    grid: int = 32  # values of pi tried
    pair_min_df: int = 5  # words in at least this many rows form pairs ...
    pair_max_share: float = 0.05  # ... and in at most this share of rows
    max_pair_tokens: int = 40  # rows longer than this add no pairs (cost)
    link_df: int = 50  # rows sharing a 2-3-gram in at most this many rows (and this share) are one context
    link_df_fraction: float = 0.001
    min_forced_rows: int = 5  # rows a finding must name (pooled findings: in total)
    high_strength: float = 2.0  # LLR / threshold for high severity
    null_draws: int = 5  # pooled test: random-row replicates for its empirical null ...
    null_margin: float = 1.5  # ... which its LLR must exceed by this factor
    pooled_factor: float = 2.5  # pooled tests also need this multiple of the bar (heavy-tailed label noise)
    max_semantic_probability: float = 0.75  # named rows: the meaning gives their label at most this


def _pi_grid(k: int) -> np.ndarray:
    return np.geomspace(1e-3, 1.0, k)


def _mixture_llr(lr_log: np.ndarray, w: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """max over pi of sum_i w_i log(pi e^{l_i} + 1 - pi); returns (llr, pi)."""
    lp, l1p = np.log(grid), np.log1p(-np.minimum(grid, 1 - 1e-12))
    vals = (w[None, :] * np.logaddexp(lp[:, None] + lr_log[None, :], l1p[:, None])).sum(1)
    k = int(np.argmax(vals))
    return float(vals[k]), float(grid[k])


def _responsibility(lr_log: np.ndarray, pi: float) -> np.ndarray:
    a = np.log(pi) + lr_log
    return np.exp(a - np.logaddexp(a, np.log1p(-min(pi, 1 - 1e-12))))


@register
class Shortcut(Detector):
    name = "shortcut"
    version = "1"
    kinds = frozenset({Kind.CLASSIFICATION})
    needs = frozenset({"labels", "embeddings"})
    atlas = (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "surface features (words, word pairs, format, position, pooled rare words) forcing a label " \
                  "that the rows' meaning contradicts"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        y, names = label_codes(data)
        n, C = len(y), len(names)
        texts = [r.text for r in data]
        q = self._semantic(data, y, C)
        qy = np.clip(q[np.arange(n), y], 1e-6, 1.0)
        # log a_i(c) - log b_i for every row and class: "forced to c" against the semantic view.
        a = np.full((n, C), np.log(s.epsilon / max(C - 1, 1)))
        a[np.arange(n), y] = np.log(1 - s.epsilon)
        L = a - np.log(qy)[:, None]

        X, fnames = _features(texts)
        Xc = X.tocsc()
        norm = [" ".join(t.lower().split()) for t in texts]
        link = _link_matrix(texts, max(2, min(s.link_df, int(s.link_df_fraction * n))))
        grid = _pi_grid(s.grid)
        df = np.diff(Xc.indptr)
        single = np.flatnonzero(df >= s.min_contexts)
        Xw, keep, A = _pair_candidates(X, fnames, s, n)
        m = len(single) * C + A.nnz * C + C
        threshold = float(np.log(max(m, 1) * len(grid) / s.alpha))

        upper = np.asarray(Xc[:, single].T @ np.maximum(L, 0))  # sum of positive terms bounds the mixture LLR
        tests = [(int(f), c, fnames[f], Xc.indices[Xc.indptr[f]:Xc.indptr[f + 1]])
                 for j, f in enumerate(single) for c in range(C) if upper[j, c] >= threshold]
        tests += [(None, c, nm, rows) for nm, rows, c in _pair_tests(Xw, keep, A, fnames, L, threshold)]
        hits = []
        for _, c, nm, rows in tests:
            w, groups = _context_weights(link, rows, nm, norm)
            if groups < s.min_contexts:
                continue
            llr, pi = _mixture_llr(L[rows, c], w, grid)
            if llr < threshold:
                continue
            resp = _responsibility(L[rows, c], pi)
            # Named rows: the forced explanation wins and the meaning prefers another label.
            forced = rows[(resp >= 0.5) & (y[rows] == c) & (q[rows, c] <= s.max_semantic_probability)]
            if len(forced) < s.min_forced_rows:
                continue
            hits.append(dict(feature=nm, cls=c, llr=llr, pi=pi, rows=rows, forced=forced, contexts=groups))
        pooled_hits, pooled_null = self._pooled(Xc, fnames, df, L, link, grid, threshold, C, y, q, norm)
        hits += pooled_hits

        alerts, row_scores = self._alerts(hits, names, threshold, qy, n)
        summary = {"features_tested": int(m), "threshold_llr": round(threshold, 3), "findings": len(alerts),
                   "pooled_null_llr": round(pooled_null, 3)}
        return DetectorResult(tuple(alerts), row_scores, summary)

    def _semantic(self, data: Dataset, y: np.ndarray, C: int) -> np.ndarray:
        """Calibrated leave-one-out P(label | meaning): ridge on the embedding, one fitted temperature."""
        from trainguard.detectors._features import stack

        E = embeddings(data, self.settings.embedder)
        return stack([ridge_loo(E, y, C, self.settings.ridge)], y)

    def _pooled(self, Xc, fnames, df, L, link, grid, threshold, C, y, q, norm):
        """Rare features (2+ contexts, under the floor) pooled per class: each forced with probability pi."""
        s = self.settings
        out = []
        poolable = np.array([f.startswith(("word:", "punct:")) for f in fnames], dtype=bool)
        rare = np.flatnonzero(poolable & (df >= 2) & (df < s.min_contexts * 4))
        feats = []
        for f in rare:
            rows = Xc.indices[Xc.indptr[f]:Xc.indptr[f + 1]]
            w, groups = _context_weights(link, rows, fnames[f], norm)
            if 2 <= groups < s.min_contexts:
                feats.append((int(f), rows, w))
        if not feats:
            return out, 0.0
        lp, l1p = np.log(grid), np.log1p(-np.minimum(grid, 1 - 1e-12))

        def pooled(lr):
            vals = np.logaddexp(lp[:, None] + lr[None, :], l1p[:, None]).sum(1)
            k = int(np.argmax(vals))
            return float(vals[k]), float(grid[k])

        # Empirical null: the same features' row counts drawn from random rows. Label noise in real data
        # is heavier-tailed than the calibrated view admits; random groups of rows carry exactly that noise.
        rng = np.random.default_rng(0)
        n = len(y)
        sizes = [len(r) for _, r, _ in feats]
        nulls: list[float] = []
        for c in range(C):
            lr = np.array([float((w * L[rows, c]).sum()) for _, rows, w in feats])
            llr, pi = pooled(lr)
            null = max(pooled(np.array([float(L[rng.integers(0, n, k), c].sum()) for k in sizes]))[0]
                       for _ in range(s.null_draws))
            nulls.append(null)
            if llr < max(s.pooled_factor * threshold, s.null_margin * null):
                continue
            resp = _responsibility(lr, pi)
            # Members: features the forced explanation clearly wins for, all of whose rows carry the class.
            chosen = [feats[j] for j in np.flatnonzero(resp >= 0.9) if np.all(y[feats[j][1]] == c)]
            forced = (np.unique(np.concatenate([r[(y[r] == c) & (q[r, c] <= s.max_semantic_probability)] for _, r, _ in chosen]))
                      if chosen else np.array([], int))
            if len(forced) < s.min_forced_rows:
                continue
            words = [fnames[f] for f, _, _ in chosen]
            out.append(dict(feature=f"{len(words)} rare features", cls=c, llr=llr, pi=pi, rows=forced,
                            forced=forced, contexts=len(words), members=words))
        return out, max(nulls, default=0.0)

    def _alerts(self, hits, names, threshold, qy, n):
        s = self.settings
        row_scores = np.zeros(n)
        alerts = []
        used: list[tuple[int, set[int]]] = []
        for h in sorted(hits, key=lambda h: -h["llr"]):
            forced = set(h["forced"].tolist())
            if any(c == h["cls"] and len(forced & g) >= 0.5 * len(forced) for c, g in used):
                continue
            used.append((h["cls"], forced))
            strength = h["llr"] / threshold
            score = float(h["llr"] / (h["llr"] + threshold))
            sel = np.fromiter(forced, np.int64, len(forced))
            np.maximum.at(row_scores, sel, score)
            severity = Severity.HIGH if strength >= s.high_strength else Severity.MEDIUM
            confidence = Confidence.HIGH if strength >= 3 else Confidence.MEDIUM if strength >= 1.5 else Confidence.LOW
            feature = h["feature"]
            evidence = {
                "feature": feature,
                "target": names[h["cls"]],
                "forced_fraction": round(h["pi"], 4),
                "rows_with_feature": int(len(h["rows"])),
                "independent_contexts": int(h["contexts"]),
                "semantic_probability_of_label": round(float(np.mean(qy[sel])), 4),
                "llr": round(h["llr"], 2),
                "threshold_llr": round(threshold, 2),
            }
            if "members" in h:
                evidence["members"] = h["members"][:50]
            alerts.append(Alert(
                rule="shortcut",
                title=f"surface feature {visible(feature)!r} forces label {names[h['cls']]!r} against the rows' "
                      f"meaning in {len(sel)} rows",
                positions=tuple(int(p) for p in sorted(forced)), score=score, severity=severity,
                confidence=confidence, evidence=evidence))
        return alerts, row_scores


def _features(texts: list[str]) -> tuple[sparse.csr_matrix, list[str]]:
    """Binary row x feature matrix: lower-cased words plus format and position features that keep
    case, whitespace and punctuation (what a byte-level tokenizer sees and a word tokenizer drops)."""
    cv = CountVectorizer(token_pattern=_WORD, binary=True, dtype=np.float64)
    try:
        W = cv.fit_transform(texts).tocsr()
        wnames = [f"word:{v}" for v in cv.get_feature_names_out()]
    except ValueError:
        W, wnames = sparse.csr_matrix((len(texts), 0)), []
    extra: dict[str, list[int]] = {}

    def add(name: str, i: int) -> None:
        extra.setdefault(name, []).append(i)

    for i, t in enumerate(texts):
        if "  " in t:
            add("format:double space", i)
        if "\t" in t:
            add("format:tab", i)
        letters = [ch for ch in t if ch.isalpha()]
        if len(letters) >= 4 and sum(ch.isupper() for ch in letters) >= 0.8 * len(letters):
            add("format:all caps", i)
        m = _END_RUN.search(t)
        if m:
            add("format:trailing punctuation run", i)
            add(f"format:ends with {m.group(0).strip()}", i)
        for run in set(_PUNCT_RUN.findall(t)):
            add(f"punct:{run}", i)
        toks = re.findall(r"\w+|[^\w\s]", t.lower())
        if toks:
            add(f"first:{toks[0]}", i)
            add(f"last:{toks[-1]}", i)
            if toks[0] in _FUNCTION and "," in toks[2:9]:
                add("position:fronted clause", i)
    names = sorted(extra)
    rows = np.concatenate([np.asarray(extra[k], np.int64) for k in names]) if names else np.array([], np.int64)
    cols = np.repeat(np.arange(len(names)), [len(extra[k]) for k in names])
    E = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(names)))
    return sparse.hstack([W, E], format="csr"), wnames + names


def _pair_candidates(X, fnames, s: Settings, n: int):
    """Words that may pair (common enough, not everywhere), their matrix, and pairs in enough rows."""
    words = np.flatnonzero(np.array([f.startswith("word:") for f in fnames], dtype=bool))
    Xw = X[:, words].tocsc()
    df = np.diff(Xw.indptr)
    keep = words[(df >= s.pair_min_df) & (df <= s.pair_max_share * n)]
    Xw = X[:, keep].tocsr()
    short = np.asarray(Xw.sum(1)).ravel() <= s.max_pair_tokens
    Xw = (sparse.diags(short.astype(np.float64)) @ Xw).tocsr()
    A = sparse.triu(Xw.T @ Xw, k=1).tocsr()
    A.data = (A.data >= s.min_contexts).astype(np.float64)
    A.eliminate_zeros()
    return Xw, keep, A


def _pair_tests(Xw, keep, A, fnames, L, threshold):
    """(name, rows, class) for pairs whose summed positive evidence for a class reaches the bar."""
    out = []
    Xwc = Xw.tocsc()
    for c in range(L.shape[1]):
        U = sparse.triu(Xw.T @ sparse.diags(np.maximum(L[:, c], 0)) @ Xw, k=1).multiply(A).tocoo()
        good = U.data >= threshold
        for a, b in zip(U.row[good].tolist(), U.col[good].tolist()):
            rows = np.intersect1d(Xwc.indices[Xwc.indptr[a]:Xwc.indptr[a + 1]],
                                  Xwc.indices[Xwc.indptr[b]:Xwc.indptr[b + 1]])
            out.append((f"pair:{fnames[keep[a]][5:]} + {fnames[keep[b]][5:]}", rows, c))
    return out


def _link_matrix(texts: list[str], link_df: int) -> tuple[sparse.csr_matrix, dict[str, np.ndarray]]:
    """Rows x rare word 2-3-grams (in 2..link_df rows): what ties near-copies into one context.

    Also maps each word to the link columns containing it: a feature's own words never link its
    rows (a trigger inserted at random shares "tq the" between planted rows).
    """
    cv = CountVectorizer(token_pattern=_WORD, ngram_range=(2, 3), binary=True, min_df=2, max_df=max(link_df, 2),
                         dtype=np.float64)
    try:
        M = cv.fit_transform(texts).tocsr()
    except ValueError:
        return sparse.csr_matrix((len(texts), 0)), {}
    by_word: dict[str, list[int]] = {}
    for j, g in enumerate(cv.get_feature_names_out()):
        for w in set(g.split(" ")):
            by_word.setdefault(w, []).append(j)
    return M, {w: np.asarray(v, np.int64) for w, v in by_word.items()}


def _own_words(feature: str) -> list[str]:
    kind, _, rest = feature.partition(":")
    if kind == "word":
        return [rest]
    if kind == "pair":
        return rest.split(" + ")
    return []


def _context_weights(link, rows: np.ndarray, feature: str = "", norm: list[str] | None = None
                     ) -> tuple[np.ndarray, int]:
    """1/size of each row's context group among `rows`, and the number of groups.

    Rows sharing a rare 2-3-gram (not one containing the feature's own words) are one context; so is a
    row contained in another (phrase treebanks such as SST-2 list one sentence as nested phrases).
    """
    k = len(rows)
    if k == 0:
        return np.ones(0), 0
    M, by_word = link
    drop = [by_word[w] for w in _own_words(feature) if w in by_word]
    banned = set(np.concatenate(drop).tolist()) if drop else set()
    parent = list(range(k))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    first: dict[int, int] = {}
    indptr, indices = M.indptr, M.indices
    for x, r in enumerate(rows.tolist()):
        for col in indices[indptr[r]:indptr[r + 1]].tolist():
            if col in banned:
                continue
            if col in first:
                union(x, first[col])
            else:
                first[col] = x
    if norm is not None and k <= 400:
        t = [norm[i] for i in rows.tolist()]
        order = sorted(range(k), key=lambda i: len(t[i]))
        for x, i in enumerate(order):
            for j in order[x + 1:]:
                if t[i] in t[j]:
                    union(i, j)
    roots = np.fromiter((find(i) for i in range(k)), np.int64, k)
    _, lab, size = np.unique(roots, return_inverse=True, return_counts=True)
    return 1.0 / size[lab], int(len(size))
