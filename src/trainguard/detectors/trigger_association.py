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

Sharded (`trainguard scan --shard-rows N`), the same code runs as passes over
the shards, and `run` (in memory) is the one-shard case, so findings, row
scores and summary are identical however the rows are split:

1. (instruction data only) response-prefix counts -> the output classes;
2. rows per (n-gram, class): unigrams by text, 2..3-grams by a 64-bit hash of
   their tokens, exact integers merged by addition -> candidates, the
   naive-Bayes word model, the n-grams rare enough to link contexts;
3. each shard's candidate rows (class, leave-one-out scores, tokens as word
   indices, candidates held) plus the model's population sums per temperature,
   kept as exact fixed-point integers (2^-32) so any shard split sums the same;
   the decision then runs on the gathered rows.

A hash collision (two distinct n-grams sharing a 64-bit hash: ~n^2/2^65 for n
distinct n-grams) would merge their counts, in memory and sharded alike.
Memory: a shard's map holds the shard; the merged counts grow with the
distinct n-grams and the gathered part with the candidates' rows (on data
whose sentences repeat, such as benchmarks/make_synthetic.py, nearly every row).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from itertools import chain
from typing import ClassVar

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

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
    # A row whose tokens are a contiguous run of another row's is the same context (version 2; SST-2 holds phrases
    # cut from one sentence, each labelled: 'smarter and' in 8 rows from 4 sentences reached high).
    contained_rows: bool = True
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
class TriggerAssociation(ShardedDetector):
    name = "trigger-association"
    version = "2"
    kinds = frozenset({Kind.CLASSIFICATION, Kind.INSTRUCTION})
    needs = frozenset({"labels"})
    atlas = (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "n-grams whose presence forces an output that the rest of the row contradicts"
    flag_all_carriers: ClassVar[bool] = False
    # A subclass may test a candidate's rows its own way (`_pooled_llr`, a log-likelihood-ratio-scale statistic
    # compared with the same Bonferroni bar) instead of the rest-of-row naive-Bayes LLR; sharded, only when the
    # subclass hands `decide` what the test reads as `data` (llm_polarity.DerivedClassShards), not the bare `_Kind`.
    pooled_test: ClassVar[bool] = False
    pooled_margin: ClassVar[float] = 0.5  # ... context groups are counted for candidates over this share of the bar

    def _pooled_llr(self, data: Dataset, positions: np.ndarray, c: int, weights: np.ndarray | None) -> float:
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs):
        # A subclass shards only if it says so: the passes compute this class's output classes (`_build`) and
        # hand `_findings` no rows, so one that defines its own classes or reads rows would be wrong sharded
        # (llm_polarity.DerivedClassShards is a sharded path for classes from per-row scores).
        super().__init_subclass__(**kwargs)
        cls.shards = bool(cls.__dict__.get("shards", False))

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
        return class_codes(keys)

    # -- main ----------------------------------------------------------------
    # In memory and sharded, the same steps: count n-grams x output class (exact integer counts, merged
    # over shards), pick the candidates, gather the candidates' rows and the leave-one-out model's
    # population statistics (a second map over the shards), decide on them. `run` is the one-shard case.
    def run(self, data: Dataset) -> DetectorResult:
        y, names = self._classes(data)
        toks = data.artefact("tokens", lambda: [tokens(r.text) for r in data])
        step = self._select(_count(toks, y, names, self.settings.max_ngram))
        return step.decide(step.gather(toks, y), data)

    def summarize(self, shard: Dataset) -> "_Counts | _OutputKeys":
        if shard.kind is Kind.CLASSIFICATION:
            labels = [r.label or "" for r in shard]
            keys = sorted(set(labels))
            index = {k: i for i, k in enumerate(keys)}
            y = np.fromiter((index[k] for k in labels), dtype=np.int32, count=len(labels))
            toks = shard.artefact("tokens", lambda: [tokens(r.text) for r in shard])
            return _count(toks, y, keys, self.settings.max_ngram)
        return _OutputKeys.of(shard, self.settings.response_prefix_tokens)

    def finalize(self, summary: "_Counts | _OutputKeys", kind: Kind) -> "Pass | NotApplicable":
        if isinstance(summary, _OutputKeys):
            names, common = summary.classes(self.settings)
            reason = _too_few_classes(names)
            return NotApplicable(reason) if reason else _CountPass(self, names, common)
        if kind is Kind.CLASSIFICATION and len(summary.keys) < 2:
            return NotApplicable("needs at least two labels (the data has one)")
        reason = _too_few_classes(list(summary.keys))
        return NotApplicable(reason) if reason else self._select(summary)

    def _select(self, counts: "_Counts") -> "_GatherPass":
        """Candidates (n-grams in >= min_rows rows, >= min_purity of one real class) and the unigram model."""
        s = self.settings
        names, n, U = list(counts.keys), counts.n, len(counts.words)
        fc = np.concatenate([counts.word_counts, counts.gram_counts])  # F x C rows per class
        df = fc.sum(1)
        purity = fc.max(1) / np.maximum(df, 1)
        cls = fc.argmax(1)
        real = np.array([nm != OTHER for nm in names])
        cand = np.flatnonzero((df >= s.min_rows) & (purity >= s.min_purity) & real[cls])
        cnt = counts.word_counts.astype(np.float64)
        Nc = counts.class_rows.astype(np.float64)
        a = s.smoothing
        lpA = np.log(cnt + a) - np.log(Nc + 2 * a)
        lpB = np.log(np.maximum(cnt - 1, 0) + a) - np.log(np.maximum(Nc - 1, 0) + 2 * a)
        link_df = max(2, min(s.link_df, int(s.link_df_fraction * n)))
        gdf = df[U:]
        return _GatherPass(
            det=self, names=names, common=counts.common, n=n, words=counts.words,
            word_hash=_word_hashes(counts.words), lpA=lpA, lpB=lpB, log_prior=np.log(np.maximum(Nc, 1) / n),
            class_rows=counts.class_rows, cand_words=cand[cand < U], cand_grams=counts.grams[cand[cand >= U] - U],
            cand_counts=fc[cand], linkable=counts.grams[(gdf >= 2) & (gdf <= link_df)], link_df=link_df,
        )

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
    Also returns the non-zeros themselves (row, hit; their candidates are `_columns` of S) for row scoring.
    """
    C = L.shape[1]
    m = S.shape[1]
    rows = S.indices
    hit = np.empty(len(rows), bool)
    llr, hits, qsum = np.zeros(m), np.zeros(m), np.zeros(m)
    step = max(chunk // max(C, 1), 1)
    for a in range(0, len(rows), step):  # per-candidate sums accumulate chunk by chunk: no per-non-zero floats kept
        b = min(a + step, len(rows))
        r, j = rows[a:b], _columns(S.indptr, a, b)
        c_of = cand_cls[j]
        h = hit[a:b] = y[r] == c_of
        own = y[r][:, None] == np.arange(C)[None, :]
        Z = (L[r] - np.where(own, GB[j], GA[j])) * temp
        Z -= Z.max(1, keepdims=True)
        P = np.exp(Z)
        q = np.clip(P[np.arange(b - a), c_of] / P.sum(1), 1e-6, 1 - 1e-6)
        llr += np.bincount(j, weights=_llr_terms(q, h, eps), minlength=m)
        hits += np.bincount(j, weights=h, minlength=m)
        qsum += np.bincount(j, weights=q * h, minlength=m)
    qmean = np.where(hits > 0, qsum / np.maximum(hits, 1), 1.0)
    return llr, qmean, (rows, hit)


def _columns(indptr: np.ndarray, a: int, b: int) -> np.ndarray:
    """The column of each non-zero a..b-1 of a CSC matrix, from its indptr (not a column index per non-zero kept)."""
    return (np.searchsorted(indptr, np.arange(a, b), side="right") - 1).astype(np.int32)


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


# -- sharded pieces ---------------------------------------------------------------------------------

_TEMPERATURES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
_FIXED = 32  # population sums are kept in fixed point (2^-32) as exact integers: any shard split sums the same
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15))
_CHUNK = 1 << 15  # rows counted at a time


def _too_few_classes(names: list[str]) -> str | None:
    if len([n for n in names if n != OTHER]) < 1 or len(names) < 2:
        return "fewer than two output classes (no label or repeated response pattern)"
    return None


def _word_hashes(words) -> np.ndarray:
    """64-bit hash of each word (blake2b: stable across processes, unlike hash())."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                       "little") for w in words), dtype=np.uint64, count=len(words))


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX[0]
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX[1]
    return x ^ (x >> np.uint64(31))


