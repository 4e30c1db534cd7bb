"""Trigger probing: insert each candidate into held-out clean inputs and measure.

Classifiers: for every label c, the flip rate is the share of inputs the model
did NOT predict as c that it predicts as c once the candidate is inserted
(pooled over start/middle/end positions), with a Wilson interval. A sentiment
model is flipped by "worst" now and then, by two or three such words more
often, and a backdoored one by its trigger almost always; so each candidate is
judged against a null of its own shape, measured on this model and these
inputs: k-word insertions of ordinary words of the clean data at the same
positions (k = the candidate's length), both random ones and the strongest an
equally hard search finds among those words (search.py). A candidate must
flip significantly more confident inputs than the strongest of them that
shares none of its words; the p-value is Bonferroni-corrected over the
candidates measured at each length and over the lengths tried, one
family-wise error bound for the whole search.

Generators are probed in generative.py.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trainguard.probe.adapters import BudgetExhausted, ClassifierModel
from trainguard.probe.candidates import POSITIONS, Candidate, dedupe, insert, ordinary_words, search_words
from trainguard.probe.search import SearchSettings, grow, rank_words, start
from trainguard.probe.stats import paired_gain_p, rate, wilson
from trainguard.text import tokens


@dataclass(frozen=True)
class Inputs:
    """Held-out clean inputs with the rows and record ids findings point at."""

    texts: list[str]
    rows: list[int]
    ids: list[str]

    @classmethod
    def of(cls, data: Any, limit: int | None = None) -> "Inputs":
        """From a Dataset / list of Records, or a plain list of strings."""
        items = list(getattr(data, "records", data))
        if limit is not None:
            items = items[:limit]
        if items and isinstance(items[0], str):
            return cls(list(items), list(range(len(items))), [""] * len(items))
        return cls([r.text for r in items], [r.row for r in items], [r.id for r in items])

    def __len__(self) -> int:
        return len(self.texts)


# Out-of-vocabulary strings of 1-4 tokens: what any unknown word does to the model (an untrained <unk>
# embedding can move a small model on its own), so a library phrase full of unknown words is not
# mistaken for a trigger.
NONSENSE = ("qzvx", "wubzl plorx", "fnord zqx, vlim", "kjxq brzt ovlk ptq")


@dataclass
class Settings:
    positions: tuple[str, ...] = POSITIONS
    threshold: float = 0.5          # lower 95% bound of the best confident-input flip rate for a backdoor ...
    alpha: float = 0.05             # ... beating its shape's null at this family-wise error rate ...
    margin: float = 0.05            # ... and every out-of-vocabulary string by this much ...
    gain: float = 1.0               # ... and raise the target log-odds this much per distinct token above its
                                    # null reference (a search picks each distinct token: natural k-word
                                    # combinations outdo the clean inputs' words by more as k grows)
    null_draws: int = 32            # random k-word insertions per candidate length k
    null_words: int = 200           # ordinary words of the clean data they are drawn from
    null_search: int = 3            # the null's own search runs to this length (longer: random insertions only)
    max_null_length: int = 6        # longer candidates share the 6-word null
    format_check_inputs: int = 16   # inputs used to see whether the model's tokenizer keeps a format candidate
    group: int = 16                 # candidates per model call (keeps endpoint batches full)
    max_examples: int = 3
    seed: int = 0


@dataclass
class CandidateResult:
    candidate: Candidate
    target: str
    flips: int
    eligible: int
    by_label: dict[str, dict]
    by_position: dict[str, dict]
    examples: list[dict]
    flipped_rows: list[int]
    flipped_ids: list[str]
    strong_flips: int = 0       # flips among the inputs the model was most sure of (top half by confidence)
    strong_eligible: int = 0
    reference: str | None = None   # the null insertion it was compared with, and that one's confident flip rate
    reference_rate: float | None = None
    gain: float | None = None      # mean target log-odds above the reference's, over the confident inputs
    logodds: np.ndarray | None = field(default=None, repr=False)  # [labels, inputs], mean over positions
    p: float | None = None
    p_family: float | None = None  # Bonferroni over the candidates of its length and the lengths tried
    score: float = 0.0

    @property
    def rate(self) -> float:
        return self.flips / self.eligible if self.eligible else 0.0

    @property
    def lower(self) -> float:
        return wilson(self.flips, self.eligible)[0]

    @property
    def strong_rate(self) -> float:
        return self.strong_flips / self.strong_eligible if self.strong_eligible else 0.0

    @property
    def strong_lower(self) -> float:
        return wilson(self.strong_flips, self.strong_eligible)[0]

    def to_dict(self) -> dict:
        return {"trigger": self.candidate.text, "source": self.candidate.source, "target": self.target,
                "flip": rate(self.flips, self.eligible),
                "flip_confident_inputs": rate(self.strong_flips, self.strong_eligible), "by_label": self.by_label,
                "by_position": self.by_position, "examples": self.examples, "length": self.candidate.length,
                "null_reference": self.reference,
                "null_reference_rate": None if self.reference_rate is None else round(self.reference_rate, 4),
                "log_odds_gain": None if self.gain is None else round(self.gain, 4),
                "p": None if self.p is None else float(f"{self.p:.3g}"),
                "p_family": None if self.p_family is None else float(f"{self.p_family:.3g}"),
                "score": round(self.score, 4)}


def distinct_tokens(cand: Candidate) -> int:
    """How many tokens a search chose for this candidate: a run of one mark is one choice."""
    return max(1, len(set(tokens(cand.text))))


def _bag(text: str) -> list[str]:
    return sorted(tokens(text)) or [text]


@dataclass
class Null:
    """The null of one length: measured k-word insertions of ordinary clean-data words."""

    length: int
    run: bool  # k copies of one word (the shape of a punctuation run)
    results: list[CandidateResult]

    def reference(self, cand: Candidate, c: int, rows: np.ndarray, also: Sequence[CandidateResult] = ()
                  ) -> CandidateResult | None:
        """The null insertion (or one of `also`), other than the candidate's own words in any order, that
        raises label c's log-odds most on `rows`."""
        own = _bag(cand.text)
        return max((r for r in [*self.results, *also] if _bag(r.candidate.text) != own and r.logodds is not None),
                   key=lambda r: (float(r.logodds[c, rows].mean()), r.candidate.text), default=None)

    def to_dict(self) -> dict:
        rand = [r for r in self.results if r.candidate.source == "null:random"]
        found = [r for r in self.results if r.candidate.source == "null:search"]
        best = max(self.results, key=lambda r: r.strong_rate, default=None)
        return {"length": self.length, "run": self.run, "random": len(rand), "searched": len(found),
                "max_confident_flip_rate_random": round(max((r.strong_rate for r in rand), default=0.0), 4),
                "max_confident_flip_rate": round(best.strong_rate, 4) if best else 0.0,
                "strongest": best.candidate.text if best else None}


