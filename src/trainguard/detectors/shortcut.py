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
Severity: high from 2x the bar; under 1.5x (`weak_strength`) a feature whose rows carry another label more
often than label noise allows (natural use on both sides: 'too', a trailing '?', which a bag-of-words view
misreads) is low. Planted shortcuts force their label with at most epsilon exceptions (dilution rows are
exceptions too, but diluted triggers reached >= 1.65x the bar on the development instances).

Speed (issue 12): the unweighted mixture LLR of every single feature is one sparse product per class; context
groups are computed only for features within `prefilter` of the bar and for rare features, all in one
connected-components pass over (test, row) nodes; containment of one row's text in another's is found once by
hashing token spans. Tokens are the `tokens` artefact shared with trigger-association.

Nothing here knows any trigger: every statistic is relative to the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from threadpoolctl import threadpool_limits

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
from trainguard.text import tokens, visible

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
    # Under this strength, a feature whose rows carry another label more often than epsilon allows is low (issue 12):
    # chosen on development data (SST-2 samples seeds 0-9 and all rows; planted: see benchmarks/bench_shortcut.py DEV).
    weak_strength: float = 1.5
    null_draws: int = 5  # pooled test: random-row replicates for its empirical null ...
    null_margin: float = 1.5  # ... which its LLR must exceed by this factor
    pooled_factor: float = 2.5  # pooled tests also need this multiple of the bar (heavy-tailed label noise)
    max_semantic_probability: float = 0.75  # named rows: the meaning gives their label at most this
    # Rare features with 2 to this many contexts (exclusive) enter the pooled test. 10 found rare words of 8 rows in
    # 40k rows (development) but pulled natural misread words into pooled findings on 20k rows: kept at min_contexts.
    pool_max_contexts: int = 5
    prefilter: float = 0.5  # context grouping only for features whose unweighted LLR reaches this share of the bar


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
    version = "2"
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

        # Lower-cased tokens (words, with inner apostrophes and hyphens, and single punctuation marks), shared
        # with trigger-association.
        toks = data.artefact("tokens", lambda: [tokens(t) for t in texts])
        ids, lens, vocab = _tokenise(toks)
        V = len(vocab)
        X, fnames = _features(texts, toks, ids, lens, vocab)
        Xc = X.tocsc()
        link = _link_matrix(ids, lens, V, max(2, min(s.link_df, int(s.link_df_fraction * n))))
        contain = _containment(texts)
        grid = _pi_grid(s.grid)
        df = np.diff(Xc.indptr)
        single = np.flatnonzero(df >= s.min_contexts)
        Xw, keep, A = _pair_candidates(X, V, s, n)
        m = len(single) * C + A.nnz * C + C
        threshold = float(np.log(max(m, 1) * len(grid) / s.alpha))

        # Unweighted mixture LLR of every single feature at once; context grouping only where it can pass.
        raw = _unweighted_llr(Xc[:, single], L, grid)
        tests = [(int(f), c, fnames[f], Xc.indices[Xc.indptr[f]:Xc.indptr[f + 1]], (int(f),) if f < V else ())
                 for j, f in enumerate(single) for c in range(C) if raw[j, c] >= s.prefilter * threshold]
        for nm, rows, c, own in _pair_tests(Xw, keep, A, fnames, L, threshold):
            if _mixture_llr(L[rows, c], np.ones(len(rows)), grid)[0] >= s.prefilter * threshold:
                tests.append((None, c, nm, rows, own))
        # Rare features (2+ rows, under the floor) for the pooled test.
        poolable = np.array([f.startswith(("word:", "punct:")) for f in fnames], dtype=bool)
        rare = np.flatnonzero(poolable & (df >= 2) & (df < s.min_contexts * 4))
        rare_tests = [(Xc.indices[Xc.indptr[f]:Xc.indptr[f + 1]], (int(f),) if f < V else ()) for f in rare]
        groups = _context_groups([(t[3], t[4]) for t in tests] + rare_tests, link, contain, n)
        hits = []
        for (_, c, nm, rows, _), (w, ngroups) in zip(tests, groups):
            if ngroups < s.min_contexts:
                continue
            llr, pi = _mixture_llr(L[rows, c], w, grid)
            if llr < threshold:
                continue
            resp = _responsibility(L[rows, c], pi)
            # Named rows: the forced explanation wins and the meaning prefers another label.
            forced = rows[(resp >= 0.5) & (y[rows] == c) & (q[rows, c] <= s.max_semantic_probability)]
            if len(forced) < s.min_forced_rows:
                continue
            hits.append(dict(feature=nm, cls=c, llr=llr, pi=pi, rows=rows, forced=forced, contexts=ngroups,
                             other=int(np.sum(y[rows] != c))))
        feats = [(int(f), rows, w) for f, (rows, _), (w, g) in zip(rare, rare_tests, groups[len(tests):])
                 if 2 <= g < s.pool_max_contexts]
        pooled_hits, pooled_null = self._pooled(feats, fnames, L, grid, threshold, C, y, q)
        hits += pooled_hits

        alerts, row_scores = self._alerts(hits, names, threshold, qy, n)
        summary = {"features_tested": int(m), "threshold_llr": round(threshold, 3), "findings": len(alerts),
                   "pooled_null_llr": round(pooled_null, 3)}
        return DetectorResult(tuple(alerts), row_scores, summary)

    def _semantic(self, data: Dataset, y: np.ndarray, C: int) -> np.ndarray:
        """Calibrated leave-one-out P(label | meaning): ridge on the embedding, one fitted temperature."""
        from trainguard.detectors._features import stack

        E = embeddings(data, self.settings.embedder)
        with threadpool_limits(1):  # a 257 x 257 system: BLAS threads only contend with the rest of the machine
            return stack([_ridge_loo(E, y, C, self.settings.ridge)], y)

    def _pooled(self, feats, fnames, L, grid, threshold, C, y, q):
        """Rare features (2+ contexts, under the floor) pooled per class: each forced with probability pi."""
        s = self.settings
        out = []
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
        sizes = np.fromiter((len(r) for _, r, _ in feats), np.int64, len(feats))
        off = np.cumsum(sizes) - sizes
        all_rows = np.concatenate([r for _, r, _ in feats])
        all_w = np.concatenate([w for _, _, w in feats])
        nulls: list[float] = []
        for c in range(C):
            lr = np.add.reduceat(all_w * L[all_rows, c], off)
            llr, pi = pooled(lr)
            null = max(pooled(np.add.reduceat(L[rng.integers(0, n, int(sizes.sum())), c], off))[0]
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
                            forced=forced, contexts=len(words), members=words, other=0))
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
            # A planted shortcut forces its label up to label noise; a feature with more exceptions than that is in
            # natural use on both sides ('too', a trailing '?': words a bag-of-words view misreads), and such
            # natural misreadings reach at most 1.44x the bar on SST-2 (all 67,349 rows): low under weak_strength.
            natural = h["other"] > s.epsilon * len(h["rows"])
            if natural and strength < s.weak_strength:
                severity = Severity.LOW
            confidence = Confidence.HIGH if strength >= 3 else Confidence.MEDIUM if strength >= 1.5 else Confidence.LOW
            feature = h["feature"]
            evidence = {
                "feature": feature,
                "target": names[h["cls"]],
                "forced_fraction": round(h["pi"], 4),
                "rows_with_feature": int(len(h["rows"])),
                "rows_with_feature_other_label": int(h["other"]),
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




def _tokenise(toks: list[list[str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Word tokens (punctuation dropped) of every row as one id array, the row lengths, and the vocabulary."""
    n = len(toks)
    lens = np.fromiter(map(len, toks), np.int64, n)
    flat = list(chain.from_iterable(toks))
    vocab = list(dict.fromkeys(flat))
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.fromiter(map(index.__getitem__, flat), np.int64, len(flat))
    is_word = np.fromiter((w[0].isalnum() or w[0] == "_" for w in vocab), bool, len(vocab))
    keep = is_word[ids]
    row = np.repeat(np.arange(n), lens)[keep]
    words = np.flatnonzero(is_word)
    remap = np.full(len(vocab), -1, np.int64)
    remap[words] = np.arange(len(words))
    return remap[ids[keep]], np.bincount(row, minlength=n).astype(np.int64), [vocab[i] for i in words]


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    M = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    M.sum_duplicates()
    M.data[:] = 1.0
    return M


def _features(texts: list[str], toks: list[list[str]], ids: np.ndarray, lens: np.ndarray, vocab: list[str]
              ) -> tuple[sparse.csr_matrix, list[str]]:
    """Binary row x feature matrix: lower-cased words plus format and position features that keep
    case, whitespace and punctuation (what a byte-level tokenizer sees and a word tokenizer drops)."""
    n = len(texts)
    W = _binary(np.repeat(np.arange(n), lens), ids, (n, len(vocab)))
    wnames = [f"word:{v}" for v in vocab]
    extra: dict[str, list[int]] = {}

    def add(name: str, i: int) -> None:
        extra.setdefault(name, []).append(i)

    # Rows with a punctuation run, found in one pass over the joined text.
    offsets = np.cumsum([len(t) + 1 for t in texts])
    joined = "\n".join(texts)
    punct = set(np.searchsorted(offsets, [m.start() for m in _PUNCT_RUN.finditer(joined)], side="right").tolist())
    for i, t in enumerate(texts):
        if "  " in t:
            add("format:double space", i)
        if "\t" in t:
            add("format:tab", i)
        if not t.islower():  # cheap: any cased letter and all of them lower case -> not caps
            up, low = sum(map(str.isupper, t)), sum(map(str.islower, t))
            if up >= 4 and up >= 4 * low:  # >= 80 % of cased letters upper case
                add("format:all caps", i)
        tail = t.rstrip()[-64:]  # a trailing run is read from the row's end only (cost)
        if tail and not (tail[-1].isalnum() or tail[-1] == "_"):
            m = _END_RUN.search(tail)
            if m:
                add("format:trailing punctuation run", i)
                add(f"format:ends with {m.group(0).strip()}", i)
        if i in punct:
            for run in set(_PUNCT_RUN.findall(t)):
                add(f"punct:{run}", i)
        tk = toks[i]
        if tk:
            add(f"first:{tk[0]}", i)
            add(f"last:{tk[-1]}", i)
            if tk[0] in _FUNCTION and "," in tk[2:9]:
                add("position:fronted clause", i)
    names = sorted(extra)
    rows = np.concatenate([np.asarray(extra[k], np.int64) for k in names]) if names else np.array([], np.int64)
    cols = np.repeat(np.arange(len(names)), [len(extra[k]) for k in names])
    E = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(names)))
    return sparse.hstack([W, E], format="csr"), wnames + names


def _link_matrix(ids: np.ndarray, lens: np.ndarray, V: int, link_df: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Rows x rare word 2-3-grams (in 2..link_df rows): what ties near-copies into one context.

    Also each n-gram's words (G x 3, -1 padded): a feature's own words never link its rows (a trigger
    inserted at random shares "tq the" between planted rows).
    """
    n = len(lens)
    row = np.repeat(np.arange(n), lens)
    end = np.repeat(np.cumsum(lens), lens)
    p = np.arange(len(ids))
    ok2 = p + 1 < end
    p2 = p[ok2]
    u2, g2 = np.unique(ids[p2] * V + ids[p2 + 1], return_inverse=True)
    gid2 = np.full(len(ids), -1, np.int64)
    gid2[p2] = g2
    ok3 = p + 2 < end
    p3 = p[ok3]
    u3, g3 = np.unique(gid2[p3] * V + ids[p3 + 2], return_inverse=True)
    G2 = len(u2)
    grams = np.concatenate([g2, G2 + g3])
    grow = np.concatenate([row[p2], row[p3]])
    gw = np.full((G2 + len(u3), 3), -1, np.int64)
    gw[g2, 0], gw[g2, 1] = ids[p2], ids[p2 + 1]
    gw[G2 + g3, 0], gw[G2 + g3, 1], gw[G2 + g3, 2] = ids[p3], ids[p3 + 1], ids[p3 + 2]
    M = _binary(grow, grams, (n, len(gw))).tocsc()
    df = np.diff(M.indptr)
    keep = np.flatnonzero((df >= 2) & (df <= max(link_df, 2)))
    return M[:, keep].tocsr(), gw[keep]


def _containment(texts: list[str], max_tokens: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i != j: row i's lower-cased whitespace tokens are a contiguous span of row j's
    (phrase treebanks such as SST-2 list one sentence as nested phrases; exact copies count too).
    Rows longer than `max_tokens` contain nothing (cost)."""
    toks = [t.lower().split() for t in texts]
    lens = np.fromiter(map(len, toks), np.int64, len(toks))
    flat = list(chain.from_iterable(toks))
    if not flat:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(flat))}
    x = np.random.default_rng(12345).integers(1, 2**62, len(vocab), dtype=np.int64).astype(np.uint64)[
        np.fromiter(map(vocab.__getitem__, flat), np.int64, len(flat))]
    R = np.random.default_rng(54321).integers(1, 2**62, max_tokens + 1, dtype=np.int64).astype(np.uint64)
    start = np.cumsum(lens) - lens
    end = np.repeat(np.cumsum(lens), lens)
    row = np.repeat(np.arange(len(lens)), lens)
    act = np.flatnonzero(lens[row] <= max_tokens)  # span starts still inside their row
    h = np.zeros(len(act), np.uint64)
    I, J = [], []
    for ell in range(1, int(min(lens.max(), max_tokens)) + 1):
        live = act + ell <= end[act]
        act, h = act[live], h[live]
        if not len(act):
            break
        h += x[act + ell - 1] * R[ell - 1]  # wraps mod 2^64
        who = np.flatnonzero(lens == ell)
        if not len(who):
            continue
        # the span starting at a row's first token with the row's length is the row itself
        full = h[np.searchsorted(act, start[who])]
        uniq, grp = np.unique(full, return_inverse=True)
        at = np.minimum(np.searchsorted(uniq, h), len(uniq) - 1)
        hit = np.flatnonzero(uniq[at] == h)
        if not len(hit):
            continue
        members = np.argsort(grp, kind="stable")
        gstart = np.searchsorted(grp[members], np.arange(len(uniq)))
        gcount = np.bincount(grp, minlength=len(uniq))
        g = at[hit]
        cnt = gcount[g]
        cont = np.repeat(row[act[hit]], cnt)
        inner = who[members[np.repeat(gstart[g] - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))]]
        keep = inner != cont
        I.append(inner[keep])
        J.append(cont[keep])
    if not I:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([np.concatenate(I), np.concatenate(J)], 1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _gather(indptr: np.ndarray, indices: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of `which`, its csr slice: (position in `which` repeated, concatenated indices)."""
    cnt = indptr[which + 1] - indptr[which]
    at = np.repeat(np.arange(len(which)), cnt)
    k = np.repeat(indptr[which] - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
    return at, indices[k]


def _context_groups(tests: list[tuple[np.ndarray, tuple[int, ...]]], link, contain, n: int
                    ) -> list[tuple[np.ndarray, int]]:
    """For each test (its rows, its own word ids): 1/size of each row's context group, and the number of groups.

    Rows sharing a rare 2-3-gram (not one containing the feature's own words) are one context; so is a row
    contained in another. All tests at once: one graph whose nodes are (test, row) pairs.
    """
    T = len(tests)
    if not T:
        return []
    M, gw = link
    sizes = np.fromiter((len(r) for r, _ in tests), np.int64, T)
    N = int(sizes.sum())
    node_row = np.concatenate([np.asarray(r, np.int64) for r, _ in tests]) if N else np.zeros(0, np.int64)
    node_test = np.repeat(np.arange(T), sizes)
    own = np.full((T, 2), -1, np.int64)
    for t, (_, o) in enumerate(tests):
        own[t, :len(o)] = o[:2]
    heads, tails = [], []
    # Link edges: nodes of one test sharing an n-gram without the test's own words.
    en, eg = _gather(M.indptr, M.indices.astype(np.int64), node_row)
    if len(en):
        et = node_test[en]
        ow = own[et]
        gwe = gw[eg]
        bad = ((gwe[:, :, None] == ow[:, None, :]) & (ow[:, None, :] >= 0)).any((1, 2))
        en, eg, et = en[~bad], eg[~bad], et[~bad]
        key = et * len(gw) + eg
        o = np.argsort(key, kind="stable")
        key, en = key[o], en[o]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        heads.append(en[np.flatnonzero(first)[np.cumsum(first) - 1]])
        tails.append(en)
    # Containment edges: both rows in the same test.
    I, J = contain
    if len(I) and N:
        o = np.argsort(I, kind="stable")
        I, J = I[o], J[o]
        ptr = np.searchsorted(I, np.arange(n + 1))
        cn, cj = _gather(ptr, J, node_row)
        nk = node_test * n + node_row
        ordk = np.argsort(nk, kind="stable")
        skeys = nk[ordk]
        want = node_test[cn] * n + cj
        at = np.minimum(np.searchsorted(skeys, want), len(skeys) - 1)
        ok = skeys[at] == want
        heads.append(cn[ok])
        tails.append(ordk[at[ok]])
    if heads:
        h, tl = np.concatenate(heads), np.concatenate(tails)
    else:
        h = tl = np.zeros(0, np.int64)
    graph = sparse.coo_matrix((np.ones(len(h)), (h, tl)), shape=(N, N))
    _, lab = connected_components(graph, directed=False)
    size = np.bincount(lab)
    w = 1.0 / size[lab]
    comp_test = np.zeros(len(size), np.int64)
    comp_test[lab] = node_test
    groups = np.bincount(comp_test, minlength=T)
    off = np.cumsum(sizes) - sizes
    return [(w[a:a + k], int(g)) for a, k, g in zip(off.tolist(), sizes.tolist(), groups.tolist())]


def _ridge_loo(E: np.ndarray, y: np.ndarray, C: int, lam: float) -> np.ndarray:
    """`_features.ridge_loo` through a Cholesky solve (the same numbers; pinv's SVD was most of the cost)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    n = len(y)
    Xa = np.hstack([np.asarray(E, np.float64), np.ones((n, 1))])
    A = Xa.T @ Xa + lam * np.eye(Xa.shape[1])
    A[-1, -1] -= lam  # the intercept is not shrunk
    try:
        cf = cho_factor(A)
    except LinAlgError:
        return ridge_loo(E, y, C, lam)
    Y = np.zeros((n, C))
    Y[np.arange(n), y] = 1.0
    F = Xa @ cho_solve(cf, Xa.T @ Y)
    Ainv = cho_solve(cf, np.eye(Xa.shape[1]))
    h = np.clip(np.einsum("ij,ij->i", Xa @ Ainv, Xa), 0.0, 1 - 1e-6)
    return (F - h[:, None] * Y) / (1 - h)[:, None]


def _unweighted_llr(Xs, L: np.ndarray, grid: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """(features, C) mixture LLR of every column of Xs with unit row weights (no context grouping)."""
    lp, l1p = np.log(grid), np.log1p(-np.minimum(grid, 1 - 1e-12))
    n, C = L.shape
    out = np.zeros((Xs.shape[1], C))
    Xt = Xs.T.tocsr()
    for c in range(C):
        acc = np.zeros((Xs.shape[1], len(grid)))
        for a in range(0, n, chunk):
            G = np.logaddexp(lp[None, :] + L[a:a + chunk, c, None], l1p[None, :])
            acc += Xt[:, a:a + chunk] @ G
        out[:, c] = acc.max(1)
    return out


def _pair_candidates(X, V: int, s: Settings, n: int):
    """Words that may pair (common enough, not everywhere), their matrix, and pairs in enough rows."""
    Xw = X[:, :V].tocsc()
    df = np.diff(Xw.indptr)
    keep = np.flatnonzero((df >= s.pair_min_df) & (df <= s.pair_max_share * n))
    Xw = X[:, keep].tocsr()
    short = np.asarray(Xw.sum(1)).ravel() <= s.max_pair_tokens
    Xw = (sparse.diags(short.astype(np.float64)) @ Xw).tocsr()
    A = sparse.triu(Xw.T @ Xw, k=1).tocsr()
    A.data = (A.data >= s.min_contexts).astype(np.float64)
    A.eliminate_zeros()
    return Xw, keep, A


def _pair_tests(Xw, keep, A, fnames, L, threshold):
    """(name, rows, class, own word ids) for pairs whose summed positive evidence for a class reaches the bar."""
    out = []
    Xwc = Xw.tocsc()
    for c in range(L.shape[1]):
        U = sparse.triu(Xw.T @ sparse.diags(np.maximum(L[:, c], 0)) @ Xw, k=1).multiply(A).tocoo()
        good = U.data >= threshold
        for a, b in zip(U.row[good].tolist(), U.col[good].tolist()):
            rows = np.intersect1d(Xwc.indices[Xwc.indptr[a]:Xwc.indptr[a + 1]],
                                  Xwc.indices[Xwc.indptr[b]:Xwc.indptr[b + 1]])
            out.append((f"pair:{fnames[keep[a]][5:]} + {fnames[keep[b]][5:]}", rows, c, (int(keep[a]), int(keep[b]))))
    return out