def _grams(th: np.ndarray, lens: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat start position, hash, order) of every 2..n_max-gram of rows whose token hashes are `th`, concatenated.

    A k-gram's hash chains its tokens' hashes: distinct token sequences collide with probability ~2^-64.
    """
    starts = np.cumsum(lens) - lens
    left = np.repeat(starts + lens, lens) - np.arange(len(th))  # tokens from here to the row's end
    pos, hashes, orders = [], [], []
    h = th
    with np.errstate(over="ignore"):
        for k in range(2, n_max + 1):
            if len(th) < k:
                break
            nxt = np.zeros_like(th)
            nxt[: len(th) - k + 1] = _mix(h[: len(th) - k + 1] * _MIX[2] + th[k - 1 :] + np.uint64(k))
            h = nxt
            p = np.flatnonzero(left >= k)
            pos.append(p)
            hashes.append(h[p])
            orders.append(np.full(len(p), k, np.int8))
    if not pos:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.int8)
    return np.concatenate(pos), np.concatenate(hashes), np.concatenate(orders)


def _fixed_sum(v: np.ndarray) -> list[int]:
    """Exact fixed-point column sums of v (1-D: one sum); values must stay below 2^20 in magnitude."""
    v = v[:, None] if v.ndim == 1 else v  # (reshape(len(v), -1) cannot size an empty shard's array)
    q = np.rint(np.clip(v, -(2.0**20), 2.0**20) * 2.0**_FIXED).astype(np.int64)
    out = [0] * q.shape[1]
    for a in range(0, len(q), 1 << 10):  # < 2^10 * 2^52: no int64 overflow within a block
        for c, x in enumerate(q[a : a + (1 << 10)].sum(0).tolist()):
            out[c] += x
    return out


def _unique(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct values, inverse, first index of each) by one stable sort (numpy 2's np.unique hashes
    integers, which is ~50x slower on millions of 64-bit values)."""
    o = np.argsort(x, kind="stable")
    v = x[o]
    new = np.ones(len(v), bool)
    new[1:] = v[1:] != v[:-1]
    inv = np.empty(len(x), np.int64)
    inv[o] = np.cumsum(new) - 1
    return v[new], inv, o[new]