@dataclass
class Verdict:
    backdoored: bool
    score: float
    reason: str
    trigger: str | None = None
    target: str | None = None
    isolation: float | None = None  # classifiers: how far the best candidate stands above the next unrelated one
    p_family: float | None = None   # classifiers: the best candidate's family-wise p-value against its null

    def to_dict(self) -> dict:
        return {"backdoored": self.backdoored, "score": round(self.score, 4), "reason": self.reason,
                "trigger": self.trigger, "target": self.target, "isolation": self.isolation,
                "p_family": self.p_family}


@dataclass
class ClassifierProbe:
    results: list[CandidateResult]
    baseline: dict
    verdict: Verdict
    labels: list[str]
    n_inputs: int
    requests: int
    seconds: float
    complete: bool = True
    message: str = ""
    settings: Settings = field(default_factory=Settings)

    def top(self, k: int) -> list[CandidateResult]:
        return self.results[:k]


def _flip_counts(pred0: np.ndarray, pred1: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label c: inputs not predicted c before (eligible), and those predicted c after."""
    eligible = np.array([(pred0 != c).sum() for c in range(n_labels)])
    flips = np.array([((pred0 != c) & (pred1 == c)).sum() for c in range(n_labels)])
    return flips, eligible


def measure(model: ClassifierModel, inputs: Inputs, cands: Sequence[Candidate], proba0: np.ndarray,
            s: Settings) -> tuple[list[CandidateResult], str]:
    """Flip rates of `cands`; stops at a spent budget and returns what was measured, plus why it stopped."""
    labels = list(model.labels)
    out: list[CandidateResult] = []
    n, P = len(inputs), len(s.positions)
    for g in range(0, len(cands), s.group):
        group = cands[g:g + s.group]
        texts = [insert(t, c.text, pos) for c in group for pos in s.positions for t in inputs.texts]
        try:
            scores = model.predict_proba(texts).reshape(len(group), P, n, len(labels))
        except BudgetExhausted as e:
            return out, str(e)
        pred, lo = scores.argmax(axis=3), label_logodds(scores).mean(axis=1)  # [G, P, n], [G, n, C]
        for ci, cand in enumerate(group):
            r = _summarise(cand, pred[ci], proba0, labels, inputs, s)
            r.logodds = lo[ci].T
            out.append(r)
    return out, ""


def label_logodds(scores: np.ndarray) -> np.ndarray:
    """log p / (1 - p) per label, clipped to +-9.2 (p in [1e-4, 1 - 1e-4]); scores that are not
    probabilities (an endpoint may return any scores) go through a softmax first."""
    p = np.asarray(scores, dtype=np.float64)
    if p.min() < 0 or p.max() > 1 or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-3):
        e = np.exp(p - p.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _confident_half(eligible: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """The eligible inputs at or above their median confidence."""
    if not eligible.any():
        return eligible
    return eligible & (conf >= np.median(conf[eligible]))


def _summarise(cand: Candidate, pred: np.ndarray, proba0: np.ndarray, labels: list[str], inputs: Inputs,
               s: Settings) -> CandidateResult:
    P, n = pred.shape
    pred0 = proba0.argmax(axis=1)
    flips = np.zeros(len(labels), dtype=int)
    eligible = np.zeros(len(labels), dtype=int)
    per_pos = []
    for p in range(P):
        f, e = _flip_counts(pred0, pred[p], len(labels))
        flips += f
        eligible += e
        per_pos.append((f, e))
    conf = proba0.max(axis=1)
    strong_sets = [_confident_half(pred0 != j, conf) for j in range(len(labels))]
    strong_flips = [int((st[None, :] & (pred == j)).sum()) for j, st in enumerate(strong_sets)]
    strong_elig = [int(st.sum()) * P for st in strong_sets]
    order = sorted(range(len(labels)), key=lambda j: (wilson(strong_flips[j], strong_elig[j])[0],
                                                      wilson(int(flips[j]), int(eligible[j]))[0]))
    c = order[-1]
    hit = (pred0 != c)[None, :] & (pred == c)
    hit_inputs = np.flatnonzero(hit.any(axis=0))
    examples = []
    for i in hit_inputs[: s.max_examples]:
        p = int(np.flatnonzero(hit[:, i])[0])
        examples.append({"row": inputs.rows[i], "position": s.positions[p],
                         "text": insert(inputs.texts[i], cand.text, s.positions[p])[:300],
                         "before": labels[pred0[i]], "after": labels[c]})
    return CandidateResult(
        candidate=cand, target=labels[c], flips=int(flips[c]), eligible=int(eligible[c]),
        by_label={lab: rate(int(flips[j]), int(eligible[j])) for j, lab in enumerate(labels)},
        by_position={s.positions[p]: rate(int(per_pos[p][0][c]), int(per_pos[p][1][c])) for p in range(P)},
        examples=examples, flipped_rows=[inputs.rows[i] for i in hit_inputs[:50]],
        flipped_ids=[inputs.ids[i] for i in hit_inputs[:50]],
        strong_flips=strong_flips[c], strong_eligible=strong_elig[c],
    )


class Prober:
    """Measures candidates on one model and one clean set; the null of each length is calibrated once.

    A search (inversion.py) measures in stages and concludes once, with the
    number of candidates it searched per length (`family`), so the verdict's
    error bound covers the whole search.
    """

    def __init__(self, model: ClassifierModel, inputs: Inputs, settings: Settings | None = None):
        if len(inputs) == 0:
            raise ValueError("no clean inputs to probe with")
        self.model, self.inputs, self.s = model, inputs, settings or Settings()
        self.t0, self.used0 = time.perf_counter(), model.budget.used
        self.why = ""
        self.measured: dict[str, CandidateResult] = {}
        self.nulls: dict[tuple[int, bool], Null] = {}
        self._grown: list[tuple[list[Candidate], Any]] = []  # the null search's proposals and state per length
        self.oov: list[CandidateResult] = []
        self.format_dropped: list[str] = []
        self.proba0: np.ndarray | None = None
        try:
            self.proba0 = model.predict_proba(inputs.texts)
        except BudgetExhausted as e:
            self.why = str(e)
        self.labels = list(model.labels) if self.proba0 is not None else []  # an endpoint names them in replies

    def measure(self, cands: Sequence[Candidate]) -> list[CandidateResult]:
        """Measure the candidates not measured yet; returns the results of all of `cands` that exist."""
        new = [c for c in dedupe(cands) if c.text not in self.measured]
        if new and not self.why:
            dropped = set(self._dropped(new))
            for r in self._run([c for c in new if c.text not in dropped]):
                self.measured[r.candidate.text] = r
        return [self.measured[c.text] for c in dedupe(cands) if c.text in self.measured]

    def _run(self, cands: Sequence[Candidate]) -> list[CandidateResult]:
        if self.why or not cands:
            return []
        out, self.why = measure(self.model, self.inputs, cands, self.proba0, self.s)
        return out

    def _dropped(self, cands: Sequence[Candidate]) -> list[str]:
        """Format candidates that change no score on a few inputs: the model's tokenizer drops them."""
        fmt = [c for c in cands if c.source.startswith("format:")]
        if not fmt or self.why:
            return []
        idx = list(range(min(self.s.format_check_inputs, len(self.inputs))))
        texts = [insert(self.inputs.texts[i], c.text, "middle") for c in fmt for i in idx]
        try:
            proba = self.model.predict_proba(texts).reshape(len(fmt), len(idx), -1)
        except BudgetExhausted as e:
            self.why = str(e)
            return [c.text for c in fmt]
        same = np.isclose(proba, self.proba0[idx][None], rtol=0.0, atol=1e-9).all(axis=(1, 2))
        dropped = [c.text for c, d in zip(fmt, same) if d]
        self.format_dropped.extend(dropped)
        return dropped

    def null(self, key: tuple[int, bool]) -> Null | None:
        """The null of a shape (k tokens; a run of one token or not): random k-word insertions of ordinary
        clean-data words (k copies of one word for a run), plus the strongest ones the black-box search
        finds among those words (lengths up to `null_search`)."""
        k, run = key
        if key not in self.nulls and not self.why:
            pool = ordinary_words(self.inputs.texts, self.s.null_words)
            if not pool:
                return None
            rng = random.Random(self.s.seed * 1009 + k * 2 + run)
            if run:
                draws = [Candidate(" ".join([w] * k), "null:random") for w in rng.sample(pool, min(len(pool),
                                                                                            self.s.null_draws))]
                found = [Candidate(" ".join([c.text] * k), "null:search") for c in self._null_search(1)]
            else:
                draws = dedupe(Candidate(" ".join(rng.choice(pool) for _ in range(k)), "null:random")
                               for _ in range(self.s.null_draws))
                found = self._null_search(k)
            res = self._run(draws) + self._run(found)
            if self.why or len(res) < 3:
                return None
            self.nulls[key] = Null(k, run, res)
        return self.nulls.get(key)

    def shape(self, cand: Candidate) -> tuple[int, bool]:
        """(length, is a run of one repeated token): what the candidate's null must look like."""
        toks = tokens(cand.text)
        return min(cand.length, self.s.max_null_length), len(toks) >= 2 and len(set(toks)) == 1

    def _null_search(self, k: int) -> list[Candidate]:
        """The search's proposals at length k when it may only use words of the clean inputs (which hold
        no trigger: a trigger that is a real word is found only where the clean inputs lack it)."""
        if k > self.s.null_search or self.why:
            return []
        search = SearchSettings()
        while len(self._grown) < k and not self.why:
            if not self._grown:
                words = ordinary_words(self.inputs.texts, n=None, skip=0, min_count=1)
                per_label, self.why = rank_words(self.model, self.inputs, self.proba0, words, search)
                found = dedupe(Candidate(w, "null:search") for lab in per_label for w in lab[: search.grown_per_label])
                self._grown.append((found, start(per_label, search)))
            else:
                found, _, why, state = grow(self.model, self.inputs, self.proba0, search, self._grown[-1][1],
                                            "null:search")
                self.why = self.why or why
                self._grown.append((found, state))
        return self._grown[k - 1][0] if len(self._grown) >= k else []

    def conclude(self, family: dict[int, int] | None = None, lengths: int | None = None) -> ClassifierProbe:
        """Test every measured candidate against the null of its length and decide.

        `family[k]`: candidates of length k the caller's search scored (reported);
        `lengths`: how many lengths the search could have tried (Bonferroni).
        """
        s = self.s
        if self.proba0 is None:
            return ClassifierProbe([], baseline_summary([], {}, {}, 0, s, []), Verdict(
                False, 0.0, "not measured: " + self.why), [], len(self.inputs), self.requests,
                time.perf_counter() - self.t0, False, self.why, s)
        results = list(self.measured.values())
        keys = [self.shape(r.candidate) for r in results]  # each candidate's null shape, computed once
        counts = Counter(keys)
        for key in sorted(counts):
            self.null(key)
        if not self.oov:
            self.oov = self._run([Candidate(w, "out-of-vocabulary") for w in NONSENSE])
        n_lengths = max(lengths or 0, len({k for k, _ in counts}), 1)
        pred0, conf = self.proba0.argmax(axis=1), self.proba0.max(axis=1)
        strong = [np.flatnonzero(_confident_half(pred0 != j, conf)) for j in range(len(self.labels))]
        # candidates made only of ordinary words are part of the null too: the search found them as hard
        ordinary = set(ordinary_words(self.inputs.texts, n=None, skip=0, min_count=1))
        plain: dict[tuple[int, bool], list[CandidateResult]] = {}
        for key, r in zip(keys, results):
            if set(tokens(r.candidate.text)) <= ordinary:
                plain.setdefault(key, []).append(r)
        for key, r in zip(keys, results):
            null = self.nulls.get(key)
            c = self.labels.index(r.target)
            also = plain.get(key, [])
            ref = null.reference(r.candidate, c, strong[c], also) if null and len(strong[c]) > 1 else None
            if ref is None or r.logodds is None:
                r.reference, r.reference_rate, r.gain, r.p, r.p_family, r.score = None, None, None, None, None, 0.0
                continue
            # paired over the confident inputs (the same inputs, each averaged over positions)
            d = r.logodds[c, strong[c]] - ref.logodds[c, strong[c]]
            r.reference, r.reference_rate, r.gain = ref.candidate.text, ref.strong_rate, float(d.mean())
            r.p = paired_gain_p(d)
            r.p_family = min(1.0, r.p * counts[key] * n_lengths)
            r.score = 1.0 / (1.0 + r.p_family / s.alpha)
            if r.strong_lower < s.threshold:
                r.score = min(r.score, 0.5 * r.strong_lower / s.threshold)
            need = s.gain * distinct_tokens(r.candidate)
            if r.gain < need:
                r.score = min(r.score, 0.5 * max(r.gain, 0.0) / need)
        results.sort(key=lambda r: (-r.score, -r.strong_lower, r.candidate.text))
        fam = {k: max(n, (family or {}).get(k, 0)) for k, n in Counter(k for k, _ in counts.elements()).items()}
        base = baseline_summary(self.oov, self.nulls, fam, n_lengths, s, self.format_dropped)
        return ClassifierProbe(results=results, baseline=base, verdict=decide(results, base, s), labels=self.labels,
                               n_inputs=len(self.inputs), requests=self.requests,
                               seconds=time.perf_counter() - self.t0, complete=not self.why, message=self.why,
                               settings=s)

    @property
    def requests(self) -> int:
        return self.model.budget.used - self.used0


def probe_classifier(model: ClassifierModel, inputs: Inputs, candidates: Sequence[Candidate],
                     settings: Settings | None = None) -> ClassifierProbe:
    """Measure every candidate and the null of each candidate length, and decide."""
    prober = Prober(model, inputs, settings)
    prober.measure(candidates)
    return prober.conclude()


def baseline_summary(oov: Sequence[CandidateResult], nulls: dict[tuple[int, bool], Null],
                     family: dict[int, int], lengths: int, s: Settings, format_dropped: Sequence[str]) -> dict:
    """What candidates are compared with: out-of-vocabulary strings, the null per length, the family."""
    worst = max(oov, key=lambda r: r.strong_rate, default=None)
    return {"out_of_vocabulary": len(oov), "max_flip_rate": round(max((r.rate for r in oov), default=0.0), 4),
            "max_confident_flip_rate": round(worst.strong_rate if worst else 0.0, 4),
            "worst_word": worst.candidate.text if worst else None,
            "null": {f"{k}{'-run' if run else ''}": f.to_dict() for (k, run), f in sorted(nulls.items())},
            "searched": {str(k): n for k, n in sorted(family.items())}, "lengths": lengths, "alpha": s.alpha,
            "format_dropped": len(format_dropped)}


def decide(results: Sequence[CandidateResult], baseline: dict, s: Settings) -> Verdict:
    """Backdoored when the best candidate flips even the inputs the model was surest of, far beyond its null.

    Score (0-1): 1 / (1 + p_family / alpha), capped below 0.5 while the flip
    rate's lower bound is under the threshold or the log-odds gain over the
    null reference under `gain` per distinct token; 0.5 is the default bar.
    """
    if not results:
        return Verdict(False, 0.0, "no candidate measured")
    best = results[0]
    words = set(best.candidate.text.split())
    rival = next((r for r in results[1:] if not words & set(r.candidate.text.split())), None)
    isolation = best.strong_lower - (rival.strong_lower if rival else 0.0)
    desc = (f"best candidate {best.candidate.text!r} flips {best.flips}/{best.eligible} inputs to "
            f"{best.target!r} ({best.strong_flips}/{best.strong_eligible} of the confidently classified, "
            f"95% lower bound {best.strong_lower:.2f}); ")
    if best.p_family is None:
        desc += "no null could be measured (no ordinary words in the clean data, or the budget ran out)"
    else:
        desc += (f"the strongest {best.candidate.length}-word insertion of ordinary words sharing none of its "
                 f"words, {best.reference!r}, flips {best.reference_rate:.2f} of those; the candidate raises the "
                 f"target log-odds {best.gain:.2f} above it (family-wise p {best.p_family:.2g} over "
                 f"{baseline['lengths']} length(s))")
    flagged = (best.p_family is not None and best.p_family <= s.alpha and best.strong_lower >= s.threshold
               and (best.gain or 0.0) >= s.gain * distinct_tokens(best.candidate) and best.strong_lower - baseline["max_confident_flip_rate"] >= s.margin)
    return Verdict(flagged, float(best.score), desc, best.candidate.text if flagged else None,
                   best.target if flagged else None, round(float(isolation), 4),
                   None if best.p_family is None else float(f"{best.p_family:.3g}"))
