"""Detector fusion: one 0-1 suspicion score per row, one threshold for the user.

Every detector's row score follows one convention: 0.5 is the detector's own
family-wise bar over the dataset's n rows (`_repr.familywise`; the lexical
built-ins put 0.5 at their Bonferroni / severity bar). Fusion inverts that map
into per-row significance, e = -log10 p (p: the row's own, not family-wise,
p-value), and keeps only calibrated evidence:

- detectors whose row score is a real per-row probability of a label being
  wrong (`RANKED`: label-consistency's out-of-fold p(label), feature-collision's
  neighbourhood vote) contribute e at every level, so the fused ranking below
  the bar is theirs;
- every other detector contributes e only where its own test fired (score >=
  0.5) and 0 elsewhere: a sub-bar keyword-influence 0.45 or a cluster's 0.2 is
  not evidence and must not outrank a row that label-consistency doubts.

    E     = max_d w_d * e_d
    fused = (1 - 10^-E)^n   (+ 1e-3 * (1 - 10^-E), so the ranking survives far below the bar)

so fused = 0.5 exactly where some detector stands at its own bar, and a user
moves one threshold for all of them. Max, not Fisher's sum: the detectors
look at different attacks, and summing the noise of six detectors that see
nothing buries the one that does (measured with the representation benchmark).
A detector above its bar on more than half of the rows is left out (its
evidence describes the dataset's structure; poison is a minority).
`explain` / `attribution` say which detector carries each row's score.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from trainguard.detectors._repr import _MIX
from trainguard.errors import ConfigError
from trainguard.findings import ATLAS_POISON_TRAINING_DATA, Confidence, Finding, Severity

DEFAULT_THRESHOLD = 0.5
MAX_FLAGGED_SHARE = 0.5  # a detector over its bar on more rows than this describes the data, not a poison
RANKED = frozenset({"label-consistency", "feature-collision"})
DEFAULT_WEIGHTS: dict[str, float] = {}


def significance(scores: np.ndarray, n: int) -> np.ndarray:
    """Per-row -log10 p that `_repr.familywise(z, n)` maps to `scores` (inverted by bisection, vectorised)."""
    s = np.nan_to_num(np.clip(np.asarray(scores, np.float64), 0.0, 1.0))
    lo = np.full(s.shape, -300.0)  # log10 p bounds
    hi = np.zeros(s.shape)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        p = 10.0 ** mid
        f = (1 - _MIX) * np.exp(n * np.log1p(-np.minimum(p, 1 - 1e-16))) + _MIX * (1 - p)
        above = f > s  # p too small for this score: the answer lies at larger p
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return -0.5 * (lo + hi)


def _score_of(E: np.ndarray, n: int) -> np.ndarray:
    p = np.clip(10.0 ** -E, 0.0, 1.0)
    return np.clip((1 - _MIX) * np.exp(n * np.log1p(-np.minimum(p, 1 - 1e-16))) + _MIX * (1 - p), 0.0, 1.0)


def evidence(row_scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None,
             ranked: frozenset[str] = RANKED, threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Per detector, the calibrated per-row evidence (-log10 p) fusion uses; 0 where it does not count."""
    if not row_scores:
        raise ConfigError("fusion needs at least one detector's row scores")
    sizes = {len(v) for v in row_scores.values()}
    if len(sizes) != 1:
        raise ConfigError(f"row score arrays differ in length: {sorted(sizes)}")
    n = sizes.pop()
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    out = {}
    for name, s in row_scores.items():
        s = np.nan_to_num(np.clip(np.asarray(s, np.float64), 0, 1))
        e = significance(s, n)
        if name not in ranked:
            e = np.where(s >= threshold, e, 0.0)
        if np.mean(s >= threshold) > MAX_FLAGGED_SHARE:
            # Poison is a minority of rows by definition: trigger-association over MedQuAD's question
            # templates puts 14,380 of 16,406 clean rows over its bar. Such a detector adds no evidence.
            e = np.zeros(n)
        out[name] = float(np.clip(w.get(name, 1.0), 0, 1)) * e
    return out


def fuse(row_scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None,
         ranked: frozenset[str] = RANKED, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Fused 0-1 row scores: the strongest calibrated evidence, back on the familywise scale (0.5 = a bar)."""
    if not 0 < threshold < 1:
        raise ConfigError(f"fusion threshold must be in (0, 1), got {threshold}")
    ev = evidence(row_scores, weights, ranked, threshold)
    n = len(next(iter(ev.values())))
    return _score_of(np.max(np.stack(list(ev.values())), 0), n)


def fuse_report(report, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Fused row scores of a `Report` (its `row_scores` dict, one array per detector that ran)."""
    return fuse(report.row_scores, weights)


def attribution(row_scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> list[str]:
    """Per row, the detector whose evidence sets its fused score ('' where none contributes)."""
    ev = evidence(row_scores, weights)
    names = list(ev)
    E = np.stack([ev[k] for k in names])
    best = E.argmax(0)
    return [names[b] if E[b, i] > 0 else "" for i, b in enumerate(best)]


def explain(row_scores: Mapping[str, np.ndarray], row: int, min_score: float = 0.05) -> dict[str, float]:
    """Which detectors scored one row, and how high, strongest first."""
    parts = {k: float(v[row]) for k, v in row_scores.items() if float(v[row]) >= min_score}
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def flagged(fused: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    return np.flatnonzero(fused >= threshold)


def fused_finding(row_scores: Mapping[str, np.ndarray], rows: list[int], record_ids: list[str],
                  threshold: float = DEFAULT_THRESHOLD,
                  max_examples: int = 50,
                  lines: list[int | None] | None = None) -> tuple[Finding | None, np.ndarray | None]:
    """One finding for the rows whose fused score reaches `threshold`, each with the detector that carries it.

    Built by the engine from every record's file row, id and source line (`lines`), like any stamped finding.

    None when fewer than two detectors scored rows (nothing to fuse) or no row reaches it.
    """
    if not 0 < threshold < 1:
        raise ConfigError(f"fusion threshold must be in (0, 1), got {threshold}")
    scores = {k: v for k, v in row_scores.items() if v is not None and len(v) == len(rows)}
    if len(scores) < 2:
        return None, None
    fused = fuse(scores)
    hit = flagged(fused, threshold)
    if not len(hit):
        return None, fused
    who = attribution(scores)
    order = hit[np.argsort(-fused[hit], kind="stable")]
    by_detector: dict[str, int] = {}
    for i in hit:
        by_detector[who[i] or "none"] = by_detector.get(who[i] or "none", 0) + 1
    keep = np.sort(hit)
    finding = Finding(
        detector="fusion", rule="combined-evidence", detector_version="1",
        title=f"{len(hit)} rows at or above the fused threshold {threshold:g} "
              f"(carried by {', '.join(f'{k} {v}' for k, v in sorted(by_detector.items(), key=lambda kv: -kv[1]))})",
        rows=tuple(int(rows[i]) for i in keep), record_ids=tuple(record_ids[i] for i in keep),
        lines=tuple(lines[i] for i in keep) if lines and any(x is not None for x in lines) else (),
        score=float(fused[hit].max()), severity=Severity.MEDIUM, confidence=Confidence.MEDIUM,
        atlas=(ATLAS_POISON_TRAINING_DATA,),
        evidence={"threshold": threshold, "by_detector": by_detector,
                  "top": [{"row": int(rows[i]), "fused": round(float(fused[i]), 4), "detector": who[i],
                           "scores": {k: round(v, 4) for k, v in explain(scores, int(i)).items()}}
                          for i in order[:max_examples]]},
    )
    return finding, fused