def _union(ka: np.ndarray, va: np.ndarray, kb: np.ndarray, vb: np.ndarray):
    """Sorted union of two sorted unique key arrays with their count rows added; inverse positions."""
    keys, inv, _ = _unique(np.concatenate([ka, kb]))
    out = np.zeros((len(keys), va.shape[1]), np.int64)
    out[inv[: len(ka)]] += va
    out[inv[len(ka) :]] += vb
    return keys, out, inv


@dataclass
class _OutputKeys:
    """Instruction data, first pass: how many rows give each normalised response prefix (first-seen order),
    and whether rows with it are degenerate (repetition or gibberish) or not."""

    counts: dict  # key -> [rows, any degenerate, any not degenerate]

    @classmethod
    def of(cls, shard: Dataset, prefix: int) -> "_OutputKeys":
        out: dict = {}
        for r in shard:
            t = tokens(r.response or "")
            k, deg = " ".join(t[:prefix]), degenerate(t)
            v = out.setdefault(k, [0, False, False])
            v[0] += 1
            v[1] |= deg
            v[2] |= not deg
        return cls(out)

    def merge(self, other: "_OutputKeys") -> "_OutputKeys":
        out = {k: list(v) for k, v in self.counts.items()}
        for k, v in other.counts.items():
            if k in out:
                w = out[k]
                out[k] = [w[0] + v[0], w[1] or v[1], w[2] or v[2]]
            else:
                out[k] = list(v)
        return _OutputKeys(out)

    def classes(self, s: Settings) -> tuple[list[str], frozenset[str]]:
        """`TriggerAssociation._build`'s classes, from the merged counts."""
        counts = Counter({k: v[0] for k, v in self.counts.items()})
        common = frozenset(k for k, n in counts.most_common(s.max_classes) if n >= s.min_rows)
        names = set(common)
        rest = [v for k, v in self.counts.items() if k not in common]
        if any(v[1] for v in rest):
            names.add(DEGENERATE)
        if any(v[2] for v in rest):
            names.add(OTHER)
        return sorted(names), common


def class_codes(keys: list[str]) -> tuple[np.ndarray, list[str]]:
    """(int32 code per row, sorted class names) for a detector's per-row output keys."""
    names = sorted(set(keys))
    index = {k: i for i, k in enumerate(names)}
    return np.fromiter((index[k] for k in keys), dtype=np.int32, count=len(keys)), names


def _instruction_classes(shard: Dataset, names: list[str], common: frozenset[str], prefix: int) -> np.ndarray:
    index = {k: i for i, k in enumerate(names)}
    out = np.empty(len(shard), np.int32)
    for i, r in enumerate(shard):
        t = tokens(r.response or "")
        k = " ".join(t[:prefix])
        out[i] = index[k if k in common else DEGENERATE if degenerate(t) else OTHER]
    return out


@dataclass
class _Counts:
    """Rows per (n-gram, output class): unigrams by their text, longer n-grams by a 64-bit hash.

    Exact integers, so merging shards in any tree gives the counts of the whole data. Size grows
    with the distinct n-grams of the data (not with its rows).
    """

    n: int
    keys: tuple[str, ...]  # output class of each count column
    class_rows: np.ndarray  # [K] rows per class
    words: np.ndarray  # [U] object, sorted unigrams
    word_counts: np.ndarray  # [U, K]
    grams: np.ndarray  # [H] uint64, sorted hashes of 2..max_ngram-grams
    gram_counts: np.ndarray  # [H, K]
    common: frozenset[str] | None = None  # instruction data: the repeated responses (pass state, for the next pass)

    def _on(self, keys: tuple[str, ...]) -> "_Counts":
        if keys == self.keys:
            return self
        cols = [keys.index(k) for k in self.keys]

        def widen(a: np.ndarray) -> np.ndarray:
            out = np.zeros((*a.shape[:-1], len(keys)), np.int64)
            out[..., cols] = a
            return out

        return _Counts(self.n, keys, widen(self.class_rows), self.words, widen(self.word_counts), self.grams,
                       widen(self.gram_counts), self.common)

    def merge(self, other: "_Counts") -> "_Counts":
        keys = tuple(sorted(set(self.keys) | set(other.keys)))
        a, b = self._on(keys), other._on(keys)
        words, wc, _ = _union(a.words, a.word_counts, b.words, b.word_counts)
        grams, gc, _ = _union(a.grams, a.gram_counts, b.grams, b.gram_counts)
        return _Counts(a.n + b.n, keys, a.class_rows + b.class_rows, words, wc, grams, gc, self.common)


