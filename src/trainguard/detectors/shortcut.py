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
Named rows (version 3): of a passing test's rows with its class, those whose words *without the feature* read as
another label, by a leave-one-out naive Bayes over the data's own words (`_WordsView`). The feature's words are
taken out because the poisoned rows teach the data's own model the trigger; the embedding ridge read the whole
row, clause and all, and named natural fronted clauses and rare words that a bag-of-words embedding misreads
(development, benchmarks/bench_shortcut_dev.py rows: syntactic precision 0.57-0.67 -> 0.79-0.84, rare words
0.62-0.81 -> 0.86-0.95; recall on the other shapes 0.75-0.96 against 0.77-1.00: the words view misreads about one
planted row in eight). The tests themselves still use the ridge view.

Severity: high from 2x the bar. A feature whose rows carry another label more often than label noise allows
(natural use on both sides: 'too', a trailing '?', which a bag-of-words view misreads) is low when the rows it
names are under `natural_share` of its rows with the class (version 4): most rows of a natural word read as
their label without it, while most rows of a planted trigger (diluted, a fronted clause) do not. Version 2 used
strength instead (low under 1.5x), which also kept diluted triggers at 0.1 % (1.06x) low.

Speed (issue 12): the unweighted mixture LLR of every single feature is one sparse product per class; context
groups are computed only for features within `prefilter` of the bar and for rare features, all in one
connected-components pass over (test, row) nodes; containment of one row's text in another's is found once by
hashing token spans. Tokens are the `tokens` artefact shared with trigger-association.

Sharded (issue 14, `trainguard scan --shard-rows N`): four maps over the shards, the decision once on the
merged parts (`_Sums`, `_LooPass`, `_ScorePass`, `_RowsPass` below): (1) exact ridge sums, label counts, rows per
feature and per word 2-3-gram; (2) each row's leave-one-out prediction (for the temperature, fitted on all rows as
in memory) and word-pair co-counts; (3) each single feature's and pair's unweighted evidence (which tests reach
`prefilter` of the bar); (4) the texts of the rows holding a candidate or rare feature, where context groups,
containment, the tests and the pooled test run as in memory. The ridge's sums are exact integers (embeddings on a
2^-20 grid) and its row products row-wise, in memory too, so each row's semantic view, and with it every finding,
row score and summary, is the same bit for bit however the rows are split; the screening sums of pass 3 are
exact fixed-point integers (2^-32), in memory too.
Memory: a shard's maps hold the shard; the merged parts hold the vocabulary-sized counts (features, 2-3-gram
hashes, pair co-counts), C + 1 numbers per row of the whole data (each row's prediction and label: 20 bytes a row
for two labels, for the temperature and the pooled test's null; about 100 bytes a row with what the decision derives
from them) and the gathered rows' texts.

Nothing here knows any trigger: every statistic is relative to the data.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from threadpoolctl import threadpool_limits

from trainguard.detectors._repr import embeddings, label_codes
from trainguard.errors import ConfigError
from trainguard.detectors.base import NotApplicable, Pass, ShardedDetector, register
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
from trainguard.text import first_seen_ids, tokens, visible

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
    # A feature whose rows carry another label more often than epsilon allows (natural use on both sides) is low
    # when under this strength (version 2's rule; 1.0 turns it off) ...
    weak_strength: float = 1.0
    # ... or when the rows it names are under this share of its rows with the class (version 4). Natural words that
    # the embedding misreads ('too', a trailing '?') name 0.09-0.16 of their rows; planted triggers in natural use
    # (diluted, a fronted clause, '??') name 0.45-0.73 (development: DEV, DEV2, SST-2 samples 0-9, 7-9 at 40k, all
    # rows). v2's strength rule (1.5x) kept diluted triggers at 0.1 % (1.06x) low with the natural words.
    natural_share: float = 0.3
    null_draws: int = 5  # pooled test: random-row replicates for its empirical null ...
    null_margin: float = 1.5  # ... which its LLR must exceed by this factor
    pooled_factor: float = 2.5  # pooled tests also need this multiple of the bar (heavy-tailed label noise)
    max_semantic_probability: float = 0.75  # row_view "ridge": named rows' label has at most this ridge probability
    # Rare features with 2 to this many contexts (exclusive) enter the pooled test. 10 found rare words of 8 rows in
    # 40k rows (development) but pulled natural misread words into pooled findings on 20k rows: kept at min_contexts.
    pool_max_contexts: int = 5
    # A rare feature joins a pooled finding at this posterior of being forced (version 6; 0.5 in version 5, 0.9
    # before) ...
    pool_membership: float = 0.3
    # ... when (with a words view) it has at least pool_min_rows rows and (version 6) its rows' mean log-odds of
    # the class without it is at most pool_mean_logit: together they read as another label, so one row that the
    # words view misreads no longer drops a planted word. All its rows are named. Version 5 (pool_mean_logit None)
    # needed all but pool_exceptions rows to read as another label, which a planted word's 4 rows all do about
    # 0.88^4 = 0.6 of the time. Development (benchmarks/bench_shortcut_dev.py pool6; rare words salts 0-4 on
    # samples 0, 5, 6, 8, 10, 0.5 %): recall 0.40-0.72 -> 0.80-0.92 at precision 0.89-0.94 (v5 0.94-1.00); on a
    # syntactic file whose pooled test passes, 6 natural rows more. Medians and clipped means: no better.
    pool_all_rows: bool = True
    pool_min_rows: int = 3
    pool_mean_logit: float | None = -1.0
    pool_exceptions: int = 0
    prefilter: float = 0.5  # context grouping only for features whose unweighted LLR reaches this share of the bar
    # Which rows a finding names (issue 12). "ridge": the forced explanation wins and the embedding view gives the
    # row's label at most max_semantic_probability. "without": the row's words *without the feature* (a
    # leave-one-out naive Bayes over the data's own words) give the label at most without_probability; the
    # feature's words are taken out because the poisoned rows teach the data's own model the trigger itself.
    # Chosen on the development instances (benchmarks/bench_shortcut.py DEV, DEV2) against "ridge" and an
    # average of the two views' log-odds (no better than "without"; not kept); frozen before FRESH3.
    row_view: str = "without"
    without_probability: float = 0.5
    nb_alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.row_view not in ("ridge", "without"):
            raise ConfigError(f"detector shortcut: row_view must be ridge or without, got {self.row_view!r}")
        if not isinstance(self.without_probability, (int, float)) or not 0 < self.without_probability < 1:
            raise ConfigError("detector shortcut: without_probability must be in (0, 1), "
                              f"got {self.without_probability!r}")
        if not isinstance(self.natural_share, (int, float)) or not 0 <= self.natural_share <= 1:
            raise ConfigError(f"detector shortcut: natural_share must be in [0, 1], got {self.natural_share!r}")
        if not isinstance(self.pool_min_rows, int) or self.pool_min_rows < 2:
            raise ConfigError(f"detector shortcut: pool_min_rows must be an integer >= 2, got {self.pool_min_rows!r}")
        if self.pool_mean_logit is not None and (isinstance(self.pool_mean_logit, bool) or
                                                 not isinstance(self.pool_mean_logit, (int, float)) or
                                                 not np.isfinite(self.pool_mean_logit)):
            raise ConfigError("detector shortcut: pool_mean_logit must be a finite number or null, "
                              f"got {self.pool_mean_logit!r}")
        if not isinstance(self.pool_exceptions, int) or self.pool_exceptions < 0:
            raise ConfigError(f"detector shortcut: pool_exceptions must be an integer >= 0, got {self.pool_exceptions!r}")
        if not isinstance(self.nb_alpha, (int, float)) or not self.nb_alpha > 0:
            raise ConfigError(f"detector shortcut: nb_alpha must be > 0, got {self.nb_alpha!r}")