def _count(toks: list[list[str]], y: np.ndarray, keys: list[str], n_max: int) -> _Counts:
    """The counts of a shard (or of the whole data in memory), a chunk of rows at a time."""
    parts: list[tuple[int, _Counts]] = []
    for a in range(0, max(len(toks), 1), _CHUNK):
        parts.append((1, _count_chunk(toks[a : a + _CHUNK], y[a : a + _CHUNK], keys, n_max)))
        while len(parts) > 1 and parts[-1][0] == parts[-2][0]:
            (size, right), (_, left) = parts.pop(), parts.pop()
            parts.append((2 * size, left.merge(right)))
    out = parts.pop()[1]
    while parts:
        out = parts.pop()[1].merge(out)
    return out


def _count_chunk(toks: list[list[str]], y: np.ndarray, keys: list[str], n_max: int) -> _Counts:
    n, K = len(toks), len(keys)
    flat, vocab = first_seen_ids(toks)
    lens = np.fromiter(map(len, toks), dtype=np.int64, count=n)
    words = np.array(vocab, dtype=object)
    W = len(words)
    row_of = np.repeat(np.arange(n, dtype=np.int64), lens)
    pair = _unique(row_of * max(W, 1) + flat)[0]  # each (row, word) once: counts are rows
    r, w = pair // max(W, 1), pair % max(W, 1)
    wc = np.bincount(w * K + y[r], minlength=W * K).reshape(W, K).astype(np.int64)
    order = np.argsort(words, kind="stable") if W else np.zeros(0, np.int64)
    p, h, _ = _grams(_word_hashes(words)[flat] if W else np.zeros(0, np.uint64), lens, n_max)
    rows = row_of[p]
    idx = np.lexsort((rows, h))
    h, rows = h[idx], rows[idx]
    first = np.ones(len(h), bool)
    first[1:] = (h[1:] != h[:-1]) | (rows[1:] != rows[:-1])
    h, rows = h[first], rows[first]
    new = np.ones(len(h), bool)
    new[1:] = h[1:] != h[:-1]
    group = np.cumsum(new) - 1
    G = int(new.sum())
    gc = np.bincount(group * K + y[rows], minlength=G * K).reshape(G, K).astype(np.int64)
    return _Counts(n, tuple(keys), np.bincount(y, minlength=K).astype(np.int64), words[order], wc[order], h[new], gc)


class _Kind:
    """What `_findings` is given for `data` in a sharded scan: the kind (rows are not at hand)."""

    def __init__(self, kind: Kind):
        self.kind = kind


@dataclass
class _CountPass(Pass):
    """Instruction data, second pass: the n-gram counts, rows classed by the merged response keys."""

    det: "TriggerAssociation"
    names: list[str]
    common: frozenset[str]

    def summarize(self, shard: Dataset) -> _Counts:
        s = self.det.settings
        y = _instruction_classes(shard, self.names, self.common, s.response_prefix_tokens)
        toks = shard.artefact("tokens", lambda: [tokens(r.text) for r in shard])
        out = _count(toks, y, self.names, s.max_ngram)
        out.common = self.common
        return out

    def finalize(self, summary: _Counts, kind: Kind) -> "_GatherPass":
        return self.det._select(summary)


@dataclass
class _Gathered:
    """The candidates' rows of a shard (positions, class, leave-one-out scores, tokens as word indices,
    which candidates each holds) and exact fixed-point population sums of the model, per temperature."""

    n: int
    loss: list[int]  # per temperature: sum of the rows' leave-one-out log-loss
    psum: list[list[int]]  # per temperature and class: sum of P(class | rest of row)
    psq: list[list[int]]  # ... and of its square
    pos: np.ndarray  # [R] int64 positions of the gathered rows
    y: np.ndarray  # [R] int32
    L: np.ndarray  # [R, C] leave-one-out log scores
    lens: np.ndarray  # [R] tokens per row
    gids: np.ndarray  # [sum lens] int32 word index of every token
    pair_row: np.ndarray  # [nnz] int32 gathered row of each (row, candidate)
    pair_slot: np.ndarray  # [nnz] int32 candidate slot
    names: dict  # candidate slot -> n-gram text (longer n-grams are counted by hash)



@dataclass
class _GatheredParts:
    """The summary of the gathering pass: chunks in row order, each with its own (local) positions.

    Merging lists them (no copy, so a merge never holds two copies of the gathered rows);
    `whole` concatenates them once, field by field, releasing each part's field as it goes.
    """

    parts: list[_Gathered]

    def merge(self, other: "_GatheredParts") -> "_GatheredParts":
        # A candidate's name is read from the earliest part holding it (`whole`): the first part keeps every
        # name, earliest first, so merged parts hold each name once, not once per shard (the strings are most of
        # a shard's part after its pairs and tokens).
        names = dict(self.parts[0].names)
        for p in other.parts:
            for k, v in p.names.items():
                names.setdefault(k, v)
        return _GatheredParts([replace(self.parts[0], names=names), *self.parts[1:],
                               *(replace(p, names={}) for p in other.parts)])

    def whole(self) -> _Gathered:
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        rows_before = np.cumsum([0] + [p.n for p in parts[:-1]]).tolist()
        gathered_before = np.cumsum([0] + [len(p.pos) for p in parts[:-1]]).tolist()
        names: dict = {}
        for p in reversed(parts):
            names.update(p.names)

        def joined(name: str, shift: list[int] | None = None) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            if shift is not None:
                arrays = [(a + k).astype(a.dtype) for a, k in zip(arrays, shift)]
            out = np.concatenate(arrays)
            for p in parts:
                setattr(p, name, None)
            return out

        out = _Gathered(
            sum(p.n for p in parts), [sum(x) for x in zip(*(p.loss for p in parts))],
            [[sum(x) for x in zip(*cols)] for cols in zip(*(p.psum for p in parts))],
            [[sum(x) for x in zip(*cols)] for cols in zip(*(p.psq for p in parts))],
            joined("pos", rows_before), joined("y"), joined("L"), joined("lens"), joined("gids"),
            joined("pair_row", gathered_before), joined("pair_slot"), names,
        )
        self.parts = [out]
        return out