def _pi_grid(k: int) -> np.ndarray:
    return np.geomspace(1e-3, 1.0, k)


def _mixture_llr(lr_log: np.ndarray, w: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """max over pi of sum_i w_i log(pi e^{l_i} + 1 - pi); returns (llr, pi)."""
    lp, l1p = np.log(grid), np.log1p(-np.minimum(grid, 1 - 1e-12))
    vals = (w[None, :] * np.logaddexp(lp[:, None] + lr_log[None, :], l1p[:, None])).sum(1)
    k = int(np.argmax(vals))
    return float(vals[k]), float(grid[k])


def _mean_logit(p: np.ndarray) -> float:
    """Mean log-odds of probabilities `p` (clipped at 1e-6 so that no row counts for more than ~14 nats)."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(np.mean(np.log(p) - np.log1p(-p)))


def _responsibility(lr_log: np.ndarray, pi: float) -> np.ndarray:
    a = np.log(pi) + lr_log
    return np.exp(a - np.logaddexp(a, np.log1p(-min(pi, 1 - 1e-12))))


@register
class Shortcut(ShardedDetector):
    name = "shortcut"
    version = "6"
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
        # The semantic view (embeddings: a tokeniser in Rust, SQLite reads, BLAS) runs in a thread while the
        # surface features (Python) are built here: the two overlap on a second core. Same results either way.
        pool = ThreadPoolExecutor(1, thread_name_prefix="shortcut-semantic")
        try:
            semantic = pool.submit(self._semantic, data, y, C)
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
            q = semantic.result()
        finally:  # on an error or Ctrl-C here, do not wait for the embedding to finish
            pool.shutdown(wait=False, cancel_futures=True)
        qy = np.clip(q[np.arange(n), y], 1e-6, 1.0)
        # log a_i(c) - log b_i for every row and class: "forced to c" against the semantic view.
        a = np.full((n, C), np.log(s.epsilon / max(C - 1, 1)))
        a[np.arange(n), y] = np.log(1 - s.epsilon)
        L = a - np.log(qy)[:, None]

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
        view = _RowView(lambda: _WordsView.of(X[:, :V], vocab, y, C, s.nb_alpha), toks, np.arange(n))
        hits = self._hits([(c, nm, rows) for _, c, nm, rows, _ in tests], groups, L, y, q, grid, threshold, view)
        feats = [(int(f), rows, w) for f, (rows, _), (w, g) in zip(rare, rare_tests, groups[len(tests):])
                 if 2 <= g < s.pool_max_contexts]
        pooled_hits, pooled_null = self._pooled(feats, fnames, L, grid, threshold, C, y, q, view)
        hits += pooled_hits

        alerts, row_scores = self._alerts(hits, names, threshold, qy, n)
        summary = {"features_tested": int(m), "threshold_llr": round(threshold, 3), "findings": len(alerts),
                   "pooled_null_llr": round(pooled_null, 3)}
        return DetectorResult(tuple(alerts), row_scores, summary)

    # -- sharded (issue 14): the module docstring's "Sharded" part and the pieces at the end -----------------------
    def summarize(self, shard: Dataset) -> "_Sums":
        return _Sums.of(shard, self.settings)

    def finalize(self, summary: "_Sums", kind: Kind) -> "_LooPass | NotApplicable":
        return _loo_pass(self, summary)

    def _semantic(self, data: Dataset, y: np.ndarray, C: int) -> np.ndarray:
        """Calibrated leave-one-out P(label | meaning): ridge on the embedding, one fitted temperature."""
        R = _ridge_loo(embeddings(data, self.settings.embedder), y, C, self.settings.ridge)
        return _calibrated(R, _stack_weight(R, y))

    def _named(self, rows, c, y, q, view, feature, resp=None) -> np.ndarray:
        """Rows of a passing test (or a pooled feature) that it names (see Settings.row_view); `resp`: the
        test's responsibilities, which the ridge rule also requires to favour the forced explanation."""
        s = self.settings
        if s.row_view == "ridge":
            keep = (y[rows] == c) & (q[rows, c] <= s.max_semantic_probability)
            return rows[keep if resp is None else keep & (resp >= 0.5)]
        mine = rows[y[rows] == c]
        return mine[view.without(mine, c, y, feature) <= s.without_probability]

    def _hits(self, tests, groups, L, y, q, grid, threshold, view) -> list[dict]:
        """The tests (class, name, rows) that pass, with the rows they name."""
        s = self.settings
        hits = []
        for (c, nm, rows), (w, ngroups) in zip(tests, groups):
            if ngroups < s.min_contexts:
                continue
            llr, pi = _mixture_llr(L[rows, c], w, grid)
            if llr < threshold:
                continue
            resp = _responsibility(L[rows, c], pi)
            forced = self._named(rows, c, y, q, view, nm, resp)
            if len(forced) < s.min_forced_rows:
                continue
            hits.append(dict(feature=nm, cls=c, llr=llr, pi=pi, rows=rows, forced=forced, contexts=ngroups,
                             other=int(np.sum(y[rows] != c))))
        return hits

    def _pooled(self, feats, fnames, L, grid, threshold, C, y, q, view):
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
            # Members: features the forced explanation wins often enough for, all of whose rows carry the class.
            members = [(f, r) for f, r, _ in (feats[j] for j in np.flatnonzero(resp >= s.pool_membership))
                       if np.all(y[r] == c)]
            if not s.pool_all_rows or s.row_view == "ridge":
                chosen = [(f, r, self._named(r, c, y, q, view, fnames[f])) for f, r in members]
            elif s.pool_mean_logit is None:  # version 5: every row (but pool_exceptions) reads as another label
                chosen = [(f, r, m) for f, r in members if len(r) >= s.pool_min_rows
                          for m in (self._named(r, c, y, q, view, fnames[f]),) if len(m) >= len(r) - s.pool_exceptions]
            else:  # version 6: its rows, together, read as another label; all of them are named
                chosen = [(f, r, r) for f, r in members if len(r) >= s.pool_min_rows
                          and _mean_logit(view.without(r, c, y, fnames[f])) <= s.pool_mean_logit]
            forced = np.unique(np.concatenate([m for _, _, m in chosen])) if chosen else np.array([], int)
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
            # natural use on both sides ('too', a trailing '?': words a bag-of-words view misreads) or a diluted
            # trigger; the share of its rows that contradict their label without it tells them apart.
            natural = h["other"] > s.epsilon * len(h["rows"])
            share = len(forced) / max(len(h["rows"]) - h["other"], 1)
            if natural and (strength < s.weak_strength or share < s.natural_share):
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
                "named_share_of_label_rows": round(share, 4),
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




def _class_counts(W: sparse.csr_matrix, y: np.ndarray, C: int) -> np.ndarray:
    """(V, C) rows of each class holding each word, from binary rows x words `W` and class codes `y`."""
    Y = sparse.csr_matrix((np.ones(len(y)), (y, np.arange(len(y)))), shape=(C, len(y)))
    return np.rint((Y @ W).toarray()).astype(np.int64).T


class _WordsView:
    """Leave-one-out naive Bayes over the data's own words (binary per row, Laplace `alpha`).

    Only integer counts go in (rows per word and class), so the sharded scan, which merges the same counts,
    gets the same probabilities bit for bit.
    """

    def __init__(self, words: list[str], K: np.ndarray, rows: np.ndarray, alpha: float) -> None:
        self.index = {w: i for i, w in enumerate(words)}
        self.K = K.astype(np.int64)  # (V, C): rows of each class holding each word
        self.rows = rows.astype(np.int64)  # (C,) rows per class
        self.totals = self.K.sum(0)
        self.vocab = len(words)
        self.alpha = alpha

    @classmethod
    def of(cls, W: sparse.csr_matrix, vocab: list[str], y: np.ndarray, C: int, alpha: float) -> "_WordsView":
        return cls(vocab, _class_counts(W, y, C), np.bincount(y, minlength=C), alpha)

    def probability(self, words: list[str], label: int, c: int) -> float:
        """P(class c | these words) with the row itself (of class `label`) left out of the counts."""
        C = len(self.rows)
        own = np.zeros(C, np.int64)
        own[label] = 1
        tot = self.totals - own * len(words)
        logp = np.log(np.maximum(self.rows - own, 1) / max(int(self.rows.sum()) - 1, 1))
        at = np.fromiter((self.index.get(w, -1) for w in words), np.int64, len(words))
        known = self.K[np.maximum(at, 0)] if len(self.K) else np.zeros((len(at), C), np.int64)
        k = np.where((at >= 0)[:, None], known, 0) - own  # (words, C); a word the counts lack counts 0
        logp = logp + (np.log(np.maximum(k, 0) + self.alpha) - np.log(tot + self.alpha * self.vocab)).sum(0)
        return float(np.exp(logp[c] - np.logaddexp.reduce(logp)))


def _removed(feature: str, toks: list[str]) -> frozenset[str]:
    """The words of `feature` in a row with tokens `toks`."""
    kind, _, rest = feature.partition(":")
    if kind in ("word", "first", "last"):
        return frozenset((rest,))
    if kind == "pair":
        return frozenset(rest.split(" + "))
    if kind == "position":  # the fronted clause: the words before its comma
        k = toks.index(",") if "," in toks[:9] else 0
        return frozenset(toks[:k])
    return frozenset()  # format and punctuation features hold no word


class _RowView:
    """Each named row read without the feature that names it (Settings.row_view)."""

    def __init__(self, words: "Callable[[], _WordsView]", toks: list[list[str]], pos: np.ndarray) -> None:
        self._make, self._words, self.toks, self.pos = words, None, toks, pos  # pos: ascending dataset rows

    @property
    def words(self) -> "_WordsView":
        if self._words is None:  # built on the first test that passes: most clean files have none
            self._words = self._make()
        return self._words

    def without(self, rows: np.ndarray, c: int, y: np.ndarray, feature: str) -> np.ndarray:
        out = np.empty(len(rows))
        for j, (r, i) in enumerate(zip(rows.tolist(), np.searchsorted(self.pos, rows).tolist())):
            tk = self.toks[i]
            gone = _removed(feature, tk)
            kept = sorted({t for t in tk if (t[0].isalnum() or t[0] == "_") and t not in gone})
            out[j] = self.words.probability(kept, int(y[r]), c)
        return out


def _tokenise(toks: list[list[str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Word tokens (punctuation dropped) of every row as one id array, the row lengths, and the vocabulary."""
    n = len(toks)
    lens = np.fromiter(map(len, toks), np.int64, n)
    ids, vocab = first_seen_ids(toks)
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


_SPAN_MASK = (1 << 20) - 1


def _containment(texts: list[str], max_tokens: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i != j: row i's lower-cased whitespace tokens are a contiguous span of row j's
    (phrase treebanks such as SST-2 list one sentence as nested phrases; exact copies count too).
    Rows longer than `max_tokens` contain nothing (cost)."""
    toks = [t.lower().split() for t in texts]
    lens = np.fromiter(map(len, toks), np.int64, len(toks))
    ids, vocab = first_seen_ids(toks)
    if not len(ids):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    x = np.random.default_rng(12345).integers(1, 2**62, len(vocab), dtype=np.int64).astype(np.uint64)[ids]
    R = np.random.default_rng(54321).integers(1, 2**62, max_tokens + 1, dtype=np.int64).astype(np.uint64)
    start = np.cumsum(lens) - lens
    end = np.repeat(np.cumsum(lens), lens)
    row = np.repeat(np.arange(len(lens)), lens)
    act = np.flatnonzero(lens[row] <= max_tokens)  # span starts still inside their row
    h = np.zeros(len(act), np.uint64)
    bitmap = np.zeros(_SPAN_MASK + 1, bool)
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
        # A bitmap of the rows' hashes' low bits screens the spans first; only those that pass are searched.
        bitmap[uniq & np.uint64(_SPAN_MASK)] = True
        maybe = np.flatnonzero(bitmap[h & np.uint64(_SPAN_MASK)])
        bitmap[uniq & np.uint64(_SPAN_MASK)] = False
        at = np.minimum(np.searchsorted(uniq, h[maybe]), len(uniq) - 1)
        found = uniq[at] == h[maybe]
        hit, at = maybe[found], at[found]
        if not len(hit):
            continue
        members = np.argsort(grp, kind="stable")
        gstart = np.searchsorted(grp[members], np.arange(len(uniq)))
        gcount = np.bincount(grp, minlength=len(uniq))
        g = at
        cnt = gcount[g]
        cont = np.repeat(row[act[hit]], cnt)
        inner = who[members[np.repeat(gstart[g] - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))]]
        keep = inner != cont
        I.append(inner[keep])
        J.append(cont[keep])
    if not I:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.concatenate(I) * len(texts) + np.concatenate(J))  # sorted by (i, j), each once
    return pairs // len(texts), pairs % len(texts)


def _gather(indptr: np.ndarray, indices: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of `which`, its csr slice: (position in `which` repeated, concatenated indices)."""
    cnt = indptr[which + 1] - indptr[which]
    at = np.repeat(np.arange(len(which)), cnt)
    k = np.repeat(indptr[which] - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
    return at, indices[k]


def _context_groups(tests: list[tuple[np.ndarray, tuple[int, ...]]], link, contain, n: int,
                    max_nodes: int = 1 << 16) -> list[tuple[np.ndarray, int]]:
    """For each test (its rows, its own word ids): 1/size of each row's context group, and the number of groups.

    Rows sharing a rare 2-3-gram (not one containing the feature's own words) are one context; so is a row
    contained in another. One graph whose nodes are (test, row) pairs; no edge joins two tests, so tests are
    taken in batches of about `max_nodes` nodes (the edges of all tests at once reached 12 GB on 300k rows) with
    the same weights and counts.
    """
    T = len(tests)
    if not T:
        return []
    sizes = np.fromiter((len(r) for r, _ in tests), np.int64, T)
    if T > 1 and int(sizes.sum()) > max_nodes:
        out, a = [], 0
        while a < T:
            b = a + max(1, int(np.searchsorted(np.cumsum(sizes[a:]), max_nodes, side="right")))
            out += _context_groups(tests[a:b], link, contain, n, max_nodes)
            a = b
        return out
    M, gw = link
    N = int(sizes.sum())
    node_row = np.concatenate([np.asarray(r, np.int64) for r, _ in tests]) if N else np.zeros(0, np.int64)
    node_test = np.repeat(np.arange(T), sizes)
    own = np.full((T, 2), -1, np.int64)
    for t, (_, o) in enumerate(tests):
        own[t, :len(o)] = o[:2]
    heads, tails = [], []
    # Link edges: nodes of one test sharing an n-gram without the test's own words. Most (test, n-gram) keys
    # hold one node and make no edge, so the own-word check runs only on keys shared by two nodes or more.
    en, eg = _gather(M.indptr, M.indices.astype(np.int64), node_row)
    if len(en):
        key = node_test[en] * len(gw) + eg
        o = np.argsort(key, kind="stable")
        key, en = key[o], en[o]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        size = np.diff(np.append(np.flatnonzero(first), len(key)))
        shared = np.repeat(size >= 2, size)
        key, en, first, size = key[shared], en[shared], first[shared], size[size >= 2]
        if len(key):
            at = np.flatnonzero(first)
            words, ow = gw[key[at] % len(gw)], own[key[at] // len(gw)]
            bad = np.zeros(len(at), bool)
            for k in range(ow.shape[1]):
                o = ow[:, k:k + 1]
                bad |= ((words == o) & (o >= 0)).any(1)
            head = np.repeat(en[at], size)
            good = ~np.repeat(bad, size) & (head != en)  # no self-loops
            heads.append(head[good])
            tails.append(en[good])
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


_QUANT = 20  # embeddings enter the ridge on a 2^-20 grid, so its sums are exact (any shard split sums the same)
_BLOCK = 2048  # rows per exact block: |entries| <= 2^11 * 1, multiples of 2^-40: exact in float64 (53 bits)


def _design(E: np.ndarray) -> np.ndarray:
    """[embedding on a 2^-20 grid, 1]: products are multiples of 2^-40, sums of a block exact in float64.

    Every embedder returns L2-normalised rows, so entries lie in [-1, 1] and the clip changes nothing.
    float32 rows are rounded in float32: scaling by 2^20 and rounding to an integer below 2^21 are exact there,
    so the grid values are the ones float64 gives, at a fraction of the memory traffic."""
    E = np.asarray(E)
    Xa = np.empty((len(E), E.shape[1] + 1))
    Xa[:, -1] = 1.0
    work = np.float32 if E.dtype == np.float32 else np.float64
    Q = np.clip(E, -1.0, 1.0, dtype=work)
    Q *= work(2.0**_QUANT)
    np.rint(Q, out=Q)
    np.multiply(Q, 2.0**-_QUANT, out=Xa[:, :-1])
    return Xa


def _gram(E: np.ndarray, y: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact integer (units of 2^-40) XᵀX and XᵀY (one-hot y) of the design `[E, 1]`: any split of the rows sums
    to the same integers. The design is made a block at a time (a whole float64 copy of E is never held)."""
    d = E.shape[1] + 1
    xtx, xty = np.zeros((d, d), object), np.zeros((d, C), object)
    acc, acy = np.zeros((d, d), np.int64), np.zeros((d, C), np.int64)
    scale = 2.0 ** (2 * _QUANT)
    with threadpool_limits(1):
        for k, a in enumerate(range(0, len(y), _BLOCK)):
            Xb = _design(E[a:a + _BLOCK])
            Yb = np.zeros((len(Xb), C))
            Yb[np.arange(len(Xb)), y[a:a + _BLOCK]] = 1.0
            acc += np.rint((Xb.T @ Xb) * scale).astype(np.int64)  # exact: integers below 2^51
            acy += np.rint((Xb.T @ Yb) * scale).astype(np.int64)
            if k % 1024 == 1023:  # int64 holds 2^12 blocks of 2^51; fold into Python integers well before
                xtx, xty, acc, acy = xtx + acc.astype(object), xty + acy.astype(object), acc * 0, acy * 0
    return xtx + acc.astype(object), xty + acy.astype(object)


def _ridge_solve(xtx: np.ndarray, xty: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients B, (XᵀX + lam I)^-1) from the exact sums; the intercept is not shrunk."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    scale = 2.0 ** (2 * _QUANT)
    A = xtx.astype(np.float64) / scale + lam * np.eye(len(xtx))
    A[-1, -1] -= lam
    XtY = xty.astype(np.float64) / scale
    with threadpool_limits(1):
        try:
            cf = cho_factor(A)
            return cho_solve(cf, XtY), cho_solve(cf, np.eye(len(A)))
        except LinAlgError:
            Ainv = np.linalg.pinv(A)
            return Ainv @ XtY, Ainv


def _loo_rows(E: np.ndarray, y: np.ndarray, B: np.ndarray, Ainv: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Leave-one-out ridge predictions of the design `[E, 1]`, row by row: (f_i - h_i y_i) / (1 - h_i),
    h_i = x_iᵀ A^-1 x_i.

    Each row's numbers must not depend on which rows share its block, or a shard would not give the rows the
    in-memory scan gives them. BLAS sums in another order for another block shape, so the costly product
    x_iᵀ A^-1 is taken in integers: the design is on a 2^-20 grid and A^-1 on a grid 2^(32 - log2 d) times
    finer than its largest entry (2^23 at d = 257), so every partial sum is an integer below 2^52 and exact in
    float64 in any order.
    The rest (x_iᵀ B, the row dot products) is einsum, row by row. Rows go in chunks, so the temporaries stay
    a few MB whatever the row count."""
    n, C = len(y), B.shape[1]
    d = len(Ainv)
    room = 52 - _QUANT - int(np.ceil(np.log2(max(d, 2))))  # bits left for A^-1: d terms of 2^20 x 2^room <= 2^52
    peak = float(np.abs(Ainv).max()) if Ainv.size else 0.0
    if not np.isfinite(peak):
        raise ValueError("shortcut: the ridge system has no finite inverse")
    shift = min(room - int(np.ceil(np.log2(peak))), 1000) if peak > 0 else 0  # 2^1000: still a finite float
    Ai = np.rint(Ainv * 2.0**shift)
    unit = 2.0 ** -(2 * _QUANT + shift)
    out = np.empty((n, C))
    with threadpool_limits(1):
        for a in range(0, n, chunk):
            Xa = _design(E[a:a + chunk])
            m = len(Xa)
            Xi = Xa * 2.0**_QUANT  # integers of magnitude <= 2^20
            F = np.einsum("ij,jk->ik", Xa, B, optimize=False)
            h = np.clip(np.einsum("ij,ij->i", Xi @ Ai, Xi, optimize=False) * unit, 0.0, 1 - 1e-6)
            F[np.arange(m), y[a:a + chunk]] -= h
            out[a:a + m] = F / (1 - h)[:, None]
    return out


def _ridge_loo(E: np.ndarray, y: np.ndarray, C: int, lam: float) -> np.ndarray:
    """`_features.ridge_loo` from exact sums and row-wise products (the same numbers in memory and sharded)."""
    B, Ainv = _ridge_solve(*_gram(E, y, C), lam)
    return _loo_rows(E, y, B, Ainv)


_FIXED = 32  # screening sums are kept in fixed point (2^-32) as exact integers: any shard split sums the same


def _fixed(v: np.ndarray) -> np.ndarray:
    """v in units of 2^-32 (int64); |v| stays below 2^5 here (log-ratios of clipped probabilities)."""
    return np.rint(v * 2.0**_FIXED).astype(np.int64)


def _mixture_terms(Lc: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(rows, grid) log(pi e^l + 1 - pi) of each row for one class, fixed point."""
    lp, l1p = np.log(grid), np.log1p(-np.minimum(grid, 1 - 1e-12))
    return _fixed(np.logaddexp(lp[None, :] + Lc[:, None], l1p[None, :]))


def _unweighted_llr(Xs, L: np.ndarray, grid: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """(features, C) mixture LLR of every column of Xs with unit row weights (no context grouping)."""
    n, C = L.shape
    out = np.zeros((Xs.shape[1], C))
    Xt = Xs.T.tocsr().astype(np.int64)
    for c in range(C):
        acc = np.zeros((Xs.shape[1], len(grid)), np.int64)
        for a in range(0, n, chunk):
            acc += Xt[:, a:a + chunk] @ _mixture_terms(L[a:a + chunk, c], grid)
        out[:, c] = acc.max(1) / 2.0**_FIXED
    return out


def _pair_evidence(Xw, Lc: np.ndarray, A) -> sparse.csr_matrix:
    """(K, K) summed positive evidence for one class of each tested pair (A's pattern), fixed point."""
    Xi = Xw.astype(np.int64)
    return sparse.triu(Xi.T @ sparse.diags(_fixed(np.maximum(Lc, 0)), dtype=np.int64) @ Xi, k=1).multiply(A.astype(np.int64)).tocsr()


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


def _pair_rows(Xc: sparse.csc_matrix, a: int, b: int) -> np.ndarray:
    """Rows holding both columns a and b of a binary CSC matrix whose columns list distinct rows (sum_duplicates)."""
    return np.intersect1d(Xc.indices[Xc.indptr[a]:Xc.indptr[a + 1]], Xc.indices[Xc.indptr[b]:Xc.indptr[b + 1]],
                          assume_unique=True)


def _pair_tests(Xw, keep, A, fnames, L, threshold):
    """(name, rows, class, own word ids) for pairs whose summed positive evidence for a class reaches the bar."""
    out = []
    Xwc = Xw.tocsc()
    Xwc.sum_duplicates()  # each column's rows sorted and distinct: the intersections below skip np.unique
    for c in range(L.shape[1]):
        U = _pair_evidence(Xw, L[:, c], A).tocoo()
        good = U.data / 2.0**_FIXED >= threshold
        for a, b in zip(U.row[good].tolist(), U.col[good].tolist()):
            rows = _pair_rows(Xwc, a, b)
            out.append((f"pair:{fnames[keep[a]][5:]} + {fnames[keep[b]][5:]}", rows, c, (int(keep[a]), int(keep[b]))))
    return out




# -- sharded pieces (issue 14) ---------------------------------------------------------------------------------------
# Four maps over the shards; every shard-side step is per row or a sum, the decision runs once on the merged parts:
#  1. `_Sums`: ridge sums (XᵀX, XᵀY over [embedding, 1]), label counts, rows per feature (words first-seen first),
#     rows per word 2-3-gram (64-bit hash, exact integers; trigger-association's helpers) -> the ridge solve;
#  2. `_Loo`: each row's leave-one-out ridge prediction (C floats) and label, and the word-pair co-counts ->
#     the temperature (fitted on all rows, as in memory), the pairs tested, the Bonferroni bar;
#  3. `_Scores`: per single feature and class the unweighted mixture sums, per pair and class the positive
#     evidence -> which tests reach `prefilter` of the bar, which pairs can pass;
#  4. `_Rows`: the texts of the rows holding a candidate or a rare feature, and again each row's (prediction,
#     label) -> context groups, containment and the decision on those rows, the pooled test's null on all rows.


def _shard_view(shard: Dataset):
    texts = [r.text for r in shard]
    toks = shard.artefact("tokens", lambda: [tokens(t) for t in texts])
    ids, lens, vocab = _tokenise(toks)
    X, fnames = _features(texts, toks, ids, lens, vocab)
    return texts, toks, ids, lens, vocab, X.tocsc(), fnames


def _codes(shard: Dataset, names: list[str]) -> np.ndarray:
    index = {k: i for i, k in enumerate(names)}
    return np.fromiter((index[r.label if r.label is not None else ""] for r in shard), np.int32, len(shard))


def _stack_weight(R: np.ndarray, y: np.ndarray) -> float:
    """`_features.stack`'s fitted weight for one block (the same code, so the same number)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    n = len(y)
    b = R - R.mean(1, keepdims=True)

    def nll(w):
        return -log_softmax(w[0] * b, axis=1)[np.arange(n), y].mean()

    with threadpool_limits(1):
        return float(minimize(nll, np.ones(1), method="L-BFGS-B", bounds=[(0.0, 50.0)]).x[0])


def _calibrated(R: np.ndarray, w: float) -> np.ndarray:
    from scipy.special import log_softmax

    return np.exp(log_softmax(w * (R - R.mean(1, keepdims=True)), axis=1))


def _log_ratio(q: np.ndarray, y: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(L, qy) as `Shortcut.run` builds them from the semantic view."""
    n, C = q.shape
    qy = np.clip(q[np.arange(n), y], 1e-6, 1.0)
    a = np.full((n, C), np.log(eps / max(C - 1, 1)))
    a[np.arange(n), y] = np.log(1 - eps)
    return a - np.log(qy)[:, None], qy


def _add_dict(a: dict, b: dict) -> dict:
    out = dict(a)  # a's keys first, then b's new ones: first-seen order over the shards in order
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


@dataclass
class _Sums:
    n: int
    labels: dict  # label -> rows
    xtx: np.ndarray  # (d+1, d+1) over [embedding, 1]
    xty: dict  # label -> (d+1,) sum of its rows' [embedding, 1]
    df: dict  # feature name -> rows (words in first-seen order)
    grams: np.ndarray  # sorted uint64 hashes of word 2-3-grams ...
    gram_df: np.ndarray  # (G, 1) int64 ... and the rows holding each
    words: dict  # (label, word) -> rows (only with Settings.row_view other than "ridge")

    @classmethod
    def of(cls, shard: Dataset, s: Settings) -> "_Sums":
        from trainguard.detectors.trigger_association import _grams, _unique, _word_hashes

        n = len(shard)
        labels = [r.label if r.label is not None else "" for r in shard]
        label_of = list(dict.fromkeys(labels))
        index = {k: i for i, k in enumerate(label_of)}
        lab = np.fromiter((index[k] for k in labels), np.int64, n)
        xtx, sums = _gram(embeddings(shard, s.embedder), lab, len(label_of))
        xty = {k: sums[:, i] for i, k in enumerate(label_of)}
        _, _, ids, lens, vocab, Xc, fnames = _shard_view(shard)
        df = dict(zip(fnames, np.diff(Xc.indptr).tolist()))
        p, h, _ = _grams(_word_hashes(vocab)[ids] if len(vocab) else np.zeros(0, np.uint64), lens, 3)
        row = np.repeat(np.arange(n, dtype=np.int64), lens)[p]
        o = np.lexsort((row, h))
        h, row = h[o], row[o]
        first = np.ones(len(h), bool)
        first[1:] = (h[1:] != h[:-1]) | (row[1:] != row[:-1])
        keys, inv, _ = _unique(h[first])
        words: dict = {}
        if s.row_view != "ridge":
            K = _class_counts(Xc[:, :len(vocab)].tocsr(), lab, len(label_of))
            words = {(label_of[i], vocab[j]): int(K[j, i]) for j, i in zip(*np.nonzero(K))}
        return cls(n, dict(Counter(labels)), xtx, xty, df, keys,
                   np.bincount(inv, minlength=len(keys)).astype(np.int64)[:, None], words)

    def merge(self, other: "_Sums") -> "_Sums":
        from trainguard.detectors.trigger_association import _union

        grams, gdf, _ = _union(self.grams, self.gram_df, other.grams, other.gram_df)
        return _Sums(self.n + other.n, _add_dict(self.labels, other.labels), self.xtx + other.xtx,
                     _add_dict(self.xty, other.xty), _add_dict(self.df, other.df), grams, gdf,
                     _add_dict(self.words, other.words))


def _loo_pass(det: "Shortcut", t: _Sums) -> "_LooPass | NotApplicable":
    s = det.settings
    if len(t.labels) < 2:
        return NotApplicable("needs at least two labels (the data has one)")
    if t.n < 2:
        return NotApplicable("needs at least two records to compare embeddings")
    names = sorted(t.labels)
    B, Ainv = _ridge_solve(t.xtx, np.stack([t.xty[k] for k in names], 1), s.ridge)
    words = [k for k in t.df if k.startswith("word:")]
    fnames = words + sorted(k for k in t.df if not k.startswith("word:"))
    df = np.fromiter((t.df[k] for k in fnames), np.int64, len(fnames))
    link_df = max(2, min(s.link_df, int(s.link_df_fraction * t.n)))
    g = t.gram_df[:, 0]
    wdf = df[:len(words)]
    keep = [words[i] for i in np.flatnonzero((wdf >= s.pair_min_df) & (wdf <= s.pair_max_share * t.n))]
    view = None
    if s.row_view != "ridge":
        col = {k: i for i, k in enumerate(names)}
        index: dict = {}
        for _, w in t.words:
            index.setdefault(w, len(index))
        K = np.zeros((len(index), len(names)), np.int64)
        for (k, w), v in t.words.items():
            K[index[w], col[k]] = v
        view = _WordsView(list(index), K, np.array([t.labels[k] for k in names], np.int64), s.nb_alpha)
        t.words = {}
    return _LooPass(det, names, t.n, B, Ainv, fnames, df, t.grams[(g >= 2) & (g <= max(link_df, 2))], keep, view)


def _pair_matrix(Xc, fnames: list[str], keep_index: dict, K: int, max_tokens: int) -> sparse.csr_matrix:
    """Rows x pair words (global order), rows holding more than `max_tokens` of them emptied (as in memory)."""
    cols = [j for j, f in enumerate(fnames) if f in keep_index]
    sub = Xc[:, cols].tocoo()
    Xw = sparse.csr_matrix((sub.data, (sub.row, np.array([keep_index[fnames[j]] for j in cols], np.int64)[sub.col])),
                           shape=(Xc.shape[0], K))
    short = np.asarray(Xw.sum(1)).ravel() <= max_tokens
    return (sparse.diags(short.astype(np.float64)) @ Xw).tocsr()


@dataclass
class _Loo:
    R: list  # per shard: (rows, C) leave-one-out ridge predictions
    y: list  # per shard: (rows,) label codes
    co: sparse.csr_matrix  # (K, K) upper-triangular rows per pair of pair words (short rows)

    def merge(self, other: "_Loo") -> "_Loo":
        return _Loo(self.R + other.R, self.y + other.y, self.co + other.co)


@dataclass
class _LooPass(Pass):
    """The ridge is solved: each row's leave-one-out prediction, and pair co-counts among the pair words."""

    det: "Shortcut"
    names: list[str]
    n: int
    B: np.ndarray  # (d+1, C) ridge coefficients
    Ainv: np.ndarray  # (d+1, d+1)
    fnames: list[str]  # every feature, in the in-memory column order
    df: np.ndarray  # rows per feature
    linkable: np.ndarray  # sorted hashes of word 2-3-grams in 2..link_df rows
    keep: list[str]  # pair words, in column order
    # The data's own words by class (Settings.row_view), for the last pass's decision: about 24 bytes a distinct
    # word, carried with the passes between workers (never through the scheduler, which holds no results).
    words: "_WordsView | None" = None

    def loo(self, shard: Dataset) -> tuple[np.ndarray, np.ndarray]:
        y = _codes(shard, self.names)
        return _loo_rows(embeddings(shard, self.det.settings.embedder), y, self.B, self.Ainv), y

    def summarize(self, shard: Dataset) -> _Loo:
        R, y = self.loo(shard)
        K = len(self.keep)
        _, _, _, _, _, Xc, fnames = _shard_view(shard)
        Xw = _pair_matrix(Xc, fnames, {w: i for i, w in enumerate(self.keep)}, K, self.det.settings.max_pair_tokens)
        return _Loo([R], [y], sparse.triu(Xw.T @ Xw, k=1).tocsr())

    def finalize(self, summary: _Loo, kind: Kind) -> "_ScorePass":
        s = self.det.settings
        R, y = np.concatenate(summary.R), np.concatenate(summary.y)
        w = _stack_weight(R, y)
        A = summary.co.copy()
        A.data = (A.data >= s.min_contexts).astype(np.float64)
        A.eliminate_zeros()
        single = np.flatnonzero(self.df >= s.min_contexts)
        C = len(self.names)
        m = len(single) * C + A.nnz * C + C
        threshold = float(np.log(max(m, 1) * s.grid / s.alpha))
        return _ScorePass(self, w, A.tocsr(), single, m, threshold)


@dataclass
class _Scores:
    acc: np.ndarray  # (C, single features, grid) unweighted mixture sums (fixed point, exact)
    U: list  # per class: (K, K) positive evidence per tested pair (fixed point, exact)

    def merge(self, other: "_Scores") -> "_Scores":
        return _Scores(self.acc + other.acc, [a + b for a, b in zip(self.U, other.U)])


@dataclass
class _ScorePass(Pass):
    """The semantic view is calibrated: unweighted evidence of every single feature and tested pair."""

    prev: _LooPass
    w: float  # the calibration weight (temperature)
    A: sparse.csr_matrix  # pairs tested
    single: np.ndarray  # features tested alone (indices into prev.fnames)
    m: int
    threshold: float

    def shard_L(self, shard: Dataset) -> tuple[np.ndarray, np.ndarray]:
        R, y = self.prev.loo(shard)
        return _log_ratio(_calibrated(R, self.w), y, self.prev.det.settings.epsilon)[0], y

    def summarize(self, shard: Dataset) -> _Scores:
        p, s = self.prev, self.prev.det.settings
        L, _ = self.shard_L(shard)
        C, K = len(p.names), len(p.keep)
        _, _, _, _, _, Xc, fnames = _shard_view(shard)
        index = {f: j for j, f in enumerate(p.fnames[i] for i in self.single)}
        local = [(j, index[f]) for j, f in enumerate(fnames) if f in index]
        grid = _pi_grid(s.grid)
        acc = np.zeros((C, len(self.single), len(grid)), np.int64)
        Xt = Xc[:, [j for j, _ in local]].T.tocsr().astype(np.int64)
        at = np.array([g for _, g in local], np.int64)
        Xw = _pair_matrix(Xc, fnames, {w: i for i, w in enumerate(p.keep)}, K, s.max_pair_tokens)
        U = []
        for c in range(C):
            acc[c, at] = Xt @ _mixture_terms(L[:, c], grid)
            U.append(_pair_evidence(Xw, L[:, c], self.A))
        return _Scores(acc, U)

    def finalize(self, summary: _Scores, kind: Kind) -> "_RowsPass":
        p, s = self.prev, self.prev.det.settings
        raw = summary.acc.max(2).T / 2.0**_FIXED  # (single, C), as `_unweighted_llr` gives it in memory
        singles = [(int(f), c) for j, f in enumerate(self.single) for c in range(len(p.names))
                   if raw[j, c] >= s.prefilter * self.threshold]
        pairs = []
        for c, U in enumerate(summary.U):
            U = U.tocoo()
            good = U.data / 2.0**_FIXED >= self.threshold
            order = np.lexsort((U.col[good], U.row[good]))
            pairs += [(c, int(a), int(b)) for a, b in zip(U.row[good][order].tolist(), U.col[good][order].tolist())]
        poolable = np.array([f.startswith(("word:", "punct:")) for f in p.fnames], dtype=bool)
        rare = np.flatnonzero(poolable & (p.df >= 2) & (p.df < s.min_contexts * 4))
        return _RowsPass(self, singles, pairs, rare)


@dataclass
class _Rows:
    n: list  # rows per shard
    R: list  # per shard: leave-one-out predictions of every row ...
    y: list  # ... and labels
    pos: list  # per shard: local positions of the gathered rows ...
    texts: list  # ... and their texts

    def merge(self, other: "_Rows") -> "_Rows":
        return _Rows(self.n + other.n, self.R + other.R, self.y + other.y, self.pos + other.pos,
                     self.texts + other.texts)


@dataclass
class _RowsPass(Pass):
    """The candidates are known: gather their rows (texts) and decide as in memory on them."""

    prev: _ScorePass
    singles: list  # (feature index, class) tested alone
    pairs: list  # (class, pair word a, pair word b) whose evidence reaches the bar
    rare: np.ndarray  # feature indices of the rare (poolable) features

    def summarize(self, shard: Dataset) -> _Rows:
        lp = self.prev.prev
        s = lp.det.settings
        R, y = lp.loo(shard)
        texts, _, _, _, _, Xc, fnames = _shard_view(shard)
        want = {lp.fnames[f] for f, _ in self.singles} | {lp.fnames[f] for f in self.rare.tolist()}
        cols = [j for j, f in enumerate(fnames) if f in want]
        hit = np.asarray(Xc[:, cols].sum(1)).ravel() > 0
        if self.pairs:
            Xw = _pair_matrix(Xc, fnames, {w: i for i, w in enumerate(lp.keep)}, len(lp.keep), s.max_pair_tokens)
            Xw.eliminate_zeros()
            Xw = Xw.tocsc()
            Xw.sum_duplicates()
            for a, b in {(a, b) for _, a, b in self.pairs}:
                hit[_pair_rows(Xw, a, b)] = True
        pos = np.flatnonzero(hit)
        return _Rows([len(y)], [R], [y], [pos], [[texts[i] for i in pos.tolist()]])

    def finalize(self, summary: _Rows, kind: Kind) -> DetectorResult:
        sp = self.prev
        lp = sp.prev
        det, s = lp.det, lp.det.settings
        C, names, threshold = len(lp.names), lp.names, sp.threshold
        R, y = np.concatenate(summary.R), np.concatenate(summary.y)
        n = len(y)
        q = _calibrated(R, sp.w)
        L, qy = _log_ratio(q, y, s.epsilon)
        before = np.cumsum([0] + summary.n[:-1])
        pos = np.concatenate([p + k for p, k in zip(summary.pos, before)]).astype(np.int64)
        texts = [t for part in summary.texts for t in part]
        summary.R = summary.texts = None
        # The gathered rows' own view: features, link n-grams (kept by their dataset-wide row counts), containment.
        toks = [tokens(t) for t in texts]
        ids, lens, vocab = _tokenise(toks)
        X, fnames = _features(texts, toks, ids, lens, vocab)
        Xc = X.tocsc()
        col = {f: j for j, f in enumerate(fnames)}
        wid = {v: i for i, v in enumerate(vocab)}

        def rows_of(name: str) -> np.ndarray:
            j = col[name]
            return Xc.indices[Xc.indptr[j]:Xc.indptr[j + 1]]

        def own(name: str) -> tuple[int, ...]:
            return (wid[name[5:]],) if name.startswith("word:") else ()

        link = _link_gathered(ids, lens, vocab, lp.linkable)
        contain = _containment(texts)
        grid = _pi_grid(s.grid)
        tests = [(c, lp.fnames[f], rows_of(lp.fnames[f]), own(lp.fnames[f])) for f, c in self.singles]
        if self.pairs:
            Xw = _pair_matrix(Xc, fnames, {w: i for i, w in enumerate(lp.keep)}, len(lp.keep), s.max_pair_tokens)
            Xw.eliminate_zeros()
            Xw = Xw.tocsc()
            Xw.sum_duplicates()
            for c, a, b in self.pairs:
                rows = _pair_rows(Xw, a, b)
                if _mixture_llr(L[pos[rows], c], np.ones(len(rows)), grid)[0] >= s.prefilter * threshold:
                    wa, wb = lp.keep[a][5:], lp.keep[b][5:]
                    tests.append((c, f"pair:{wa} + {wb}", rows, (wid[wa], wid[wb])))
        rare_tests = [(rows_of(lp.fnames[f]), own(lp.fnames[f])) for f in self.rare.tolist()]
        groups = _context_groups([(t[2], t[3]) for t in tests] + rare_tests, link, contain, len(texts))
        view = _RowView(lambda: lp.words, toks, pos)
        hits = det._hits([(c, nm, pos[rows]) for c, nm, rows, _ in tests], groups, L, y, q, grid, threshold, view)
        feats = [(int(f), pos[rows], w) for f, (rows, _), (w, g) in zip(self.rare.tolist(), rare_tests,
                                                                         groups[len(tests):])
                 if 2 <= g < s.pool_max_contexts]
        pooled_hits, pooled_null = det._pooled(feats, lp.fnames, L, grid, threshold, C, y, q, view)
        hits += pooled_hits
        alerts, row_scores = det._alerts(hits, names, threshold, qy, n)
        out = {"features_tested": int(sp.m), "threshold_llr": round(threshold, 3), "findings": len(alerts),
               "pooled_null_llr": round(pooled_null, 3)}
        return DetectorResult(tuple(alerts), row_scores, out)


def _link_gathered(ids: np.ndarray, lens: np.ndarray, vocab: list[str], linkable: np.ndarray):
    """`_link_matrix` for a subset of rows: their word 2-3-grams that are in 2..link_df rows of the whole data."""
    from trainguard.detectors.trigger_association import _grams, _unique, _word_hashes

    n = len(lens)
    p, h, k = _grams(_word_hashes(vocab)[ids] if len(vocab) else np.zeros(0, np.uint64), lens, 3)
    at = np.searchsorted(linkable, h)
    ok = at < len(linkable)
    ok[ok] = linkable[at[ok]] == h[ok]
    p, h, k = p[ok], h[ok], k[ok].astype(np.int64)
    keys, inv, _ = _unique(h)
    gw = np.full((len(keys), 3), -1, np.int64)
    for j in range(3):
        sel = k > j
        gw[inv[sel], j] = ids[p[sel] + j]
    M = _binary(np.repeat(np.arange(n), lens)[p], inv, (n, len(keys)))
    return M.tocsr(), gw