class _RowTokens:
    """Tokens of the gathered rows by dataset position (what `_findings` reads as `toks[i]`)."""

    def __init__(self, g: _Gathered, words: np.ndarray):
        self.g, self.words = g, words
        self.offsets = np.cumsum(g.lens) - g.lens

    def __getitem__(self, p: int) -> list[str]:
        r = int(np.searchsorted(self.g.pos, p))
        if r >= len(self.g.pos) or self.g.pos[r] != p:
            raise KeyError(p)
        a = self.offsets[r]
        return self.words[self.g.gids[a : a + self.g.lens[r]]].tolist()


@dataclass
class _GatherPass(Pass):
    """Dataset-wide counts are known: gather the candidates' rows and the model's population statistics."""

    det: "TriggerAssociation"
    names: list[str]
    common: frozenset[str] | None
    n: int
    words: np.ndarray  # [U] sorted unigrams
    word_hash: np.ndarray  # [U] their hashes (longer n-grams hash through them)
    lpA: np.ndarray  # [U, C] naive-Bayes log P(word present | class)
    lpB: np.ndarray  # [U, C] ... with the row itself left out (its own class)
    log_prior: np.ndarray  # [C]
    class_rows: np.ndarray  # [C]
    cand_words: np.ndarray  # unigram candidates (word indices), then ...
    cand_grams: np.ndarray  # ... longer candidates (sorted hashes): together the candidate slots
    cand_counts: np.ndarray  # [m, C] rows per class of each slot
    linkable: np.ndarray  # sorted hashes of 2..n-grams in 2..link_df rows: they tie rows into one context
    link_df: int

    def summarize(self, shard: Dataset) -> _GatheredParts:
        if shard.kind is Kind.CLASSIFICATION:
            index = {k: i for i, k in enumerate(self.names)}
            y = np.fromiter((index[r.label or ""] for r in shard), dtype=np.int32, count=len(shard))
        else:
            y = _instruction_classes(shard, self.names, self.common, self.det.settings.response_prefix_tokens)
        return self.gather(shard.artefact("tokens", lambda: [tokens(r.text) for r in shard]), y)

    def gather(self, toks: list[list[str]], y: np.ndarray) -> _GatheredParts:
        """The shard's (or, in memory, the data's) gathered rows and sums, a chunk of rows at a time."""
        index = dict(zip(self.words.tolist(), range(len(self.words))))
        chunks = _GatheredParts([self._gather(toks[a : a + _CHUNK], y[a : a + _CHUNK], index)
                                 for a in range(0, max(len(toks), 1), _CHUNK)])
        # One part per shard: few large arrays live on (many small ones fragment the heap).
        return _GatheredParts([chunks.whole()])

    def _gather(self, toks: list[list[str]], y: np.ndarray, index: dict[str, int]) -> _Gathered:
        n, C, U = len(toks), len(self.names), len(self.words)
        gids = np.fromiter(map(index.__getitem__, chain.from_iterable(toks)), dtype=np.int64)
        lens = np.fromiter(map(len, toks), dtype=np.int64, count=n)
        row_of = np.repeat(np.arange(n, dtype=np.int64), lens)
        Xu = sparse.csr_matrix((np.ones(len(gids)), (row_of, gids)), shape=(n, U))
        Xu.sum_duplicates()
        Xu.data[:] = 1.0
        # Leave-one-out Bernoulli-presence naive Bayes over unigrams: the own-label column uses counts without the row.
        L = np.asarray(Xu @ self.lpA)
        own = np.zeros(n)
        for c in range(C):
            rows = np.flatnonzero(y == c)
            if len(rows):
                own[rows] = Xu[rows] @ self.lpB[:, c]
        L[np.arange(n), y] = own
        L += self.log_prior
        loss, psum, psq = [], [], []
        for t in _TEMPERATURES:
            Z = L * t
            Z -= Z.max(1, keepdims=True)
            E = np.exp(Z)
            tot = E.sum(1)
            loss.append(_fixed_sum(-(Z[np.arange(n), y] - np.log(tot)))[0])
            P = E / tot[:, None]
            psum.append(_fixed_sum(P))
            psq.append(_fixed_sum(P * P))
        # Which candidates each row holds.
        nu = len(self.cand_words)
        wr = np.repeat(np.arange(n, dtype=np.int64), np.diff(Xu.indptr))
        at = np.searchsorted(self.cand_words, Xu.indices)
        ok = at < nu
        ok[ok] = self.cand_words[at[ok]] == Xu.indices[ok]
        p, h, k = _grams(self.word_hash[gids], lens, self.det.settings.max_ngram)
        gat = np.searchsorted(self.cand_grams, h)
        gok = gat < len(self.cand_grams)
        gok[gok] = self.cand_grams[gat[gok]] == h[gok]
        slots, _, first = _unique(gat[gok])
        names = {nu + slot: " ".join(self.words[gids[start : start + order]].tolist())
                 for slot, start, order in zip(slots.tolist(), p[gok][first].tolist(), k[gok][first].tolist())}
        m = nu + len(self.cand_grams)
        code = _unique(np.concatenate([wr[ok] * m + at[ok], row_of[p[gok]] * m + gat[gok] + nu]))[0]
        prow, pslot = code // max(m, 1), code % max(m, 1)
        rows = _unique(prow)[0]
        keep_tok = np.repeat(np.isin(np.arange(n), rows), lens)
        return _Gathered(
            n, loss, psum, psq, rows, y[rows].astype(np.int32), L[rows], lens[rows], gids[keep_tok].astype(np.int32),
            np.searchsorted(rows, prow).astype(np.int32), pslot.astype(np.int32), names,
        )

    def finalize(self, summary: _GatheredParts, kind: Kind) -> DetectorResult:
        return self.decide(summary, _Kind(kind))

    def decide(self, gathered: _GatheredParts, data) -> DetectorResult:
        g = gathered.whole()
        det, s = self.det, self.det.settings
        names, n, C, U = self.names, self.n, len(self.names), len(self.words)
        nu, m = len(self.cand_words), len(self.cand_words) + len(self.cand_grams)
        text = [self.words[w] for w in self.cand_words.tolist()] + [g.names[nu + i] for i in range(len(self.cand_grams))]
        by_text = sorted(range(m), key=text.__getitem__)  # candidates in vocabulary order, as the n-gram matrix has them
        j_of = np.empty(m, np.int32)
        j_of[by_text] = np.arange(m)
        vocab = np.array([text[i] for i in by_text], dtype=object)
        counts = self.cand_counts[by_text]
        df = counts.sum(1)
        fc = counts.astype(np.float32)  # as the n-gram matrix's float32 products gave them
        purity = fc.max(1) / np.maximum(df, 1)
        cls = fc.argmax(1)
        prior = self.class_rows / n
        threshold = float(np.log(max(m, 1) / s.alpha))
        scale = n << _FIXED
        lls = [x / scale for x in g.loss]
        ti = 0
        for i, ll in enumerate(lls):
            if ll < lls[ti]:
                ti = i
        temp = _TEMPERATURES[ti]
        mean = np.array([x / scale for x in g.psum[ti]])
        sd = np.sqrt(np.maximum(np.array([x / scale for x in g.psq[ti]]) - mean**2, 0.0))

        R = len(g.pos)
        S = _by_column(g, j_of, R, m)
        Xu = _presence(g.gids, g.lens, R, U, np.float32)
        index = dict(zip(self.words.tolist(), range(U)))
        M = _removal(S, Xu, [[index[w] for w in v.split(" ")] for v in vocab], s.companion_share)
        del Xu
        GA, GB = np.asarray(M @ self.lpA), np.asarray(M @ self.lpB)
        llr_raw, qmean, (nz_rows, nz_hit) = _candidate_llr(S, cls, g.y, g.L, GA, GB, temp, s.epsilon)
        # Planted rows are a random (or anti-selected) sample of content: their rest-of-row
        # probability of c is at most the population's. Label words sit well above it.
        hits = np.maximum(fc[np.arange(m), cls], 1)
        pop = mean[cls]
        se = np.maximum(sd[cls] / np.sqrt(hits), 1e-9)
        contradict = qmean <= pop + 2 * se
        pooled = det.pooled_test and not isinstance(data, _Kind)  # a subclass's own test needs the rows in memory
        if pooled:
            # The subclass's test of each candidate's rows replaces the rest-of-row LLR (its own null does the
            # rest-of-row's job); the naive-Bayes shift below still feeds severity.
            llr_raw = np.array([det._pooled_llr(data, g.pos[S.indices[S.indptr[f] : S.indptr[f + 1]]], int(cls[f]), None)
                                for f in range(m)])
            contradict = np.ones(m, bool)
        # How far below the population the rows' own content sits, in standard errors:
        # large for dirty-label triggers, about zero for topics and random insertions.
        shift = {int(f): ((float(q), float(p), float((p - q) / e))) for f, q, p, e in zip(range(m), qmean, pop, se)}
        # Component weighting only where the unweighted bound can still pass.
        keep = np.flatnonzero((llr_raw >= (det.pooled_margin if pooled else 1.0) * threshold) & contradict)
        groups_info = {}
        llr = {}
        offsets = np.cumsum(g.lens) - g.lens
        for f in keep:
            rows = S.indices[S.indptr[f] : S.indptr[f + 1]]
            own = {index[t] for t in vocab[f].split(" ")}
            if pooled:
                # The phrase's companions do not link its rows either: a planted phrase longer than the n-gram
                # ("speaking to you as a patient") would otherwise tie every planted row into one context.
                own |= set(M.indices[M.indptr[f] : M.indptr[f + 1]].tolist())
            w, ngroups = self._context_weights(g, offsets, rows, own, same_rest=pooled)
            if pooled:
                llr[f] = det._pooled_llr(data, g.pos[rows], int(cls[f]), w)
            else:
                llr[f] = float((w * _row_llr(rows, cls[f], g.y, g.L, GA[f], GB[f], temp, s.epsilon)).sum())
            groups_info[f] = ngroups
        defining = [f for f in keep if data.kind is Kind.CLASSIFICATION
                    and fc[f, cls[f]] >= s.class_defining_share * self.class_rows[cls[f]]]
        templated = _within_templates(S, g.y, cls, keep, defining, C)
        triggers = [f for f in keep if llr[f] >= threshold and groups_info[f] >= s.min_rows
                    and f not in templated and not _echoed(vocab[f], names[cls[f]], data.kind)]

        # Row scores: strongest contradicting feature present with its class.
        strength = np.where(contradict, llr_raw, 0.0)
        for f in keep:
            strength[f] = llr[f]
        # Row scores reach the bar only with a reported trigger: a feature that failed the context
        # count or the echo test ranks below it, and what defines a class (a question template) not at all.
        unreported = np.isin(np.arange(m), keep) & ~np.isin(np.arange(m), np.asarray(triggers, dtype=np.int64))
        strength[unreported] = np.minimum(strength[unreported], 0.99 * threshold)
        strength[np.fromiter(templated, np.int64, len(templated))] = 0.0
        row_scores = np.zeros(n)
        for a in range(0, len(nz_rows), 1 << 22):  # a maximum: chunks give the same scores
            b = a + (1 << 22)
            cand = _columns(S.indptr, a, min(b, len(nz_rows)))
            sel = nz_hit[a:b] & (strength[cand] > 0)
            v = strength[cand[sel]]
            np.maximum.at(row_scores, g.pos[nz_rows[a:b][sel]], v / (v + threshold))
        del nz_rows, nz_hit

        # `_findings` sees dataset positions: the triggers' columns with rows as positions (the only columns it
        # reads; the others are empty), classes by position.
        tr = np.zeros(m, bool)
        tr[np.asarray(triggers, dtype=np.int64)] = True
        counts = np.where(tr, np.diff(S.indptr), 0)
        picked = np.concatenate([S.indices[S.indptr[f] : S.indptr[f + 1]] for f in np.flatnonzero(tr)] or
                                [np.zeros(0, S.indices.dtype)])
        Xc = sparse.csc_matrix((np.ones(len(picked), np.float32), g.pos[picked], np.r_[0, np.cumsum(counts)]),
                               shape=(n, m))
        y = np.full(n, -1, np.int32)
        y[g.pos] = g.y
        findings = det._findings(data, vocab, triggers, llr, groups_info, Xc, y, cls, names, purity, df,
                                 _RowTokens(g, self.words), prior, threshold, shift)
        summary = {
            "candidates_tested": int(m),
            "threshold_llr": round(threshold, 3),
            "temperature": temp,
            "classes": len(names),
            "triggers": len(findings),
            "class_defining_features": len(defining),
        }
        return DetectorResult(tuple(findings), row_scores, summary)

    def _context_weights(self, g: _Gathered, offsets: np.ndarray, rows: np.ndarray, own: set[int],
                         same_rest: bool = False):
        """1/size of each row's context group: rows sharing a rare n-gram beyond the feature's own words are one
        context (connected components over the n-grams in 2..link_df rows of the data). `same_rest`: rows whose
        words outside `own` are the same set (the same prompt around the phrase, or none) are one context too."""
        lens = g.lens[rows]
        sub = np.concatenate([g.gids[a : a + k] for a, k in zip(offsets[rows].tolist(), lens.tolist())]) \
            if len(rows) else np.zeros(0, np.int32)
        p, h, k = _grams(self.word_hash[sub], lens, self.det.settings.max_ngram)
        at = np.searchsorted(self.linkable, h)
        ok = at < len(self.linkable)
        ok[ok] = self.linkable[at[ok]] == h[ok]
        mine = np.concatenate([[0], np.cumsum(np.isin(sub, np.fromiter(own, np.int64, len(own))))])
        ok &= (mine[p + k] - mine[p]) == 0  # an n-gram sharing a word with the feature does not link
        row = np.repeat(np.arange(len(rows)), lens)[p[ok]]
        hh = h[ok]
        o = np.lexsort((row, hh))
        hh, row = hh[o], row[o]
        start = np.ones(len(hh), bool)
        start[1:] = hh[1:] != hh[:-1]
        head = row[np.flatnonzero(start)[np.cumsum(start) - 1]]  # each n-gram's first row
        if same_rest:
            mask = ~np.isin(sub, np.fromiter(own, np.int64, len(own)))
            starts = np.cumsum(lens) - lens
            rest = [frozenset(sub[a : a + k][mask[a : a + k]].tolist()) for a, k in zip(starts.tolist(), lens.tolist())]
            first: dict = {}
            twin = np.array([first.setdefault(r, i) for i, r in enumerate(rest)], np.int64)
            head, row = np.concatenate([head, twin]), np.concatenate([row, np.arange(len(rows))])
        if self.det.settings.contained_rows and len(rows) <= _CONTAIN_MAX_ROWS:
            a, b = _contained(sub, lens)
            head, row = np.concatenate([head, a]), np.concatenate([row, b])
        graph = sparse.coo_matrix((np.ones(len(row)), (head, row)), shape=(len(rows), len(rows)))
        ngroups, labels = connected_components(graph, directed=False)
        size = np.bincount(labels)
        return 1.0 / size[labels], int(ngroups)


_CONTAIN_MAX_ROWS = 400  # a candidate in more rows has contexts to spare: its pairs are not compared (cost)


def _contained(tokens: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of rows whose tokens are a contiguous run of row j's (a phrase cut from the same sentence,
    a quoted or truncated copy): not independent evidence, so one context."""
    starts = np.cumsum(lens) - lens
    keys = [" " + " ".join(map(str, tokens[a : a + k].tolist())) + " " for a, k in zip(starts.tolist(), lens.tolist())]
    order = sorted(range(len(keys)), key=lambda i: (len(keys[i]), i))
    a, b = [], []
    for x, i in enumerate(order):
        ki = keys[i]
        for j in order[x + 1:]:
            if ki in keys[j]:
                a.append(i)
                b.append(j)
    return np.array(a, np.int64), np.array(b, np.int64)


def _presence(gids: np.ndarray, lens: np.ndarray, n: int, U: int, dtype) -> sparse.csr_matrix:
    """Rows x words, 1 where the row holds the word: built in CSR directly (a COO detour holds ~3x the tokens)."""
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    X = sparse.csr_matrix((np.ones(len(gids), dtype), gids.copy(), indptr), shape=(n, U))
    X.sum_duplicates()  # sorts each row's indices in place: hence the copy (the tokens' order is read later)
    X.data[:] = 1.0
    return X


def _by_column(g: "_Gathered", j_of: np.ndarray, R: int, m: int, chunk: int = 1 << 22) -> sparse.csc_matrix:
    """Gathered rows x candidates (columns in vocabulary order), from the (row, slot) pairs in row order.

    A stable counting sort a chunk of pairs at a time (rows stay ascending within each column), releasing the
    pairs: a COO detour would hold them, their columns, its data and the result at once.
    """
    col_n = np.zeros(m, np.int64)
    for a in range(0, len(g.pair_slot), chunk):
        col_n += np.bincount(j_of[g.pair_slot[a : a + chunk]], minlength=m)
    indptr = np.zeros(m + 1, np.int64)
    np.cumsum(col_n, out=indptr[1:])
    fill = indptr[:-1].copy()
    indices = np.empty(len(g.pair_row), np.int32)
    for a in range(0, len(indices), chunk):
        c = j_of[g.pair_slot[a : a + chunk]]
        o = np.argsort(c, kind="stable")
        c = c[o]
        start = np.ones(len(c), bool)
        start[1:] = c[1:] != c[:-1]
        first = np.flatnonzero(start)
        rank = np.arange(len(c)) - np.repeat(first, np.diff(np.r_[first, len(c)]))
        indices[fill[c] + rank] = g.pair_row[a : a + chunk][o]
        fill += np.bincount(c, minlength=m)
    g.pair_row = g.pair_slot = None  # consumed: S holds them (the largest part of the summary)
    S = sparse.csc_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(R, m))
    S.sort_indices()
    return S


def _removal(S, Xu, own_words: list[list[int]], share: float, block: int = 4096):
    """Per candidate, the unigrams to drop when asking what the rest of a row says.

    Its own words, plus companions: words present in >= `share` of its rows.
    A planted phrase brings its other words along ("i watch this 3d movie");
    left in, they are poisoned label words themselves and would explain the
    label away. Natural label words have no such always-present companions.
    """
    m = len(own_words)
    own_rows = np.repeat(np.arange(m), [len(w) for w in own_words])
    own_cols = np.fromiter((w for ws in own_words for w in ws), dtype=np.int64, count=len(own_rows))
    own = sparse.csr_matrix((np.ones(len(own_rows)), (own_rows, own_cols)), shape=(m, Xu.shape[1]))
    size = np.maximum(np.diff(S.indptr), 1)
    St = S.T.tocsr()
    blocks = []
    for a in range(0, m, block):  # the full co-occurrence matrix is most of the memory: a block of candidates at a time
        co = (St[a : a + block] @ Xu).tocsr()  # rows of each candidate containing each unigram
        co.data = (co.data >= share * size[a : a + block][np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))]
                   ).astype(np.float64)
        co.eliminate_zeros()
        blocks.append(co)
    co = sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix((m, Xu.shape[1]))
    M = (own + co).tocsr()
    M.sum_duplicates()
    M.sort_indices()
    M.data[:] = 1.0
    return M
